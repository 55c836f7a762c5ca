"""Ledger: the admission bound, retries, dead letters, dead groups and zero-variance groups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrl.producers.ledger import DeadLetter, Ledger, Reissue


def new(**kw) -> Ledger:
    args = {
        "group_size": 4,
        "train_batch_size": 2,
        "max_staleness": 1,
        "max_retries": 1,
        "filter_zero_variance": True,
    } | kw
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
        Ledger(group_size=0, train_batch_size=1, max_staleness=0, max_retries=0, filter_zero_variance=True)


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


# ---- zero-variance groups (mirror of streams.filter_zero_variance) --------------------------------


def finish_group(led: Ledger, task: str, rewards: list[float | None], epoch: int = 0) -> None:
    for k, reward in enumerate(rewards):
        assert led.on_trajectory(f"{task}/{epoch}/{k}", 0, "succeeded", reward=reward) is None


def test_zero_variance_group_releases_its_capacity_without_a_checkpoint() -> None:
    """The deadlock of the demo: with max_staleness=0 the first batch fills the bound; if both its
    groups have all-zero reward streams drops them, no checkpoint ever comes, and only the release
    lets the sampler admit again."""
    led = new(max_staleness=0)
    emit_group(led, "a")
    emit_group(led, "b")
    assert not led.can_admit()
    finish_group(led, "a", [0.0, 0.0, 0.0, None])  # None is 0.0 for streams
    assert led.zero_variance_groups == 1 and led.in_flight == 4 and led.can_admit(4) and not led.can_admit(5)
    finish_group(led, "b", [1.0, 1.0, 1.0, 1.0])
    assert led.zero_variance_groups == 2 and led.in_flight == 0 and led.released_train == 8
    assert led.version == 0 and led.can_admit(8)


def test_group_with_reward_variance_is_not_released() -> None:
    led = new()
    emit_group(led, "a")
    finish_group(led, "a", [0.0, 0.0, 1.0, 0.0])
    assert led.zero_variance_groups == 0 and led.in_flight == 4 and led.released_train == 0


def test_zero_variance_needs_every_rollout_of_the_group() -> None:
    led = new()
    emit_group(led, "a")
    finish_group(led, "a", [1.0, 1.0, 1.0])  # the fourth is still running
    assert led.zero_variance_groups == 0 and led.in_flight == 4
    led.on_trajectory("a/0/3", 0, "succeeded", reward=1.0)
    assert led.zero_variance_groups == 1 and led.in_flight == 0


def test_streams_tolerance_and_missing_reward() -> None:
    led = new(group_size=2)
    for task, rewards in {"same": [0.5, 0.5 + 1e-13], "none": [None, 0.0], "diff": [0.5, 0.5 + 1e-9]}.items():
        for k in range(2):
            led.on_emitted(f"{task}/0/{k}", 0, f"{task}/0", "train")
        finish_group(led, task, rewards)
    assert led.zero_variance_groups == 2 and led.in_flight == 2


def test_filter_off_group_size_one_and_val_groups_are_never_released() -> None:
    off = new(filter_zero_variance=False)
    emit_group(off, "a")
    finish_group(off, "a", [0.0] * 4)
    assert off.zero_variance_groups == 0 and off.in_flight == 4
    single = new(group_size=1)  # streams needs >= 2 rewards to call a group zero-variance
    emit_group(single, "a")
    finish_group(single, "a", [0.0])
    assert single.zero_variance_groups == 0 and single.in_flight == 1
    val = new()
    for k in range(4):
        val.on_emitted(f"val/0/x/{k}", 0, "val/0/x", "val")
        val.on_trajectory(f"val/0/x/{k}", 0, "succeeded", reward=0.0)
    assert val.zero_variance_groups == 0 and val.released_train == 0


def test_retried_member_counts_by_its_latest_emission_and_is_released_once() -> None:
    led = new(max_retries=2)
    emit_group(led, "a")
    assert isinstance(led.on_trajectory("a/0/0", 0, "failed", "boom"), Reissue)
    for k in (1, 2, 3):
        led.on_trajectory(f"a/0/{k}", 0, "succeeded", reward=0.0)
    assert led.zero_variance_groups == 0 and led.released_train == 1  # a/0/0 retry 0 still owed a re-issue
    led.on_emitted("a/0/0", 1, "a/0", "train")
    assert isinstance(led.on_trajectory("a/0/0", 1, "timeout"), Reissue)
    led.on_emitted("a/0/0", 2, "a/0", "train")
    led.on_trajectory("a/0/0", 2, "succeeded", reward=0.0)
    # 6 emissions: two failed ones released when they failed, the 4 latest ones now; none twice
    assert led.zero_variance_groups == 1 and led.emitted_train == 6 and led.released_train == 6
    assert led.in_flight == 0 and led.open_rollouts == 0 and led.pending_actions() == []
    led.on_trajectory("a/0/1", 0, "succeeded", reward=5.0)  # a redelivery decides nothing
    assert led.released_train == 6 and led.duplicate_trajectories == 1


def test_retried_member_with_another_reward_keeps_the_group() -> None:
    led = new()
    emit_group(led, "a")
    led.on_trajectory("a/0/0", 0, "failed")
    for k in (1, 2, 3):
        led.on_trajectory(f"a/0/{k}", 0, "succeeded", reward=0.0)
    led.on_emitted("a/0/0", 1, "a/0", "train")
    led.on_trajectory("a/0/0", 1, "succeeded", reward=1.0)
    assert led.zero_variance_groups == 0 and led.released_train == 1 and led.in_flight == 4


def test_dead_group_is_not_also_zero_variance() -> None:
    led = new(max_retries=0)
    emit_group(led, "a")
    for k in (1, 2, 3):
        led.on_trajectory(f"a/0/{k}", 0, "succeeded", reward=0.0)
    dead = led.on_trajectory("a/0/0", 0, "failed")
    assert isinstance(dead, DeadLetter)
    led.on_dead_lettered("a/0/0", 0)
    assert led.dead_groups == 1 and led.zero_variance_groups == 0
    assert led.released_train == 4 and led.in_flight == 0


def test_replay_order_gives_the_same_counts() -> None:
    """Live: emissions and trajectories interleave; recovery: every sample first, then every
    trajectory. Both end with the same E, R, C and zero-variance groups."""
    live = new(max_retries=2)
    log_emit: list[tuple[str, int, str]] = []
    log_traj: list[tuple[str, int, str, float | None]] = []

    def emit(rid: str, retry: int) -> None:
        group = rid.rsplit("/", 1)[0]
        live.on_emitted(rid, retry, group, "train")
        log_emit.append((rid, retry, group))

    def traj(rid: str, retry: int, status: str, reward: float | None = None) -> None:
        live.on_trajectory(rid, retry, status, reward=reward)
        log_traj.append((rid, retry, status, reward))

    for t in ("a", "b", "c"):
        for k in range(4):
            emit(f"{t}/0/{k}", 0)
    traj("a/0/0", 0, "failed")
    emit("a/0/0", 1)
    for k in (1, 2, 3):
        traj(f"a/0/{k}", 0, "succeeded", 0.0)
    traj("a/0/0", 1, "succeeded", None)  # zero-variance after a retry
    for k in range(4):
        traj(f"b/0/{k}", 0, "succeeded", float(k % 2))  # variance: kept
        traj(f"c/0/{k}", 0, "succeeded", 1.0)  # zero variance
    live.on_checkpoint(1)
    assert live.zero_variance_groups == 2 and live.released_train == 9 and live.in_flight == 13 - 9 - 8

    replay = new(max_retries=2)
    for rid, retry, group in log_emit:
        replay.on_emitted(rid, retry, group, "train")
    replay.on_checkpoint(1)
    for rid, retry, status, reward in log_traj:
        assert replay.on_trajectory(rid, retry, status, reward=reward) is None  # nothing owed
    for led in (live, replay):
        assert (led.emitted_train, led.released_train, led.consumed, led.zero_variance_groups) == (
            13,
            9,
            8,
            2,
        )
    assert replay.pending_actions() == []


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(["emit", "ok0", "ok1", "okN", "fail", "ckpt"]), max_size=150),
    st.integers(0, 1),
    st.booleans(),
)
def test_releases_match_a_model_of_streams_and_replay(ops: list[str], staleness: int, zv: bool) -> None:
    """Random runs of G=2 groups, rewards in {0, 1, None}, failures with one retry, dead groups and
    checkpoints that consume only groups streams would batch. At every step the ledger's ``R`` equals
    an independent model's (failed emissions, finished members of dead groups, members of
    zero-variance groups), the *true* in-flight count stays under the bound, and replaying samples then
    trajectories reproduces every count."""
    G, B = 2, 1
    led = new(
        group_size=G, train_batch_size=B, max_staleness=staleness, max_retries=1, filter_zero_variance=zv
    )
    emissions: list[tuple[str, int, str]] = []
    outcomes: dict[tuple[str, int], tuple[str, float | None]] = {}
    trajs: list[tuple[str, int, str, float | None]] = []
    dead_groups: set[str] = set()
    dead_lettered: list[tuple[str, int]] = []
    running: list[tuple[str, int]] = []
    n = 0

    def latest(rid: str) -> int:
        return max(r for x, r, _ in emissions if x == rid)

    def group_state(gid: str) -> str:
        rids = {x for x, _, g in emissions if g == gid}
        if gid in dead_groups:
            return "dead"
        outs = [outcomes.get((rid, latest(rid))) for rid in rids]
        if len(rids) < G or any(o is None or o[0] != "succeeded" for o in outs):
            return "open"
        rewards = [float(o[1] or 0.0) for o in outs if o is not None]
        return "zero_variance" if zv and max(rewards) - min(rewards) <= 1e-12 else "complete"

    def model_released() -> int:
        states = {g: group_state(g) for _, _, g in emissions}
        total = 0
        for rid, retry, g in emissions:
            out = outcomes.get((rid, retry))
            if out is not None and (out[0] == "failed" or states[g] in ("dead", "zero_variance")):
                total += 1
        return total

    for op in ops:
        if op == "emit" and led.can_admit():
            rid, gid = f"t{n // G}/0/{n % G}", f"t{n // G}/0"
            led.on_emitted(rid, 0, gid, "train")
            emissions.append((rid, 0, gid))
            running.append((rid, 0))
            n += 1
        elif op.startswith(("ok", "fail")) and running:
            rid, retry = running.pop(0)
            status = "failed" if op == "fail" else "succeeded"
            reward = {"ok0": 0.0, "ok1": 1.0}.get(op)
            outcomes[(rid, retry)] = (status, reward)
            trajs.append((rid, retry, status, reward))
            act = led.on_trajectory(rid, retry, status, reward=reward)
            if isinstance(act, Reissue):
                if not led.can_admit():
                    continue  # stays owed; the sampler would emit it once there is room
                led.on_emitted(rid, retry + 1, act.emission.group_id, "train")
                emissions.append((rid, retry + 1, act.emission.group_id))
                running.append((rid, retry + 1))
            elif isinstance(act, DeadLetter):
                led.on_dead_lettered(rid, retry)
                dead_lettered.append((rid, retry))
                dead_groups.add(act.emission.group_id)
        elif op == "ckpt":
            batchable = sum(group_state(g) == "complete" for g in {g for _, _, g in emissions})
            if batchable >= B * (led.version + 1):
                led.on_checkpoint(led.version + 1)
        released = model_released()
        assert led.released_train == released
        assert len(emissions) - released - led.consumed <= led.bound
        assert led.in_flight == len(emissions) - released - led.consumed

    replay = new(
        group_size=G, train_batch_size=B, max_staleness=staleness, max_retries=1, filter_zero_variance=zv
    )
    for rid, retry, gid in emissions:
        replay.on_emitted(rid, retry, gid, "train")
    replay.on_checkpoint(led.version)
    for rid, retry, status, reward in trajs:
        replay.on_trajectory(rid, retry, status, reward=reward)
    for rid, retry in dead_lettered:  # the sampler applies its dlq records after the replay
        replay.on_dead_lettered(rid, retry)
    assert (
        replay.emitted_train,
        replay.released_train,
        replay.in_flight,
        replay.zero_variance_groups,
        replay.dead_groups,
    ) == (led.emitted_train, led.released_train, led.in_flight, led.zero_variance_groups, led.dead_groups)


def test_emission_into_a_dead_group_is_released_when_it_ends_live_and_replayed() -> None:
    live = new(max_retries=0)
    live.on_emitted("a/0/0", 0, "a/0", "train")
    assert isinstance(live.on_trajectory("a/0/0", 0, "failed"), DeadLetter)
    live.on_dead_lettered("a/0/0", 0)
    live.on_emitted("a/0/1", 0, "a/0", "train")  # admitted after its group died
    replay = new(max_retries=0)
    replay.on_emitted("a/0/0", 0, "a/0", "train")
    replay.on_emitted("a/0/1", 0, "a/0", "train")
    replay.on_trajectory("a/0/0", 0, "failed")
    replay.on_dead_lettered("a/0/0", 0)
    for led in (live, replay):
        assert led.in_flight == 1
        led.on_trajectory("a/0/1", 0, "succeeded", reward=1.0)
        assert led.in_flight == 0 and led.released_train == 2


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.sampled_from([0.0, 1.0, -1.0, 1e-13]), st.floats(-2, 2, allow_nan=False)),
        min_size=1,
        max_size=5,
    )
)
def test_same_verdict_as_streams_group_machine(rewards: list[float | None]) -> None:
    """Cross-check against the streams stage itself: a complete group of fresh rollouts is dropped
    as zero-variance by ``streamrl.streams.groups.GroupMachine`` exactly when the ledger releases it."""
    from streamrl.streams.groups import GroupConfig, GroupMachine

    table: dict[str, dict] = {}
    machine = GroupMachine(GroupConfig(filter_zero_variance=True), table.get, lambda: list(table.items()))
    dropped = 0
    for k, reward in enumerate(rewards):
        event = {
            "kind": "train",
            "rollout_id": f"a/0/{k}",
            "group_id": "a/0",
            "group_size": len(rewards),
            "reward": float(reward or 0.0),  # streams/join.py forwards float(traj.reward or 0.0)
            "rows": [{"policy_version": 0}],
            "last_ts": float(k),
        }
        res = machine.on_event(event, partition=0, offset=k)
        table.update({key: value for key, value in res.writes if value is not None})
        dropped += res.stats["group_dropped:zero_variance"]
    led = new(group_size=len(rewards))
    for k in range(len(rewards)):
        led.on_emitted(f"a/0/{k}", 0, "a/0", "train")
    for k, reward in enumerate(rewards):
        led.on_trajectory(f"a/0/{k}", 0, "succeeded", reward=reward)
    assert led.zero_variance_groups == dropped
    assert led.in_flight == (0 if dropped else len(rewards))
