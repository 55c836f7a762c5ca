"""Ledger: the admission bound, retries, dead letters and dead groups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.ledger import DeadLetter, Ledger, Reissue


def new(**kw) -> Ledger:
    args = {"group_size": 4, "train_batch_size": 2, "max_staleness": 1, "max_retries": 1} | kw
    return Ledger(**args)


def emit_group(led: Ledger, task: str, epoch: int = 0) -> None:
    for k in range(led.group_size):
        assert led.can_admit()
        led.on_emitted(f"{task}/{epoch}/{k}", 0, f"{task}/{epoch}", "train")


def test_bound_and_consumed_follow_the_formula() -> None:
    led = new()
    assert led.bound == (1 + 1) * 2 * 4
    for t in range(4):
        emit_group(led, f"t{t}")
    assert led.in_flight == 16 and not led.can_admit()
    led.on_checkpoint(1)
    assert led.consumed == 8 and led.in_flight == 8 and led.can_admit(8) and not led.can_admit(9)
    assert not led.on_checkpoint(1) and not led.on_checkpoint(0)


def test_on_policy_admits_exactly_one_batch() -> None:
    led = new(max_staleness=0)
    emit_group(led, "a")
    emit_group(led, "b")
    assert not led.can_admit()


def test_val_samples_are_not_bounded() -> None:
    led = new(max_staleness=0, train_batch_size=1)
    emit_group(led, "a")
    led.on_emitted("val/0/x/0", 0, "val/0/x", "val")
    assert led.in_flight == 4 and led.emitted_train == 4


def test_failure_releases_and_asks_for_a_reissue_then_a_dead_letter() -> None:
    led = new()
    emit_group(led, "a")
    assert led.on_trajectory("a/0/1", 0, "succeeded") is None
    act = led.on_trajectory("a/0/0", 0, "failed", "boom")
    assert isinstance(act, Reissue) and act.emission.retry == 0
    assert led.in_flight == 3 and led.pending_actions() == [act]
    led.on_emitted("a/0/0", 1, "a/0", "train")
    assert led.pending_actions() == [] and led.in_flight == 4
    dead = led.on_trajectory("a/0/0", 1, "timeout", "slow")
    assert isinstance(dead, DeadLetter) and "max_retries=1" in dead.reason and "slow" in dead.reason
    led.on_dead_lettered("a/0/0", 1)
    # group a/0 is dead: the succeeded member a/0/1 is released now, running ones when they end
    assert led.dead_groups == 1 and led.in_flight == 2
    assert led.on_trajectory("a/0/2", 0, "failed") is None
    assert led.on_trajectory("a/0/3", 0, "succeeded") is None
    assert led.in_flight == 0 and led.open_rollouts == 0


def test_duplicate_and_unknown_trajectories_change_nothing() -> None:
    led = new()
    emit_group(led, "a")
    led.on_trajectory("a/0/0", 0, "succeeded")
    before = led.in_flight
    assert led.on_trajectory("a/0/0", 0, "failed") is None
    assert led.on_trajectory("zzz/0/0", 0, "failed") is None
    assert led.in_flight == before and led.duplicate_trajectories == 1 and led.unknown_trajectories == 1


def test_late_trajectory_of_an_older_retry_is_ignored() -> None:
    led = new(max_retries=3)
    emit_group(led, "a")
    assert isinstance(led.on_trajectory("a/0/0", 0, "failed"), Reissue)
    led.on_emitted("a/0/0", 1, "a/0", "train")
    assert led.on_trajectory("a/0/0", 0, "succeeded") is None  # first outcome of retry 0 already decided
    assert led.open_rollouts == 4


def test_duplicate_emission_is_not_counted_twice() -> None:
    led = new()
    assert led.on_emitted("a/0/0", 0, "a/0", "train")
    assert not led.on_emitted("a/0/0", 0, "a/0", "train")
    assert led.emitted_train == 1


def test_recovery_replay_finds_owed_actions() -> None:
    """Replaying samples then trajectories: a failure whose re-issue is in samples owes nothing."""
    led = new(max_retries=2)
    for rid in ("a/0/0", "a/0/1"):
        led.on_emitted(rid, 0, "a/0", "train")
    led.on_emitted("a/0/0", 1, "a/0", "train")
    assert led.on_trajectory("a/0/0", 0, "failed") is None  # its re-issue was already read back
    act = led.on_trajectory("a/0/1", 0, "failed")
    assert isinstance(act, Reissue)
    assert led.pending_actions() == [act]


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="group_size"):
        Ledger(group_size=0, train_batch_size=1, max_staleness=0, max_retries=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["emit", "ok", "fail", "ckpt"]), max_size=120), st.integers(0, 2))
def test_admission_never_exceeds_the_bound(ops: list[str], staleness: int) -> None:
    """Random interleavings of admitted emissions, outcomes and checkpoints keep F <= bound."""
    led = new(max_staleness=staleness, max_retries=1)
    running: list[tuple[str, int]] = []
    done_ok = 0
    n = 0
    for op in ops:
        if op == "emit" and led.can_admit():
            rid = f"t{n // 4}/0/{n % 4}"
            led.on_emitted(rid, 0, f"t{n // 4}/0", "train")
            running.append((rid, 0))
            n += 1
        elif op in ("ok", "fail") and running:
            rid, retry = running.pop(0)
            act = led.on_trajectory(rid, retry, "succeeded" if op == "ok" else "failed")
            done_ok += op == "ok"
            if isinstance(act, Reissue) and led.can_admit():
                led.on_emitted(rid, retry + 1, act.emission.group_id, "train")
                running.append((rid, retry + 1))
            elif isinstance(act, DeadLetter):
                led.on_dead_lettered(rid, retry)
        elif op == "ckpt" and done_ok >= led.train_batch_size * led.group_size * (led.version + 1):
            led.on_checkpoint(led.version + 1)
        assert led.in_flight <= led.bound
