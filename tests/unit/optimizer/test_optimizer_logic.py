"""The optimizer's pure logic: evaluation scoring with deadlines and re-issues, guards, edit parsing,
prompt files, batches, the state's JSON, transcripts."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from streamrl.optimizer.apo import extract_prompt, load_prompt
from streamrl.optimizer.evaluation import CallBook, Evaluation
from streamrl.optimizer.fewshot import escape
from streamrl.optimizer.guards import check_candidate, normalize
from streamrl.optimizer.rounds import batches
from streamrl.optimizer.state import RunState
from streamrl.resources import ResourceError, placeholders
from streamrl.schemas import FailureKind, Mode, RolloutStatus, Trajectory
from tests.support import records as ex

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def traj(
    task: str, status: str = "succeeded", reward: float | None = 1.0, retry: int = 0, kind: str | None = None
) -> Trajectory:
    return Trajectory(
        rollout_id=f"e1/{task}", attempt_id=f"a-{task}-{retry}-{status}", task_id=task, group_id="e1",
        group_size=1, k=0, epoch=1, retry=retry, mode=Mode.val, status=RolloutStatus(status),
        reward=reward if status == "succeeded" else None, worker_id="w", policy_version=0,
        started_at=T0, finished_at=T0, failure_kind=kind, request_ids=[f"req-{task}"],
    )  # fmt: skip


def test_an_evaluation_scores_every_task_and_zero_for_the_unfinished() -> None:
    ev = Evaluation("e1", "0123456789abcdef", "val", ["a", "b", "c", "d"], round=1, deadline=100.0)
    assert ev.apply(traj("a", reward=1.0), 10.0)
    assert ev.apply(traj("b", "failed"), 11.0)
    assert not ev.apply(traj("b", "failed"), 12.0)  # a repeat changes nothing
    assert ev.apply(traj("b", reward=0.5), 13.0)  # a later success replaces the 0
    assert not ev.apply(traj("c", reward=1.0), 101.0)  # after the deadline: does not count
    assert not ev.apply(traj("x", reward=1.0), 10.0)  # not a task of this evaluation
    assert not ev.complete()
    r = ev.finish(101.0)
    assert (r.count, r.succeeded, r.failed, r.timed_out) == (4, 2, 0, 2)
    assert r.score == pytest.approx(1.5 / 4) and r.task_rewards == {"a": 1.0, "b": 0.5, "c": 0.0, "d": 0.0}
    assert Evaluation.from_json(ev.to_json()).result == r
    assert ev.attempts["b"].status == "succeeded"


def test_an_infrastructure_failure_scores_nothing_and_is_reissued_within_budget() -> None:
    ev = Evaluation("e1", "0123456789abcdef", "val", ["a"], round=1, deadline=100.0)
    infra = traj("a", "failed", kind=FailureKind.infrastructure.value)
    assert not ev.apply(infra, 5.0) and ev.scored() == 0
    assert ev.reissue(infra, now_s=5.0, max_retries=2) == 1
    ev.retries["a"] = 1
    assert ev.reissue(infra, now_s=6.0, max_retries=2) is None  # an older issue's failure
    again = traj("a", "failed", retry=1, kind=FailureKind.infrastructure.value)
    assert ev.reissue(again, now_s=7.0, max_retries=2) == 2
    assert ev.reissue(again, now_s=100.0, max_retries=2) is None  # deadline reached
    assert ev.reissue(traj("a", "failed"), now_s=7.0, max_retries=2) is None  # the agent's failure: counted
    ev.retries["a"] = 2
    assert ev.reissue(traj("a", "failed", retry=2, kind="infrastructure"), 8.0, 2) is None  # budget spent


def test_the_call_book_keeps_the_agents_last_call_of_the_attempt() -> None:
    book = CallBook("solver")
    base = ex.llm_request(1, prompt_tokens=4, response_tokens=2)
    calls = [
        base.model_copy(update={"rollout_id": "e1/a", "attempt_id": "a1", "sequence": i, "request_id": f"r{i}", "agent_name": name})
        for i, name in enumerate(["solver", "solver", "judge"])
    ]  # fmt: skip
    for c in reversed(calls):
        book.add(c)
    ev = Evaluation("e1", "0123456789abcdef", "train", ["a"], round=1)
    ev.apply(traj("a").model_copy(update={"attempt_id": "a1", "request_ids": ["r0", "r1", "r2"]}), 1.0)
    assert book.last_call("e1/a", ev.attempts["a"]).request_id == "r1"  # the judge's call is not the agent's


def test_guards() -> None:
    seed = frozenset({"question"})
    seen = {normalize("Answer {question}"): "seedv"}
    assert check_candidate("Answer precisely: {question}", seed, seen, max_chars=100).ok
    assert check_candidate("  ", seed, seen, max_chars=100).reason == "empty prompt"
    assert (
        check_candidate("Answer\n {question} ", seed, seen, max_chars=100).reason
        == "duplicate of version seedv"
    )
    assert (
        check_candidate("Answer", seed, seen, max_chars=100).reason == "placeholders changed: lost {question}"
    )
    assert (
        check_candidate("{question} {tone}", seed, seen, max_chars=100).reason
        == "placeholders changed: added {tone}"
    )
    assert "not a valid template" in check_candidate("{question} {", seed, seen, max_chars=100).reason
    assert "over the limit of 10" in check_candidate("x" * 11 + "{question}", seed, seen, max_chars=10).reason


@pytest.mark.parametrize(
    ("answer", "prompt"),
    [
        ("Sure!\n<prompt>\nBe brief: {q}\n</prompt>\nDone.", "Be brief: {q}"),
        ("```\nBe brief: {q}\n```", "Be brief: {q}"),
        ("  Be brief: {q}  ", "Be brief: {q}"),
    ],
)
def test_an_edit_answer_gives_its_template(answer: str, prompt: str) -> None:
    assert extract_prompt(answer) == prompt


def test_prompt_files_need_their_placeholders(tmp_path) -> None:
    assert placeholders(load_prompt(None, "critique.md", {"prompt", "experiments"})) == {
        "prompt",
        "experiments",
    }
    assert placeholders(load_prompt(None, "edit.md", {"prompt", "critique"})) == {"prompt", "critique"}
    bad = tmp_path / "critique.md"
    bad.write_text("Critique {prompt} only.")
    with pytest.raises(ResourceError, match=r"exactly the placeholders \['experiments', 'prompt'\]"):
        load_prompt(bad, "critique.md", {"prompt", "experiments"})
    with pytest.raises(ResourceError, match="cannot read"):
        load_prompt(tmp_path / "missing.md", "critique.md", {"prompt"})


def test_batches_are_distinct_while_ids_last() -> None:
    ids = [f"t{i}" for i in range(6)]
    got = batches(ids, 2, 3, random.Random(0))
    assert sorted(t for b in got for t in b) == ids  # one pass covers every id once
    assert got == batches(ids, 2, 3, random.Random(0))  # seeded: a resumed run draws the same
    assert all(len(b) == 2 for b in batches(ids, 2, 7, random.Random(1)))
    assert batches(ids[:1], 3, 2, random.Random(0)) == [["t0"], ["t0"]]


def test_state_round_trip() -> None:
    st = RunState("r", "apo", "system_prompt", "0123456789abcdef", ["question"], {"trajectories": {0: 5}})
    st.evals["e1"] = Evaluation("e1", "0123456789abcdef", "val", ["a"], round=0, deadline=3.5)
    st.best = {"version": "0123456789abcdef", "score": 0.5, "round": 0}
    back = RunState.from_json(st.to_json())
    assert back.to_json() == st.to_json() and back.start_offsets == {"trajectories": {0: 5}}
    with pytest.raises(ValueError, match="layout"):
        RunState.from_json('{"version": 99}')


def test_demonstrations_are_literal_text() -> None:
    demo = 'A: <tool_call>{"name": "f"}</tool_call>'
    assert escape(demo).format() == demo and placeholders(escape(demo)) == frozenset()


def test_the_optimizer_llm_retries_transient_failures_only() -> None:
    import asyncio

    import httpx

    from streamrl.config.optimizer import OptimizerLLMSettings
    from streamrl.optimizer.llm import OptimizerLLM, OptimizerLLMError

    seen: list[httpx.Request] = []
    script = [503, 200, 400, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = script[len(seen) - 1] if len(seen) <= len(script) else 200
        if status != 200:
            return httpx.Response(status, text="busy" if status == 503 else "bad model")
        content = "" if len(seen) == 4 else "a critique"
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": content}}]})

    cfg = OptimizerLLMSettings(base_url="http://llm.test/v1", model="m", api_key="sk-1", max_retries=2)

    async def go() -> None:
        llm = OptimizerLLM(cfg, backoff_s=0.01, transport=httpx.MockTransport(handler))
        try:
            assert await llm.complete("critique this") == "a critique"  # 503, then 200
            with pytest.raises(OptimizerLLMError, match="HTTP 400: bad model"):
                await llm.complete("again")  # not retried
            with pytest.raises(OptimizerLLMError, match="empty answer"):
                await llm.complete("once more")
        finally:
            await llm.aclose()

    asyncio.run(go())
    assert len(seen) == 4 and str(seen[0].url) == "http://llm.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-1"


def test_a_transcript_keeps_its_head_and_mostly_its_tail(tmp_path) -> None:
    from tokenizers import Tokenizer, models

    from streamrl.optimizer.transcripts import Decoder

    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    Tokenizer(models.WordLevel(vocab, unk_token="a")).save(str(tmp_path / "tokenizer.json"))
    dec = Decoder(tmp_path)
    ids = list(range(26))
    assert dec.clip(ids, 26).replace(" ", "") == "abcdefghijklmnopqrstuvwxyz"
    clipped = dec.clip(ids, 8)
    head, cut, tail = clipped.split("\n")
    assert (
        head.replace(" ", "") == "ab"
        and cut == "[... 18 tokens cut ...]"
        and tail.replace(" ", "") == "uvwxyz"
    )
    with pytest.raises(Exception, match=r"set optimize\.tokenizer"):
        Decoder(tmp_path / "nowhere")


def test_demonstrations_go_after_or_before_the_seed() -> None:
    from types import SimpleNamespace

    from streamrl.config.optimizer import FewshotSettings
    from streamrl.optimizer.fewshot import Fewshot

    def made(**cfg: object) -> str:
        return Fewshot.template(SimpleNamespace(cfg=FewshotSettings(**cfg)), "Q: {q}", ["a {x}", "b"])  # type: ignore[arg-type]

    assert made() == "Q: {q}\n\nExamples:\na {{x}}\n\nb"
    assert made(header="", separator="\n", position="before") == "a {{x}}\nb\nQ: {q}"
    assert placeholders(made(position="before")) == frozenset({"q"})


def test_the_pool_keeps_the_best_rewarded_demonstrations_once_each() -> None:
    from types import SimpleNamespace

    from streamrl.config.optimizer import FewshotSettings
    from streamrl.optimizer.fewshot import Fewshot

    rows = {
        "a": ("Hi?", 1.0, "yes"),
        "b": ("Hi?", 1.0, "yes"),
        "c": ("Bye?", 0.5, "no"),
        "d": ("Up?", 1.0, "up"),
    }
    attempts = [
        (SimpleNamespace(task_id=t, status="succeeded", reward=r), SimpleNamespace(response_token_ids=[i]))
        for i, (t, (_, r, _)) in enumerate(rows.items())
    ]
    answers = [a for _, _, a in rows.values()]
    engine = SimpleNamespace(
        last_calls=lambda boot: attempts, payload=lambda t: {"question": rows[t][0], "response": "ignored"}
    )
    algo = SimpleNamespace(
        engine=engine,
        cfg=FewshotSettings(min_reward=1.0, pool_size=5),
        decoder=SimpleNamespace(decode=lambda ids, skip_special: answers[ids[0]]),
    )
    pool = Fewshot.pool(algo, None)  # type: ignore[arg-type]
    assert [(d["task_id"], d["text"]) for d in pool] == [("a", "Hi?\nyes"), ("d", "Up?\nup")]


def test_the_live_panel_shows_round_evaluations_and_scores() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from streamrl.optimizer.display import Progress
    from streamrl.schemas import OptimizerEvent

    st = RunState(
        run_id="r1", algorithm="apo", resource_name="p", seed_version="s" * 16, seed_placeholders=[],
        start_offsets={},
    )  # fmt: skip
    st.round, st.phase, st.rollouts = 1, "val", 12
    st.candidates = {"s" * 16: {"parents": []}, "c" * 16: {"parents": ["s" * 16]}}
    st.history = [{"leader_score": 0.5}]
    st.best = {"version": "c" * 16, "score": 0.75}
    st.evals["r1.r1.v-c"] = Evaluation("r1.r1.v-c", "c" * 16, "val", ["a", "b"], round=1, deadline=9e9)
    engine = SimpleNamespace(state=None, listeners=[])
    console = Console(record=True, width=120)
    progress = Progress(engine, 3, console, "live")  # type: ignore[arg-type]
    console.print(progress.render())
    engine.state = st
    engine.listeners[0](
        OptimizerEvent(run_id="r1", seq=0, kind="score", algorithm="apo", round=1, resource_version="c" * 16,
                       split="val", score=0.75, count=2, succeeded=2, failed=0, timed_out=0, task_rewards={"a": 1.0, "b": 0.5})
    )  # fmt: skip
    console.print(progress.render())
    text = console.export_text()
    assert "starting ..." in text and "round 1/3  phase val" in text and "seed 0.500  best 0.750" in text
    assert "v-c" in text and "0/2" in text and "scored 0.750 on 2 val tasks" in text
