"""APO end to end on the real broker: the tiny policy on the CPU server, a real rollout worker, a
scripted OpenAI-compatible optimizer LLM. Candidates from critiques of recorded calls, guards
before any rollout, every evaluation of a step in flight at once, a hanging prompt scored 0,
selection into the beam, and the result files."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import EDITS, SEED, base_sections, publish_tasks

from streamrl.schemas import OptimizerEvent, Sample, Trajectory, resource_version
from tests.support.kafka import TopicReader
from tests.support.workers import WorkerThread

pytestmark = pytest.mark.integration

TRAIN = [{"id": f"t{i}", "question": f"What is {i} plus {i}?"} for i in range(6)]
VAL = [{"id": f"v{i}", "question": f"What is {i} times 3?", "eval": True} for i in range(4)]


def _apo_run(settings_factory, policy_server: str, inference_model_dir, out, apo: dict):
    """Settings of an APO run of the ``solver`` agent over the seed prompt, TRAIN and VAL published."""
    s = settings_factory(
        **base_sections(
            policy_server, inference_model_dir, out, algorithm=apo, seed_prompt=SEED, agent_name="solver",
            eval_timeout_s=15,
        )
    )  # fmt: skip
    publish_tasks(s, TRAIN, VAL)
    return s


def test_apo_beam_search_through_the_workers(
    settings_factory, policy_server, optimizer_llm, inference_model_dir, tmp_path
) -> None:
    from streamrl.optimizer.service import optimize

    out = tmp_path / "optimize"
    apo = {
        "type": "apo",
        "beam_width": 2,
        "branch_factor": 2,
        "rounds": 2,
        "gradient_batch_size": 2,
        "val_batch_size": None,
        "llm": {"base_url": optimizer_llm.url, "model": "scripted", "max_retries": 0, "concurrency": 2},
    }
    s = _apo_run(settings_factory, policy_server, inference_model_dir, out, apo)
    with WorkerThread(s, "optimizer_test_agents:prompted"):
        result = asyncio.run(optimize(s, "apo-1", out))
    summary = json.loads((out / "summary.json").read_text())
    assert not result.interrupted and summary == result.summary
    seed_v = resource_version("prompt_template", SEED)
    good_v = resource_version("prompt_template", EDITS[0])
    hang_v = resource_version("prompt_template", EDITS[2])
    assert summary["score_first"] == 0.5 and summary["score_best"] == 1.0 and summary["rounds"] == 2
    assert summary["best_version"] == good_v and summary["seed_version"] == seed_v
    assert (out / "best_prompt.txt").read_text() == EDITS[0]
    assert (out / "val_score.png").stat().st_size > 1000

    events = TopicReader(s, "optimizer_events", OptimizerEvent).read_until(
        lambda r: any(e.kind == "finished" for e in r), timeout_s=30
    )
    by_kind: dict[str, list[OptimizerEvent]] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)
    # guards: a lost placeholder and a duplicate are rejected before any rollout
    reasons = {e.reason for e in by_kind["candidate"] if e.status == "rejected"}
    assert reasons == {"placeholders changed: lost {question}", f"duplicate of version {seed_v}"}
    accepted = [e for e in by_kind["candidate"] if e.status == "accepted"]
    assert len(accepted) == 6 and all("ask the model to answer precisely" in (e.text or "") for e in accepted)
    # the hanging prompt: every rollout still running at the deadline, scored 0
    (hang,) = [e for e in by_kind["score"] if e.resource_version == hang_v]
    assert (hang.score, hang.count, hang.timed_out, hang.succeeded) == (0.0, 4, 4, 0)
    assert set(hang.task_rewards.values()) == {0.0}
    # round 1's val evaluations (the two new candidates; the seed's score is reused) went out together
    r1_val = [e for e in by_kind["evaluation"] if e.round == 1 and e.split == "val"]
    assert {e.resource_version for e in r1_val} == {good_v, hang_v}
    assert len({e.deadline for e in r1_val}) == 1
    # selection: the better prompt leads the beam and is the best; every score has per-task rewards
    assert [(e.round, e.resource_version, e.score) for e in by_kind["round"]] == [
        (0, seed_v, 0.5), (1, good_v, 1.0), (2, good_v, 1.0)
    ]  # fmt: skip
    assert all(len(e.task_rewards) == e.count for e in by_kind["score"])
    history = json.loads((out / "history.json").read_text())
    assert [h["round"] for h in history["rounds"]] == [0, 1, 2]
    assert history["rounds"][1]["evaluated"] == {seed_v: 0.5, good_v: 1.0, hang_v: 0.0}

    # the 8 gradient rollouts of round 1 (4 evaluations) were published at once and ran together
    trajs = TopicReader(s, "trajectories", Trajectory).read_until(lambda r: len(r) >= 8, timeout_s=30)
    grads = [t for t in trajs if ".r1.g" in t.rollout_id]
    assert len({t.group_id for t in grads}) == 4
    first_end = min(t.finished_at for t in grads)
    assert sum(t.started_at <= first_end for t in grads) >= 4  # started before any of them finished
    # every sample pins the version its evaluation scores; none was published twice
    samples = TopicReader(s, "samples", Sample).read_until(
        lambda r: len(r) >= summary["rollouts"], timeout_s=30
    )
    assert len({x.rollout_id for x in samples}) == len(samples) == summary["rollouts"]
    assert all(set(x.resources) == {"system_prompt"} for x in samples)

    # the critiques read the recorded conversations, decoded from their token ids
    critiques = [
        r["messages"][0]["content"]
        for r in optimizer_llm.requests
        if "concise critique" in r["messages"][0]["content"]
    ]
    assert len(critiques) == 8
    assert any("status succeeded, reward 0.5" in c and "What is " in c and "plus" in c for c in critiques)
    assert all("Conversation (the last call" in c for c in critiques)


def test_apo_stops_when_the_optimizer_llm_fails_every_critique(
    settings_factory, policy_server, inference_model_dir, tmp_path
) -> None:
    """An unreachable optimizer LLM is not a run of rejected candidates that ends "done": the run
    stops with an error naming the LLM, and records none of the failed edits (a resume asks again)."""
    import socket

    from streamrl.optimizer.engine import OptimizerError
    from streamrl.optimizer.service import optimize

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    out = tmp_path / "optimize"
    apo = {
        "type": "apo", "beam_width": 1, "branch_factor": 2, "rounds": 1, "gradient_batch_size": 2,
        "llm": {"base_url": dead, "model": "scripted", "max_retries": 0, "concurrency": 2},
    }  # fmt: skip
    s = _apo_run(settings_factory, policy_server, inference_model_dir, out, apo)
    with WorkerThread(s, "optimizer_test_agents:prompted"):
        with pytest.raises(
            OptimizerError, match=r"apo round 1: the optimizer LLM failed for all 2 critiques"
        ) as err:
            asyncio.run(optimize(s, "apo-down", out))
    assert dead in str(err.value)
    events = TopicReader(s, "optimizer_events", OptimizerEvent).read_to_end()
    assert not [e for e in events if e.kind == "candidate"]  # nothing recorded of the failed edits
