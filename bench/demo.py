"""The demo through the whole pipeline: wall time to the val target, seconds per policy version, CPU ms per rollout.

    .venv/bin/python -m bench.demo [--seeds 0,1,2] [--target 0.9] [--max-steps 200] [--no-stop] \
        [--set section.key=value ...]

For each seed, ``streamrl dev`` runs ``configs/demo.yaml`` (the config ``make demo`` embeds) with
``rl.seed`` set, its own local broker (a temporary data directory, free ports), ``dev.val_target``
and, unless ``--no-stop``, ``dev.stop_at_val_target`` (the run ends at the first complete
validation at or above the target). From the run's ``summary.json`` it prints: the version and the
wall seconds (start-up included) at which val first reached the target, the val curve with distinct
greedy answers, seconds per policy version and CPU ms per rollout of each process (training phase:
from the first checkpoint on; ``dev`` reads ``/proc`` of every child, the broker and itself), and the
1-minute load average before and after. Wall time depends on what else runs on the machine; CPU per
rollout hardly does. dev's output is kept as ``<run dir>/dev-output.log``. Writes ``bench/results/demo-<UTC time>.json``. Asserts nothing.

Start-up breakdown (seconds from dev's start, per seed): dev's milestones (``summary.json``
``startup_s``: broker answering, topics and model ready, datasets published, inference answering,
sampler started, first trajectory, first checkpoint), the v0 validation complete, and for each stage
when dev started it and when its log says it is ready (inference serving, trainer consuming
``batches``, Faust worker ready, worker assigned its partitions, sampler recovered).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"


#: Stage log → the line that says it is ready to work.
READY = {
    "inference": r"serving .* at policy version",
    "trainer": r"consuming .*batches partitions",
    "streams": r"\[\^Worker\]: Ready",
    "worker-0": r"consumer_loop: assigned \[",
    "sampler": r"sampler recovered",
}
_STAMP = re.compile(r"^\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
_STARTED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO streamrl\.dev\.supervisor: started (\S+) \(pid"
)


def _unix(stamp: str) -> float:
    """A log line's local time (``2026-12-03 22:14:02,978``) as Unix seconds."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def startup_breakdown(summary: dict, run_dir: Path, dev_log: Path) -> dict[str, float]:
    """Start-up milestones of one run, seconds from dev's start, in time order (see the module docstring).

    Keys: dev's ``startup_s`` milestones, ``v0 val complete``, ``<stage> started`` (dev's
    ``started <stage>`` line) and ``<stage> ready`` (the stage's :data:`READY` line); a milestone
    its log lacks is left out.
    """
    out = dict(summary.get("startup_s") or {})
    v0 = (summary.get("val_wall_s") or {}).get("0")
    if v0 is not None:
        out["v0 val complete"] = v0
    t0 = summary.get("started_unix")
    if t0 is None:
        return out
    if dev_log.exists():
        for line in dev_log.read_text(errors="replace").splitlines():
            m = _STARTED.match(line)
            if m:
                out.setdefault(f"{m.group(2)} started", round(_unix(m.group(1)) - t0, 1))
    for stage, pattern in READY.items():
        path = run_dir / "logs" / f"{stage}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = _STAMP.match(line)
            if m and re.search(pattern, line):
                out[f"{stage} ready"] = round(_unix(m.group(1)) - t0, 1)
                break
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return base


