"""Chaos benchmark: every stage of a ``streamrl dev`` run SIGKILLed once and kept down for an outage,
with what each recovery took and the counts on the topics afterwards.

    .venv/bin/python -m bench.chaos [--outage-s 30] [--tasks 256] [--workers 2] [--stages ...]

The CPU demo (``configs/demo.yaml``: max-digit task, tiny char model) with groups of
``--group-size`` and batches of ``--batch-groups`` groups, one epoch of ``--tasks`` tasks, stale
rows weighted (``rl.staleness_policy: weight``), as ``streamrl dev`` with ``--workers`` workers
against a broker of its own (``$STREAMRL_BOOTSTRAP_SERVERS`` if set, else a local Apache Kafka on
free ports). ``dev.restart.backoff_s`` is ``--outage-s``: a killed stage stays down that long
before ``dev`` restarts it. Once the first policy version is checkpointed, each stage of
``--stages`` (default: worker-0, sampler, streams, trainer, inference) is SIGKILLed in turn, the next
one once the previous one is back and the trainer checkpointed a newer version. Printed per stage
(seconds since its kill): restarted, serving (inference: its ``/health`` answered, with the version
it loaded before binding its port), next version; and "resumed", the next version's seconds after
the stage's return. After the epoch: the accounts of every train rollout (tests.support.chaos:
emitted, trained by the trainer, batched by streams, dropped, dead-lettered, and any problem:
lost, trained twice, dead-lettered for an infrastructure failure). Also the machine's load average
(the machine may be shared: seconds are wall-clock).

Exit status 1 when the accounts show a problem or the run failed; the seconds are figures, not checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from streamrl.config import load_settings
from tests.support.chaos import (
    Recovery,
    account,
    dev_environment,
    interrupt_dev,
    kill_and_recover,
    newest_step,
)

REPO = Path(__file__).resolve().parents[1]
STAGES = ("worker-0", "sampler", "streams", "trainer", "inference")


def chaos_config(tmp: Path, args: argparse.Namespace) -> Path:
    """The demo config as one epoch of ``args.tasks`` tasks, restarts delayed by ``args.outage_s``."""
    config = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    config["rl"].update(
        group_size=args.group_size, train_batch_size=args.batch_groups, staleness_policy="weight"
    )
    dev = config["dev"]
    dev.update(
        run_root=str(tmp / "runs"),
        run_id="chaos",
        workers=args.workers,
        max_steps=None,
        datasets=[
            {"path": str(REPO / "examples/max_digit/data/train.jsonl"), "split": "train", "limit": args.tasks}
        ],
        drain_s=30,
        timeout_s=3600,
        display="plain",
        plain_every_s=30,
        restart={"backoff_s": args.outage_s, "backoff_max_s": max(args.outage_s, 1.0)},
    )
    dev["model"]["path"] = str(REPO / dev["model"]["path"])
    config["trainer"]["max_steps"] = 10**9
    config["sampler"].update(max_epochs=1, val_at_start=False, val_every=0)
    config["streams"].update(batch_timeout_s=10.0)
    path = tmp / "chaos.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outage-s", type=float, default=30.0, help="seconds a killed stage stays down")
    ap.add_argument("--tasks", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--batch-groups", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=list(STAGES))
    ap.add_argument("--out", type=Path, default=None, help="write the figures here (JSON)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    env, broker = dev_environment(tmp)
    run_dir = tmp / "runs" / "chaos"
    log_path = tmp / "dev.log"
    load0 = os.getloadavg()[0]
    print(
        f"chaos: {args.tasks} tasks x {args.group_size}, outage {args.outage_s:g} s, load average {load0:.1f}"
    )
    recoveries: list[Recovery] = []
    failed = ""
    with log_path.open("w") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "streamrl.cli", "dev", "--config", str(chaos_config(tmp, args))],
            cwd=REPO, env={**env, "STREAMRL_BOOTSTRAP_SERVERS": env["STREAMRL_BOOTSTRAP_SERVERS"]},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            while newest_step(run_dir) < 1:
                if dev.poll() is not None:
                    raise AssertionError("streamrl dev exited before the first checkpoint")
                time.sleep(0.5)  # polling the run directory
            for stage in args.stages:
                r = kill_and_recover(
                    run_dir, stage, lambda: dev.poll() is None, timeout_s=args.outage_s + 600
                )
                recoveries.append(r)
                serving = "" if r.serving_s is None else f", serving v{r.serving_version} at {r.serving_s} s"
                print(
                    f"{stage:<10} killed at v{r.version}: restarted {r.restarted_s} s{serving}, "
                    f"next version {r.next_version_s} s (resumed {r.resumed_after_return_s} s after its return)",
                    flush=True,
                )
            dev.wait(timeout=3600)
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            failed = str(exc)
        finally:
            interrupt_dev(dev)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    problems: list[str] = []
    counts: dict[str, object] = {}
    if not failed:
        acc = account(
            load_settings(
                run_dir / "config.yaml", kafka={"bootstrap_servers": env["STREAMRL_BOOTSTRAP_SERVERS"]}
            )
        )
        problems, counts = acc.problems(), acc.summary()
    if broker is not None:
        broker.stop()
    print(
        f"\noutcome {summary.get('outcome', '?')!r}, restarts {summary.get('restarts')}, "
        f"wall {summary.get('wall_s', '?')} s, load average {os.getloadavg()[0]:.1f} at end"
    )
    print(f"accounts: {counts}")
    for line in problems or (
        [failed] if failed else ["no rollout lost, trained twice or dead-lettered for an outage"]
    ):
        print(f"  {line}")
    if failed:
        print("\n".join(log_path.read_text().splitlines()[-40:]))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "recoveries": [
                        {**vars(r), "resumed_after_return_s": r.resumed_after_return_s} for r in recoveries
                    ],
                    "accounts": counts,
                    "problems": problems,
                    "summary": summary,
                    "load_average": [load0, os.getloadavg()[0]],
                },
                indent=1,
            )
        )
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed or problems or not str(summary.get("outcome", "")).startswith("completed") else 0


if __name__ == "__main__":
    sys.exit(main())
