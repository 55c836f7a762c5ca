"""A SIGKILLed optimizer resumes its round from its state on Kafka: it re-attaches to the evaluation
still in flight (same samples, same deadline) and re-runs no finished evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import EDITS, SEED, base_sections, publish_tasks

from streamrl.schemas import OptimizerEvent, Sample, resource_version
from tests.support.kafka import TopicReader
from tests.support.workers import WorkerThread

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TRAIN = [{"id": f"t{i}", "question": f"What is {i} plus {i}?"} for i in range(6)]
VAL = [{"id": f"v{i}", "question": f"What is {i} times 3?", "eval": True} for i in range(4)]


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STREAMRL_BOOTSTRAP_SERVERS", "STREAMRL_TOPIC_PREFIX")
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamrl.cli", "optimize", "-c", str(config), "--no-pipeline", "--run-id", "r1"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def test_a_killed_optimizer_resumes_its_round(
    settings_factory, policy_server, optimizer_llm, inference_model_dir, tmp_path
) -> None:
    out = tmp_path / "optimize"
    apo = {
        "type": "apo", "beam_width": 2, "branch_factor": 2, "rounds": 2, "gradient_batch_size": 2,
        "val_batch_size": None,
        "llm": {"base_url": optimizer_llm.url, "model": "scripted", "max_retries": 0, "concurrency": 2},
    }  # fmt: skip
    sections = base_sections(
        policy_server, inference_model_dir, out, algorithm=apo, seed_prompt=SEED, agent_name="solver",
        eval_timeout_s=25,
    )  # fmt: skip
    s = settings_factory(**sections)
    publish_tasks(s, TRAIN, VAL)
    config = tmp_path / "optimize.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": s.kafka.bootstrap_servers},
                "topics": {"prefix": s.topics.prefix},
                **sections,
            }
        )
    )
    hang_v = resource_version("prompt_template", EDITS[2])
    log = tmp_path / "optimize.log"
    events = TopicReader(s, "optimizer_events", OptimizerEvent)
    with WorkerThread(s, "optimizer_test_agents:prompted"):
        proc = _start(config, log)
        try:
            # kill it mid-round: round 1's val evaluations published, one scored, the hanging one in flight
            events.read_until(
                lambda r: any(e.kind == "score" and e.round == 1 and e.split == "val" for e in r),
                timeout_s=240,
            )
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            before = list(events.records)
            scored_before = {e.eval_id for e in before if e.kind == "score"}
            assert not any(e.resource_version == hang_v for e in before if e.kind == "score")
            proc = _start(config, log)
            assert proc.wait(300) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "run r1: resuming round 1, phase val" in text and "1 in flight" in text, text[-3000:]
    after = events.read_until(lambda r: any(e.kind == "finished" for e in r), timeout_s=30)
    scores = Counter(e.eval_id for e in after if e.kind == "score")
    assert all(scores[eid] == 1 for eid in scored_before), scores  # no finished evaluation re-run
    (hang,) = [e for e in after if e.kind == "score" and e.resource_version == hang_v]
    assert (hang.score, hang.timed_out) == (0.0, 4)
    (published,) = [e for e in after if e.kind == "evaluation" and e.resource_version == hang_v]
    assert hang.created_at >= published.deadline  # scored at the deadline it was published with
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score_first"] == 0.5 and summary["score_best"] == 1.0 and summary["rounds"] == 2
    samples = TopicReader(s, "samples", Sample).read_until(
        lambda r: len(r) >= summary["rollouts"], timeout_s=30
    )
    ids = Counter(x.rollout_id for x in samples)
    assert max(ids.values()) == 1 and len(ids) == summary["rollouts"]  # nothing published twice
    # run again once finished: it says so, runs nothing, and writes the same results
    again = _start(config, log)
    assert again.wait(120) == 0, log.read_text()[-3000:]
    tail = log.read_text()[len(text) :]
    assert "run r1: finished earlier (completed 2 round(s)" in tail and "resuming" not in tail, tail[-3000:]
    assert json.loads((out / "summary.json").read_text())["score_best"] == 1.0
    assert len(TopicReader(s, "samples", Sample).read_to_end()) == len(samples)