def run_seed(seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    """One ``streamrl dev`` run of the demo config with ``rl.seed = seed``; returns its figures."""
    from streamrl.dev.rundir import free_port

    run_id = f"bench-demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-s{seed}"
    cfg = _merge(
        yaml.safe_load(CONFIG.read_text()),
        {
            "rl": {"seed": seed},
            "kafka": {"local": {"port": free_port(), "controller_port": free_port()}},
            "dev": {
                "run_id": run_id,
                "run_root": str(args.run_root),
                "broker_data_dir": str(tmp / f"kafka-{seed}"),
                "display": "plain",
                "val_target": args.target,
                "stop_at_val_target": not args.no_stop,
                **({"max_steps": args.max_steps} if args.max_steps else {}),
            },
            **({"trainer": {"max_steps": args.max_steps}} if args.max_steps else {}),
        },
    )
    for key, value in args.set:  # --set section.key=value overrides, after the bench's own
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path = tmp / f"demo-{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"seed {seed}: streamrl dev -c {path} (output: {tmp / f'dev-{seed}.log'})", flush=True)
    load0 = os.getloadavg()[0]
    launched = time.time()
    t0 = time.monotonic()
    streamrl = Path(sys.executable).with_name("streamrl")
    log = tmp / f"dev-{seed}.log"  # dev's own output (progress lines, the final summary)
    with log.open("w") as out:
        proc = subprocess.run(
            [str(streamrl), "dev", "-c", str(path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.monotonic() - t0
    load1 = os.getloadavg()[0]
    summary_path = Path(args.run_root if args.run_root.is_absolute() else REPO / args.run_root) / run_id
    if summary_path.is_dir():
        shutil.copy(log, summary_path / "dev-output.log")
    summary_path = summary_path / "summary.json"
    if not summary_path.exists():
        sys.stderr.write(log.read_text()[-8000:])
        return {"seed": seed, "exit_code": proc.returncode, "error": "no summary.json", "wall_s": wall}
    s = json.loads(summary_path.read_text())
    training = (s.get("cpu") or {}).get("training") or {}
    val = {int(v): r for v, r in (s.get("val_reward") or {}).items()}
    return {
        "seed": seed,
        "exit_code": proc.returncode,
        "outcome": s.get("outcome"),
        "wall_s": round(wall, 1),
        "load_avg_1m": [round(load0, 2), round(load1, 2)],
        "target": args.target,
        "reached": s.get("val_target_reached"),
        "val": dict(sorted(val.items())),
        "val_wall_s": s.get("val_wall_s"),
        "distinct_last": s.get("distinct_answers_last"),
        "versions": s.get("versions"),
        "rollouts": s.get("rollouts"),
        "dlq": s.get("dlq"),
        "s_per_version": training.get("s_per_version"),
        "cpu_ms_per_rollout": training.get("cpu_ms_per_rollout"),
        "training": training,
        "run_dir": s.get("run_dir"),
        "startup_s": startup_breakdown(s, summary_path.parent, log),
        # the `streamrl dev` process's own start (Python, the CLI's imports) before dev's clock starts
        "dev_start_after_launch_s": round(s["started_unix"] - launched, 1) if s.get("started_unix") else None,
    }


def _line(r: dict) -> str:
    if "error" in r:
        return f"seed {r['seed']}: {r['error']} (exit {r['exit_code']})"
    reached = r["reached"]
    lag = r.get("dev_start_after_launch_s")
    head = (
        f"seed {r['seed']}: val >= {r['target']} at version {reached['version']}, {reached['wall_s']} s"
        + (
            f" after dev's start ({reached['wall_s'] + lag:.1f} s after launching it)"
            if lag is not None and reached["wall_s"] is not None
            else ""
        )
        if reached
        else f"seed {r['seed']}: val {r['target']} not reached ({r['versions']} versions)"
    )
    per = r.get("cpu_ms_per_rollout") or {}
    stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if k != "total")
    curve = " ".join(f"{v}:{a:.2f}" for v, a in r["val"].items())
    return (
        f"{head}; run {r['wall_s']} s wall, load {r['load_avg_1m'][0]} -> {r['load_avg_1m'][1]}; "
        f"{r['s_per_version']} s/version; {r['rollouts']} rollouts, dlq {r['dlq']}; "
        f"distinct answers at the end {r['distinct_last']}\n"
        f"  val {curve}\n"
        f"  CPU ms/rollout {per.get('total', float('nan')):.2f} ({stages})\n"
        f"  start-up (s from dev's start) " + ", ".join(f"{k} {v}" for k, v in r["startup_s"].items())
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0", help="comma-separated rl.seed values, one run each")
    ap.add_argument("--target", type=float, default=0.9, help="dev.val_target")
    ap.add_argument("--max-steps", type=int, default=None, help="dev/trainer max_steps (default: the demo's)")
    ap.add_argument(
        "--no-stop", action="store_true", help="run to max_steps instead of stopping at the target"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=lambda kv: tuple(kv.split("=", 1)),
        help="override a config key of the demo, e.g. trainer.lr=1e-3 (YAML value; repeatable)",
    )
    ap.add_argument("--run-root", type=Path, default=Path("runs"))
    ap.add_argument(
        "--out", type=Path, default=None, help="results JSON (default bench/results/demo-<time>.json)"
    )
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        for seed in (int(x) for x in args.seeds.split(",")):
            r = run_seed(seed, args, Path(tmp))
            results.append(r)
            print(_line(r), flush=True)
    out = args.out or REPO / "bench" / "results" / f"demo-{datetime.now(timezone.utc):%Y-%m-%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results}, indent=1)
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
