"""Soak benchmark: the resident memory (RSS) of every stage over a long ``streamrl dev`` run, per minute.

    .venv/bin/python -m bench.soak [--minutes 30] [--workers 4] [--warmup-minutes 5] [--out FILE.json]
        [--set streams.dedup_retention_s=300 ...]

Runs the CPU demo (``configs/demo.yaml``: max-digit task, tiny char model, GRPO 16 prompts x 8) as
``streamrl dev`` with ``--workers`` worker processes, no step limit and endless epochs, against a
broker of its own (``$STREAMRL_BOOTSTRAP_SERVERS`` if set, else a local Apache Kafka on free ports
with its data in a temporary directory). Every ``--every-s`` seconds (default 60) it reads
``VmRSS`` from ``/proc/<pid>/status`` of each child (found by the run's config path in its command
line; a restarted child is followed by its new pid), and of ``dev`` itself, and prints one line per reading. After
``--minutes`` it stops the run with SIGINT (as Ctrl-C would), then prints per stage: RSS at the
end of warm-up, at the end, and the spread after warm-up = (max − min) / min over the readings
from ``--warmup-minutes`` on; a stage is *flat* when that spread is at most ``--flat-pct`` (10 %).
Also printed: policy versions and rollouts reached (the run's ``summary.json``), every dead letter
(where it came from and why), the restarts, and
the machine's load average at start and end (the machine may be shared: the figures are memory,
not speed). Writes every reading to ``--out`` (JSON) when given.

Linux only (``/proc``). Exit status 0 whatever the figures (a benchmark, not a test) unless the run
itself failed to start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.chaos import dev_children, dev_environment, interrupt_dev

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (``VmRSS`` of ``/proc/<pid>/status``), None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def soak_config(tmp: Path, workers: int, minutes: float, sets: list[str] = ()) -> Path:
    """The demo config with ``workers`` workers, no step limit, endless epochs, its run under ``tmp``,
    and each ``KEY=VALUE`` of ``sets`` (a dotted key path, a YAML value) applied last."""
    config = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    dev = config["dev"]
    dev.update(
        run_root=str(tmp / "runs"),
        run_id="soak",
        workers=workers,
        max_steps=10**9,
        stop_at_val_target=False,  # the demo ends at its val target; a soak runs its whole length
        timeout_s=minutes * 60 + 900,
        display="plain",
        plain_every_s=60,
    )
    dev["model"]["path"] = str(REPO / dev["model"]["path"])
    for ds in dev["datasets"]:
        ds["path"] = str(REPO / ds["path"])
    config["trainer"]["max_steps"] = 10**9
    config.setdefault("sampler", {})["max_epochs"] = None
    for item in sets:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    path = tmp / "soak.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def flatness(series: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """Figures of one stage's ``[(t_s, rss_mb)]`` after ``warmup_s``: first, last, min, max, spread %."""
    after = [mb for t, mb in series if t >= warmup_s]
    if not after:
        return {"readings": 0}
    lo, hi = min(after), max(after)
    return {
        "readings": len(after),
        "at_warmup_mb": round(after[0], 1),
        "end_mb": round(after[-1], 1),
        "min_mb": round(lo, 1),
        "max_mb": round(hi, 1),
        "spread_pct": round(100 * (hi - lo) / lo, 1),
    }


