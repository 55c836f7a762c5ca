"""A framework agent, written as its quick start shows, trains through ``streamrl dev`` over a translated API.

``streamrl dev`` (real broker, the CPU inference server, a worker, the sampler, streams, the trainer) runs
a framework recipe on the tool policy of ``tests.support.tool_policy`` for two policy versions: every
rollout makes its tool round trip and succeeds, its calls are recorded, streams batches them, the
trainer trains on them and writes checkpoints, and the inference server loads them and serves the later
rollouts with them. Two recipes: the OpenAI Agents SDK (``examples.frameworks.openai_agents:solve``: the
SDK's default model class, which speaks the Responses API, translated by the gateway), and CrewAI
(``examples.frameworks.crewai_crew:Native``, Chat Completions), whose ``dev`` runs from CrewAI's own
environment (``.venv-crewai``: CrewAI needs ``openai<3``).

The tool policy always succeeds, so every group's rewards are equal and its advantages 0 (GRPO):
``streams.filter_zero_variance`` is off here so that the rows still reach the trainer. What this shows
is the path, from a translated framework call to a trained and served policy version; learning through
the same path is what ``configs/tool_call.yaml`` (SmolLM2, the ``openai`` SDK) shows (README).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CREWAI_PYTHON = ROOT / ".venv-crewai" / "bin" / "python"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _train_through_dev(tmp_path: Path, kafka_bootstrap: str, python: Path | str, agent: str) -> dict:
    """Run ``agent`` through ``streamrl dev`` (with ``python``) for 2 versions on 2 weather tasks, one of
    them streamed; check what every framework run must show and return ``summary.json``."""
    from tests.support.tool_policy import CONTEXT, tool_policy_dir

    model = tmp_path / "model"
    shutil.copytree(tool_policy_dir(), model)  # the trainer's checkpoints go to the run directory
    tasks = tmp_path / "train.jsonl"
    rows = [
        {"id": "paris-plain", "question": "What is the weather in Paris?", "stream": False},
        {"id": "paris-streamed", "question": "Is it sunny in Paris?", "stream": True},
    ]
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        # on a loaded machine the inference server's reloads can lag the trainer, and with
        # staleness_policy "drop" a batch whose rows are all staler than max_staleness is dead-lettered
        # by design (README, "trainer-all-stale"); "weight" keeps every row, so any dead letter here
        # is a fault of the framework's path
        "rl": {"group_size": 2, "train_batch_size": 1, "staleness_policy": "weight"},
        "dev": {
            "run_root": str(tmp_path / "runs"),
            "run_id": "r",
            "model": {"path": str(model), "build": False},
            "datasets": [{"path": str(tasks), "split": "train", "id_field": "id"}],
            "max_steps": 2,
            "display": "plain",
            "plain_every_s": 5,
            "timeout_s": 360,
            "env": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        },
        "worker": {"agent": agent, "concurrency": 4},
        "inference": {"max_model_len": CONTEXT, "torch_threads": 1},
        "streams": {"filter_zero_variance": False},
        "trainer": {"save_every": 1, "torch_threads": 1},
        # a prefix of its own: on the session's broker, another run with run_id "r" (tests/integration/dev)
        # left its checkpoints on <prefix>r.checkpoints, and the inference server served them
        "topics": {"prefix": f"t{uuid.uuid4().hex[:10]}."},
    }
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(ROOT)}
    env.pop("STREAMRL_TOPIC_PREFIX", None)
    proc = subprocess.Popen(
        [str(python), "-m", "streamrl.cli", "dev", "--config", str(path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"streamrl dev still running after 400 s:\n{out[-5000:]}")
    run_dir = tmp_path / "runs" / "r"
    worker_log = (run_dir / "logs" / "worker-0.log").read_text(errors="replace")[-3000:]
    assert proc.returncode == 0, f"{out[-5000:]}\nworker log:\n{worker_log}"
    summary = json.loads((run_dir / "summary.json").read_text())
    reached = re.match(r"completed: policy version (\d+) reached", summary["outcome"])
    assert reached and int(reached.group(1)) >= 2, summary["outcome"]
    status = summary["status"]
    # every rollout that ran made its round trip; those still queued or running when dev stops the run at
    # max_steps are "interrupted" (the worker shut down before they finished), not failed
    assert status.get("succeeded", 0) >= 4 and set(status) <= {"succeeded", "interrupted"}, (
        f"{status}\n{worker_log}"
    )
    assert all(r == 1.0 for r in summary["train_reward"].values()), summary["train_reward"]
    assert summary["batches"] >= 2, summary
    # later rollouts were served by a version the trainer wrote and the inference server loaded
    assert summary["served_version_max"] >= 1, summary
    assert not summary["dlq"], (summary["dead_letters"], summary["dead_letter_reasons"])
    return summary


@pytest.mark.timeout(420)
def test_an_agents_sdk_agent_trains_through_streamrl_dev_over_the_responses_api(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    summary = _train_through_dev(
        tmp_path, kafka_bootstrap, sys.executable, "examples.frameworks.openai_agents:solve"
    )
    # every succeeded rollout is a tool round trip: two /v1/responses calls, each recorded
    assert summary["requests"] >= 2 * summary["status"]["succeeded"], summary


@pytest.mark.timeout(420)
def test_a_crewai_crew_trains_through_streamrl_dev(tmp_path: Path, kafka_bootstrap: str) -> None:
    if not CREWAI_PYTHON.exists():
        pytest.fail(f"{CREWAI_PYTHON} is missing: run `make setup` (it builds CrewAI's environment)")
    summary = _train_through_dev(
        tmp_path, kafka_bootstrap, CREWAI_PYTHON, "examples.frameworks.crewai_crew:Native"
    )
    assert summary["requests"] >= 2 * summary["status"]["succeeded"], summary
