"""The fault tests' accounting (tests.support.chaos.Accounts) finds each way a run can lose, repeat
or wrongly dead-letter a rollout, so the chaos and cluster tests cannot pass on a bad run."""

from __future__ import annotations

from tests.support.chaos import Accounts


def _clean() -> Accounts:
    return Accounts(
        emitted={"g0/0", "g0/1", "g1/0", "g1/1", "g2/0", "g2/1"},
        batched={"g0/0": {"b0"}, "g0/1": {"b0"}, "g1/0": {"b0"}, "g1/1": {"b0"}},
        dropped={"g2/1": "zero_variance"},
        dead_lettered={"g2/0": ("agent_failure", "agent: rollout g2/0 failed 3 time(s)")},
        trained=4,
        version=1,
    )


def test_a_clean_run_has_no_problem() -> None:
    assert _clean().problems() == []


def test_each_fault_is_found() -> None:
    lost = _clean()
    lost.emitted.add("g3/0")
    twice = _clean()
    twice.batched["g0/0"].add("b1")
    retrained = _clean()
    retrained.trained = 8
    untrained = _clean()
    untrained.trained = 2
    infra = _clean()
    infra.dead_lettered["g2/0"] = ("infrastructure_failure", "infrastructure: ...")
    trainer_dl = _clean()
    trainer_dl.trainer_dead_letters["b9"] = "empty after filtering"
    none = _clean()
    none.trained = None
    for acc, words in [
        (lost, "neither decided"),
        (twice, "more than one batch"),
        (retrained, "consumed 8 rollouts, streams batched 4"),
        (untrained, "consumed 2 rollouts"),
        (infra, "not the task's"),
        (trainer_dl, "trainer dead-lettered 1"),
        (none, "no checkpoint"),
    ]:
        [problem] = acc.problems()
        assert words in problem
