"""Few-shot end to end on the real broker: demonstrations bootstrapped from the highest-reward
rollouts' recorded calls (decoded from their token ids), then a search over which and how many,
scored on val through a real worker and the tiny policy on the CPU server; no optimizer LLM."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import base_sections, publish_tasks

from streamrl.schemas import LLMRequest, OptimizerEvent
from tests.support.kafka import TopicReader
from tests.support.workers import WorkerThread

pytestmark = pytest.mark.integration

SEED = "You answer questions."
TRAIN = [{"id": f"t{i}", "question": f"What is {i} plus one?", "r": 1.0 if i < 3 else 0.0} for i in range(6)]
VAL = [{"id": f"v{i}", "question": f"What is {i} minus one?", "eval": True} for i in range(4)]


def test_fewshot_bootstraps_demonstrations_and_searches_them(
    settings_factory, policy_server, inference_model_dir, tmp_path
) -> None:
    from tokenizers import Tokenizer

    from streamrl.optimizer.service import optimize

    out = tmp_path / "optimize"
    fewshot = {
        "type": "fewshot",
        "bootstrap_tasks": 6,
        "min_reward": 1.0,
        "pool_size": 3,
        "demo_counts": [2, 3],
        "candidates_per_round": 3,
        "rounds": 2,
        "demo_template": "Q: {question}\nA: {response}",
    }
    s = settings_factory(
        **base_sections(
            policy_server, inference_model_dir, out, algorithm=fewshot, seed_prompt=SEED, agent_name="shower"
        )
    )
    publish_tasks(s, TRAIN, VAL)
    with WorkerThread(s, "optimizer_test_agents:shows"):
        result = asyncio.run(optimize(s, "fs-1", out))
    summary = result.summary
    assert summary["score_first"] == 0.25 and summary["score_best"] == 1.0 and summary["rounds"] == 2
    assert json.loads((out / "summary.json").read_text()) == summary

    # the demonstrations are the rewarded bootstrap rollouts' recorded answers, decoded
    tok = Tokenizer.from_file(str(inference_model_dir / "tokenizer.json"))
    calls = TopicReader(s, "requests", LLMRequest).read_until(lambda r: len(r) >= 6, timeout_s=30)
    answers = {
        c.rollout_id.split("/", 1)[1]: tok.decode(c.response_token_ids, skip_special_tokens=True).strip()
        for c in calls
        if c.rollout_id.startswith("fs-1.r0.boot/")
    }
    demos = [f"Q: {TRAIN[i]['question']}\nA: {answers[f't{i}']}" for i in range(3)]
    best = (out / "best_prompt.txt").read_text()
    escaped = "\n\n".join(d.replace("{", "{{").replace("}", "}}") for d in demos)
    assert best == f"{SEED}\n\nExamples:\n{escaped}"
    assert all(TRAIN[i]["question"] not in best for i in range(3, 6))  # reward 0: never a demonstration

    events = TopicReader(s, "optimizer_events", OptimizerEvent).read_until(
        lambda r: any(e.kind == "finished" for e in r), timeout_s=30
    )
    accepted = [e for e in events if e.kind == "candidate" and e.status == "accepted"]
    assert len(accepted) == 4  # every subset of 2 or 3 of the 3 demonstrations, once
    assert all((e.text or "").startswith("demonstrations from tasks t") for e in accepted)
    scores = sorted(e.score for e in events if e.kind == "score" and e.split == "val")
    assert scores == [0.25, 0.75, 0.75, 0.75, 1.0]
    history = json.loads((out / "history.json").read_text())
    assert [h["round"] for h in history["rounds"]] == [0, 1, 2]
    assert [h["best_score"] for h in history["rounds"]][-1] == 1.0
