"""Restart safety: SIGKILL the sampler process mid-epoch, restart it, and nothing is skipped; the
in-flight bound holds across the restart (its state comes back from the topics, not a file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from streamrl.producers.publish import publish_file
from streamrl.schemas import Mode

pytestmark = pytest.mark.integration

N_TASKS, G, EPOCHS = 30, 4, 2


def spawn(settings, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "STREAMRL_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "STREAMRL_TOPIC_PREFIX": settings.topics.prefix,
            "STREAMRL_RL__GROUP_SIZE": str(G),
            "STREAMRL_RL__TRAIN_BATCH_SIZE": "2",
            "STREAMRL_RL__MAX_STALENESS": "1",
            "STREAMRL_RL__SEED": "11",
            "STREAMRL_SAMPLER__MAX_RETRIES": "2",
            "STREAMRL_SAMPLER__POLL_INTERVAL_S": "0.05",
            "STREAMRL_SAMPLER__FLUSH_INTERVAL_S": "5",
            **(extra_env or {}),
        }
    )
    cmd = [
        sys.executable,
        "-c",
        "from streamrl.cli import main; main()",
        "sampler",
        "--max-epochs",
        str(EPOCHS),
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[3]
    )


def test_sigkill_mid_epoch_then_restart_skips_nothing(settings_factory, trainer_sim, tmp_path: Path) -> None:
    s = settings_factory(rl={"group_size": G, "train_batch_size": 2, "max_staleness": 1, "seed": 11})
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i:02d}", "q": i}) + "\n" for i in range(N_TASKS)))
    publish_file(s, data, id_field="id")
    sim = trainer_sim(s, fail={("t03/0/2", 0), ("t17/1/0", 0)})
    log = tmp_path / "sampler.log"
    proc = spawn(s, log)
    kills = []
    try:
        sim.drain(quiet_s=0.5, first_s=30)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                assert proc.returncode == 0, log.read_text()[-3000:]
                break
            sim.answer()
            if len(kills) < 2 and sim.version >= (3, 11)[len(kills)]:
                if kills:  # the second kill lands once the sampler saw the checkpoint and emits again
                    emitted = sim.emitted
                    sim.drain_until(lambda: sim.emitted > emitted)  # noqa: B023 (called right here)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                kills.append((sim.version, sim.emitted))
                sim.drain(quiet_s=0.3)
                sim.answer()  # workers and trainer go on while the sampler is down
                proc = spawn(s, log)
                sim.drain(quiet_s=0.5, first_s=30)
                continue
            sim.drain(quiet_s=0.4)
        assert proc.poll() == 0, f"sampler did not finish: {log.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    sim.drain(quiet_s=0.3)
    assert len(kills) == 2, kills
    assert all(0 < e < N_TASKS * G * EPOCHS for _, e in kills), f"not killed mid-run: {kills}"
    firsts = [x for x in sim.samples if x.mode is Mode.train and x.retry == 0]
    # nothing skipped, nothing issued twice under two identities
    assert Counter((x.task_id, x.epoch, x.k) for x in firsts) == {
        (f"t{i:02d}", e, k): 1 for i in range(N_TASKS) for e in range(EPOCHS) for k in range(G)
    }
    assert sorted((x.rollout_id, x.retry) for x in sim.samples if x.retry) == [("t03/0/2", 1), ("t17/1/0", 1)]
    # a re-emitted sample (produced, not acknowledged, before the kill) has the same rollout id and
    # retry; there can be at most one bound's worth per kill (a restart from scratch would re-emit all)
    assert len(sim.duplicates) <= 2 * sim.bound, len(sim.duplicates)
    for dup in sim.duplicates:
        assert (
            dup.rollout_id == f"{dup.task_id}/{dup.epoch}/{dup.k}" and (dup.rollout_id, dup.retry) in sim.seen
        )
    assert sim.version == (N_TASKS * EPOCHS) // 2 and sim.checks == N_TASKS * G * EPOCHS + 2
    assert log.read_text().count("sampler recovered") == 3
    print(f"kills at (version, emitted) {kills}; duplicates after restart: {len(sim.duplicates)}")
