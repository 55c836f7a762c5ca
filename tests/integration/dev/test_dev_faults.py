"""Faults under a real ``streamrl dev`` run, every stage its own process, checked by the counts on
the topics (tests.support.chaos.account): every train rollout the sampler emitted was trained
exactly once (streams batched it once and the trainer's ``consumed_rollouts`` equals what streams
batched), or dropped by streams with a reason, or dead-lettered for a reason of the task's own;
none was lost and none was dead-lettered for an infrastructure failure.

- A three-broker cluster (replication factor 3, ``min.insync.replicas`` 2, ``acks=all``): one broker
  is SIGKILLed mid-run and stays down; the run completes its epoch on the other two.
- Chaos: each stage (a worker, the sampler, streams, the trainer, the inference server) is SIGKILLed
  once, the next one after the previous one came back and the trainer published a newer version;
  ``streamrl dev`` restarts each (its restart policy) and the run completes its epoch.

The seconds each recovery took (kill -> the next policy version) are printed, not asserted: the
machine is shared. ``bench/chaos.py`` runs the same with longer outages and prints the figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from streamrl.config import load_settings
from tests.support.chaos import account, finish_dev, kill_and_recover, newest_step, start_dev

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait(proc: subprocess.Popen[str], what: str, done, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"streamrl dev ended before {what}:\n{proc.communicate()[0][-5000:]}")
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)  # polling the run directory and the process table


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny char model both runs use (built once: ~50 s on the loaded machine)."""
    from streamrl.inference.model_builder import build_model

    path = tmp_path_factory.mktemp("model")
    build_model(path, preset="tiny", tokenizer="char", max_chars=20_000)
    return path


def _one_epoch(tasks: int, model: Path, epochs: int = 1) -> dict:
    """Config sections of a run that ends by itself: ``epochs`` passes over ``tasks`` max-digit tasks
    (``tasks × epochs / 2`` policy versions)."""
    return {
        # stale rows are weighted, not dropped: a batch all stale after a slow recovery would be
        # dead-lettered by the trainer (empty after filtering), by design, not by a fault
        "rl": {"group_size": 2, "train_batch_size": 2, "max_staleness": 1, "staleness_policy": "weight"},
        # the shortest fence session: a restarted sampler waits out its killed predecessor's
        "sampler": {"max_epochs": epochs, "fence_session_timeout_s": 6.0, "fence_timeout_s": 15.0},
        "streams": {"batch_timeout_s": 5.0, "filter_zero_variance": False},
        "trainer": {"save_every": 1, "keep_last": 2},
        "dev": {
            "datasets": [
                {"path": str(ROOT / "examples/max_digit/data/train.jsonl"), "split": "train", "limit": tasks}
            ],
            "model": {"path": str(model), "tokenizer": "char", "build": False},
            "drain_s": 10,  # past streams.batch_timeout_s: the last partial batch is trained
            "timeout_s": 900,
            "restart": {"backoff_s": 0.5},
        },
    }


def _check_counts(run_dir: Path, tasks: int, bootstrap: str, epochs: int = 1) -> dict:
    settings = load_settings(run_dir / "config.yaml", kafka={"bootstrap_servers": bootstrap})
    acc = account(settings)
    print("accounts:", acc.summary())
    assert acc.problems() == [], acc.summary()
    assert len(acc.emitted) == tasks * 2 * epochs  # every task of each epoch, every member of its group
    return acc.summary()


def _stop_all(nodes) -> None:
    threads = [threading.Thread(target=n.stop, kwargs={"timeout_s": 10}) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.timeout(1000)
def test_a_three_broker_cluster_loses_nothing_when_a_broker_dies(
    dev_config, processes_mentioning, model_dir: Path, tmp_path: Path
) -> None:
    from tests.support.kafka import start_local_cluster

    nodes = start_local_cluster(tmp_path / "cluster")
    try:
        bootstrap = ",".join(n.bootstrap for n in nodes)
        tasks = 8
        sections = _one_epoch(tasks, model_dir)
        config, env = dev_config(
            **sections, topics={"replication_factor": 3}, kafka={"bootstrap_servers": bootstrap}
        )
        env["STREAMRL_BOOTSTRAP_SERVERS"] = bootstrap
        proc = start_dev(config, env)
        run_dir = tmp_path / "runs" / "r"
        _wait(proc, "the first checkpoint", lambda: newest_step(run_dir) >= 1, 300)
        victim = nodes[1]
        killed_at, version_at_kill = time.monotonic(), newest_step(run_dir)
        os.kill(victim.pid(), signal.SIGKILL)
        _wait(proc, "a version after the broker's death", lambda: newest_step(run_dir) > version_at_kill, 240)
        print(
            f"broker 2 killed at v{version_at_kill}; v{newest_step(run_dir)} {time.monotonic() - killed_at:.1f} s later"
        )
        out = finish_dev(proc, 900)
        assert proc.returncode == 0, out[-5000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["outcome"].startswith("completed: the sampler finished"), out[-5000:]
        live = ",".join(n.bootstrap for n in nodes if n is not victim)
        print("restarts:", summary["restarts"])  # the sampler's fence may pass its session timeout
        _check_counts(run_dir, tasks, live)
        assert processes_mentioning(str(run_dir / "config.yaml")) == []
    finally:
        _stop_all(nodes)


@pytest.mark.timeout(1000)
def test_chaos_each_stage_killed_once_trains_every_sample_once(
    dev_config, processes_mentioning, model_dir: Path, tmp_path: Path
) -> None:
    """Each kill waits for the previous stage's restart and a newer version (events, not time). A
    killed stage is on the run's one path (one worker), so while it is down the run goes on by at
    most the in-flight bound (2 versions) and ~2 more until the next kill: at most ~4 versions per
    fault, ~21 for the five with the first checkpoint (at load ~6 they were killed at v1-v5). One
    epoch of 32 tasks (16 versions) ended before the first fault on a quiet machine (~3 versions/s,
    the first kill late by ~10 versions); three (48 versions) leave twice what the faults use, so
    every kill lands mid-run on a fast or a slow machine (~3 min at load ~6; two epochs: 2.7 min)."""
    tasks, epochs = 32, 3
    config, env = dev_config(**_one_epoch(tasks, model_dir, epochs))
    proc = start_dev(config, env)
    run_dir = tmp_path / "runs" / "r"
    _wait(proc, "the first checkpoint", lambda: newest_step(run_dir) >= 1, 300)
    recoveries = [
        kill_and_recover(run_dir, name, lambda: proc.poll() is None)
        for name in ("worker-0", "sampler", "streams", "trainer", "inference")
    ]
    for r in recoveries:
        print(
            f"{r.stage} killed at v{r.version}: restarted {r.restarted_s} s, next version {r.next_version_s} s"
        )
    [inference] = [r for r in recoveries if r.stage == "inference"]
    assert inference.serving_version is not None and inference.serving_version >= inference.version
    out = finish_dev(proc, 900)
    assert proc.returncode == 0, out[-5000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"].startswith("completed: the sampler finished"), out[-5000:]
    assert summary["restarts"] == {r.stage: 1 for r in recoveries}, summary["restarts"]
    counts = _check_counts(run_dir, tasks, env["STREAMRL_BOOTSTRAP_SERVERS"], epochs)
    last = max(r.version for r in recoveries)
    print(f"last fault at v{last} of v{counts['version']}")
    assert counts["version"] > last  # the run went on after its last fault
    assert processes_mentioning(str(run_dir / "config.yaml")) == []