def dead_letters(run_config: Path, env: dict[str, str]) -> list[str]:
    """Every record on the run's dead-letter topic, one line each: where it came from, the stage and
    the reason (empty when the run never wrote its config). ``env``: the run's environment (its
    ``STREAMRL_BOOTSTRAP_SERVERS``)."""
    if not run_config.is_file():
        return []
    os.environ.update({k: v for k, v in env.items() if k.startswith("STREAMRL_")})
    from streamrl.config import load_settings
    from streamrl.schemas import DeadLetter
    from tests.support.kafka import read_topic

    try:
        records = read_topic(load_settings(run_config), "dlq", DeadLetter, timeout_s=30.0)
    except Exception as exc:  # a benchmark reports what it could not read; it does not fail on it
        return [f"(the dlq topic could not be read: {exc!r})"]
    return [
        f"{d.original_topic}[{d.original_partition}]@{d.original_offset} {d.stage} {d.error_type}: {d.reason}"
        for d in records
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="run length (default 30)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--warmup-minutes", type=float, default=5.0)
    ap.add_argument("--every-s", type=float, default=60.0, help="seconds between readings")
    ap.add_argument("--flat-pct", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=None, help="write the readings here (JSON)")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config value over the demo's, e.g. streams.dedup_retention_s=300 (repeatable)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    env, broker = dev_environment(tmp)
    config = soak_config(tmp, args.workers, args.minutes, args.sets)
    run_config = tmp / "runs" / "soak" / "config.yaml"  # what dev starts every child with
    log_path = tmp / "dev.log"
    load0 = os.getloadavg()
    print(
        f"soak: {args.minutes:g} min, {args.workers} workers, load average {load0[0]:.1f} at start; log {log_path}"
    )
    series: dict[str, list[tuple[float, float]]] = {}
    pids: dict[str, list[int]] = {}
    with log_path.open("w") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "streamrl.cli", "dev", "--config", str(config)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        t0 = time.monotonic()
        try:
            next_at = 0.0
            while (now := time.monotonic() - t0) < args.minutes * 60:
                if dev.poll() is not None:
                    print(f"streamrl dev exited early with code {dev.returncode}; log tail:")
                    print("\n".join(log_path.read_text().splitlines()[-40:]))
                    return 1
                if now >= next_at:
                    children = {**dev_children(run_config), "dev": dev.pid}
                    line = []
                    for name, pid in sorted(children.items()):
                        mb = rss_mb(pid)
                        if mb is None:
                            continue
                        series.setdefault(name, []).append((now, mb))
                        if pid not in pids.setdefault(name, []):
                            pids[name].append(pid)
                        line.append(f"{name} {mb:.0f}")
                    print(f"t={now / 60:5.1f} min  RSS MB: " + ", ".join(line), flush=True)
                    next_at += args.every_s
                time.sleep(1.0)  # the reading period is long; a second's granularity is plenty
        finally:
            interrupt_dev(dev)
            dead = dead_letters(run_config, env)
            if broker is not None:
                broker.stop()
    load1 = os.getloadavg()
    summary_path = tmp / "runs" / "soak" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    figures = {name: flatness(s, args.warmup_minutes * 60) for name, s in sorted(series.items())}
    print(
        f"\nafter {args.minutes:g} min (warm-up {args.warmup_minutes:g} min), load average {load1[0]:.1f} at end"
    )
    print(f"{'stage':<11} {'warm-up MB':>10} {'end MB':>8} {'min':>7} {'max':>7} {'spread':>7}  flat")
    for name, f in figures.items():
        if not f.get("readings"):
            print(f"{name:<11} (no reading after warm-up)")
            continue
        flat = f["spread_pct"] <= args.flat_pct
        f["flat"] = flat
        print(
            f"{name:<11} {f['at_warmup_mb']:>10.1f} {f['end_mb']:>8.1f} {f['min_mb']:>7.1f} {f['max_mb']:>7.1f}"
            f" {f['spread_pct']:>6.1f}%  {'yes' if flat else 'NO'}"
        )
    restarted = {name: len(p) - 1 for name, p in pids.items() if len(p) > 1}
    print(
        f"versions {summary.get('versions', summary.get('policy_version', '?'))}, "
        f"rollouts {summary.get('rollouts', '?')}, dead letters {summary.get('dlq', '?')}, outcome {summary.get('outcome', '?')!r}, "
        f"restarts {restarted or 'none'}"
    )
    for line in dead[:20]:
        print(f"  dead letter: {line}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "minutes": args.minutes,
                    "workers": args.workers,
                    "sets": args.sets,
                    "warmup_minutes": args.warmup_minutes,
                    "load_average": [load0[0], load1[0]],
                    "figures": figures,
                    "series": series,
                    "summary": summary,
                    "dead_letters": dead,
                },
                indent=1,
            )
        )
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
