"""Ledger: the admission bound from facts (trajectories, group outcomes, the trainer's consumption),
retries and dead letters, exactness over whole runs, and replay determinism."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrl.producers.ledger import DeadLetter, Ledger, Reissue, split_rollout_id


def new(**kw) -> Ledger:
    args = {"group_size": 4, "train_batch_size": 2, "max_staleness": 1, "max_retries": 1} | kw
    return Ledger(**args)


def sample(group: str, k: int, retry: int = 0, *, size: int = 4, mode: str = "train") -> SimpleNamespace:
    """What the ledger reads of a ``Sample``."""
    return SimpleNamespace(
        rollout_id=f"{group}/{k}", group_id=group, k=k, retry=retry, group_size=size, mode=mode
    )


def emit_group(led: Ledger, group: str) -> None:
    for k in range(led.group_size):
        assert led.can_admit()
        assert led.on_emitted(sample(group, k, size=led.group_size))


def succeed(led: Ledger, group: str, ks=None) -> None:
    for k in ks if ks is not None else range(led.group_size):
        assert led.on_trajectory(group, k, 0, "succeeded") is None


def rids(group: str, ks) -> list[str]:
    return [f"{group}/{k}" for k in ks]


def test_bound_and_consumption_come_from_the_trainers_count() -> None:
    led = new()
    assert led.bound == (1 + 1) * 2 * 4
    for g in ("a/0", "b/0", "c/0", "d/0"):
        emit_group(led, g)
    assert led.in_flight == 16 and not led.can_admit()
    for g in ("a/0", "b/0"):
        succeed(led, g)
    assert led.in_flight == 16  # succeeded and waiting: still in flight
    assert led.on_checkpoint(1, consumed_rollouts=8)
    assert led.consumed == 8 and led.in_flight == 8 and led.can_admit(8) and not led.can_admit(9)
    assert not led.on_checkpoint(1, consumed_rollouts=8) and not led.on_checkpoint(0, 0)
    assert led.consumed == 8  # an older version changes nothing
    # a checkpoint of schema v1 (no count): one full batch per version
    assert led.on_checkpoint(2, consumed_rollouts=None) and led.consumed == 2 * 2 * 4


def test_on_policy_admits_exactly_one_batch_and_val_is_not_bounded() -> None:
    led = new(max_staleness=0)
    emit_group(led, "a/0")
    emit_group(led, "b/0")
    assert not led.can_admit()
    assert led.on_emitted(sample("val/0/x", 0, size=1, mode="val"))
    assert led.in_flight == 8 and led.emitted_train == 8
    assert led.on_trajectory("val/0/x", 0, 0, "succeeded") is None and led.in_flight == 8


def test_dropped_outcome_releases_a_rollout_in_either_order_and_once() -> None:
    led = new(max_staleness=0)
    emit_group(led, "a/0")
    emit_group(led, "b/0")
    succeed(led, "a/0")
    led.on_outcome("a/0", "dropped", rids("a/0", range(4)), None)  # e.g. zero variance
    assert led.in_flight == 4 and led.can_admit(4)
    # outcome before the trajectories are read (they are other topics): released all the same
    led.on_outcome("b/0", "dropped", rids("b/0", (0, 1)), None)
    succeed(led, "b/0")
    assert led.in_flight == 2
    # a repeated record, or a second decision of a decided rollout, changes nothing
    led.on_outcome("a/0", "dropped", rids("a/0", range(4)), None)
    led.on_outcome("b/0", "batched", rids("b/0", (0, 1, 2, 3)), "b-1")
    assert led.in_flight == 2 and led.released_by_outcome == 6
    led.on_checkpoint(1, consumed_rollouts=2)  # b/0/2 and b/0/3 trained
    assert led.in_flight == 0


def test_batched_rollouts_wait_for_the_trainer_or_its_dead_letter() -> None:
    led = new()
    for g in ("a/0", "b/0"):
        emit_group(led, g)
        succeed(led, g)
    led.on_outcome("a/0", "batched", rids("a/0", range(4)), "b-1")
    assert led.in_flight == 8  # batched is not consumed
    led.on_batch_dead_lettered("b-1")
    led.on_batch_dead_lettered("b-1")  # the same dead letter read twice (recovery reads dlq again)
    assert led.in_flight == 4
    # dead letter first, outcome later (recovery reads dlq before group_outcomes is replayed)
    led.on_batch_dead_lettered("b-2")
    led.on_outcome("b/0", "batched", rids("b/0", (0, 1)), "b-2")
    led.on_outcome("b/0", "batched", rids("b/0", (2, 3)), "b-2")
    assert led.in_flight == 0 and led.consumed_dead_lettered == 8


def test_failure_asks_for_a_reissue_then_a_dead_letter() -> None:
    led = new()
    emit_group(led, "a/0")
    act = led.on_trajectory("a/0", 0, 0, "failed", "boom")
    assert isinstance(act, Reissue) and (act.group_id, act.k, act.retry) == ("a/0", 0, 0)
    assert act.sample.rollout_id == "a/0/0"
    assert led.in_flight == 3 and led.pending_actions() == [act]
    led.on_emitted(sample("a/0", 0, 1))
    assert led.pending_actions() == [] and led.in_flight == 4
    dead = led.on_trajectory("a/0", 0, 1, "timeout", "slow")
    assert isinstance(dead, DeadLetter) and "max_retries=1" in dead.reason and "slow" in dead.reason
    led.on_dead_lettered("a/0", 0, 1)
    assert led.in_flight == 3 and led.open_rollouts == 3 and led.pending_actions() == []
    # the group's other members wait for streams' outcome (a straggler drop, here)
    succeed(led, "a/0", (1, 2, 3))
    assert led.in_flight == 3 and led.open_rollouts == 0
    led.on_outcome("a/0", "dropped", rids("a/0", (1, 2, 3)), None)
    assert led.in_flight == 0


def test_infrastructure_failures_spend_no_retries_and_have_their_own_budget() -> None:
    led = new(max_retries=1, max_infra_retries=2)
    emit_group(led, "a/0")
    retry = 0
    for n in (1, 2):  # an inference outage, twice: re-issued, the task's budget untouched
        act = led.on_trajectory("a/0", 0, retry, "failed", "502 inference unreachable", "infrastructure")
        assert isinstance(act, Reissue) and (act.kind, act.failures) == ("infrastructure", n)
        retry += 1
        led.on_emitted(sample("a/0", 0, retry))
    act = led.on_trajectory("a/0", 0, retry, "failed", "ValueError: boom", "agent")  # the task's own
    assert isinstance(act, Reissue) and (act.kind, act.failures) == ("agent", 1)
    retry += 1
    led.on_emitted(sample("a/0", 0, retry))
    dead = led.on_trajectory("a/0", 0, retry, "timeout", "slow")  # no kind (a v1 record): the agent's
    assert isinstance(dead, DeadLetter) and dead.kind == "agent"
    assert dead.reason.startswith("agent failure: rollout a/0/0 failed 2 time(s) (max_retries=1; 2 infra")
    assert "slow" in dead.reason
    assert led.groups["a/0"].failures == {0: (2, 2)}
    # infrastructure failures past their own budget are dead-lettered too, saying so
    for r in range(3):
        if r:
            led.on_emitted(sample("a/0", 1, r))
        act = led.on_trajectory("a/0", 1, r, "failed", "HTTP 500", "infrastructure")
    assert isinstance(act, DeadLetter) and act.kind == "infrastructure"
    assert act.reason.startswith("infrastructure failure: rollout a/0/1 failed 3 time(s)")
    assert "max_infra_retries=2" in act.reason


def test_a_request_failure_is_dead_lettered_at_once() -> None:
    """A call the inference service refuses deterministically (HTTP 400: prompt longer than the
    context) cannot succeed on a re-issue: no retry is spent on it."""
    led = new(max_retries=3)
    emit_group(led, "a/0")
    dead = led.on_trajectory("a/0", 0, 0, "failed", "HTTP 400: maximum context length", "request")
    assert isinstance(dead, DeadLetter) and dead.kind == "request"
    assert dead.reason.startswith("request failure: rollout a/0/0: the inference service refused a call")
    assert "not retried" in dead.reason and "maximum context length" in dead.reason
    led.on_dead_lettered("a/0", 0, 0)
    assert led.in_flight == 3 and led.pending_actions() == []


def test_a_late_success_of_a_failed_emission_counts_once_and_owes_no_reissue() -> None:
    """A redelivered sample: its first attempt failed, another attempt succeeded. Streams keeps the
    success, so the rollout waits for its outcome; the re-issue is no longer owed."""
    led = new(max_retries=2)
    emit_group(led, "a/0")
    assert isinstance(led.on_trajectory("a/0", 0, 0, "failed"), Reissue)
    assert led.on_trajectory("a/0", 0, 0, "succeeded") is None
    assert led.pending_actions() == [] and led.in_flight == 4 and led.duplicate_trajectories == 1
    # had the re-issue gone out, it runs; whatever it ends with, the rollout is held once
    led.on_emitted(sample("a/0", 0, 1))
    assert led.in_flight == 5
    assert led.on_trajectory("a/0", 0, 1, "failed") is None and led.in_flight == 4


def test_duplicate_and_unknown_records_change_nothing() -> None:
    led = new()
    emit_group(led, "a/0")
    assert not led.on_emitted(sample("a/0", 0))
    led.on_trajectory("a/0", 0, 0, "succeeded")
    before = led.in_flight
    assert led.on_trajectory("a/0", 0, 0, "failed") is None
    assert led.on_trajectory("zzz/0", 0, 0, "failed") is None
    assert led.on_trajectory("a/0", 1, 5, "succeeded") is None  # a retry never emitted
    led.on_outcome("zzz/0", "dropped", ["zzz/0/0"], None)
    led.on_outcome("a/0", "dropped", ["a/0/x", "b/0/1", "a/0/9"], None)
    assert led.in_flight == before and led.emitted_train == 4
    assert (led.duplicate_trajectories, led.unknown_trajectories, led.unknown_outcomes) == (1, 2, 4)


def test_recovery_replay_finds_owed_actions() -> None:
    """Replaying samples then trajectories: a failure whose re-issue is in samples owes nothing."""
    led = new(max_retries=2)
    led.on_emitted(sample("a/0", 0))
    led.on_emitted(sample("a/0", 1))
    led.on_emitted(sample("a/0", 0, 1))
    assert led.on_trajectory("a/0", 0, 0, "failed") is None  # its re-issue was already read back
    act = led.on_trajectory("a/0", 1, 0, "failed")
    assert isinstance(act, Reissue)
    assert led.pending_actions() == [act]


def test_finished_emissions_keep_no_sample() -> None:
    led = new()
    emit_group(led, "a/0")
    succeed(led, "a/0", (0, 1, 2))
    assert isinstance(led.on_trajectory("a/0", 3, 0, "failed"), Reissue)
    book = led.groups["a/0"]
    assert list(book.running) == [] and list(book.failed) == [(3, 0)]  # kept until re-issued
    led.on_emitted(sample("a/0", 3, 1))
    led.on_trajectory("a/0", 3, 1, "succeeded")
    assert not book.running and not book.failed and book.succeeded == 0b1111


def test_invalid_parameters_and_ids() -> None:
    with pytest.raises(ValueError, match="group_size"):
        Ledger(group_size=0, train_batch_size=1, max_staleness=0, max_retries=0)
    assert split_rollout_id("t1/0/3") == ("t1/0", 3)
    assert split_rollout_id("val/4/t1/0") == ("val/4/t1", 0)
    assert split_rollout_id("t1/0/x") is None and split_rollout_id("7") is None


# ---- whole runs against a model of streams and the trainer ----------------------------------------


class World:
    """Plays workers, streams and the trainer around a ledger, by the rules of those stages.

    Rollouts succeed or fail at random (a failed one is re-issued, then dead-lettered); now and then
    a redelivered sample's second attempt succeeds after its first failed. A group closes when each
    member succeeded or was dead-lettered; streams then drops it (zero variance / straggler), drops
    some members (incomplete join / no rows) and batches the rest, and drops a member that succeeds
    after its group closed as late; it may repeat a record (a crash). The trainer trains or
    dead-letters each batch. Every record goes into per-topic logs, so the run can be replayed in
    another interleaving.
    """

    def __init__(self, rng: random.Random, led: Ledger, *, groups: int) -> None:
        self.rng, self.led = rng, led
        self.todo = [
            sample(f"t{i}/0", k, size=led.group_size) for i in range(groups) for k in range(led.group_size)
        ]
        self.retry_queue: list = []
        self.running: list = []  # samples being run
        self.logs: dict[str, list] = {
            "samples": [],
            "trajectories": [],
            "outcomes": [],
            "checkpoints": [],
            "dlq": [],
        }
        self.succeeded: dict[str, set[int]] = {}
        self.dead: dict[str, set[int]] = {}
        self.closed: set[str] = set()
        self.batches: list[tuple[str, int]] = []  # (batch id, rollouts) waiting for the trainer
        self.version = self.consumed = self.n_batches = 0
        self.late_successes = 0  # successes after a failed first trajectory: F may pass the bound by these

    def step(self) -> bool:
        """One random event; False when nothing is left to do."""
        rng, led = self.rng, self.led
        choices = []
        if (self.retry_queue or self.todo) and led.can_admit():
            choices.append("emit")
        if self.running:
            choices += ["finish"] * 3
        if self.batches:
            choices.append("train")
        if not choices:
            return False
        what = rng.choice(choices)
        if what == "emit":
            s = (self.retry_queue or self.todo).pop(0)
            if s.retry and not led.owes_reissue(s.group_id, s.k, s.retry - 1):
                return True  # the rollout succeeded meanwhile: the sampler drops the re-issue
            assert led.on_emitted(s)
            self.logs["samples"].append(s)
            self.running.append(s)
        elif what == "finish":
            s = self.running.pop(rng.randrange(len(self.running)))
            ok = rng.random() < 0.7
            kind = None if ok else rng.choice(["agent", "request", "infrastructure", "infrastructure"])
            self.traj(s, "succeeded" if ok else "failed", kind)
            if rng.random() < 0.1:  # a redelivered sample: another attempt's trajectory
                if not ok and s.k not in self.succeeded.get(s.group_id, set()):
                    self.late_successes += 1
                self.traj(s, "succeeded")
        else:
            self.train()
        return True

    def traj(self, s, status: str, kind: str | None = None) -> None:
        led, gid = self.led, s.group_id
        self.logs["trajectories"].append((gid, s.k, s.retry, status, "boom", kind))
        act = led.on_trajectory(gid, s.k, s.retry, status, "boom", kind)
        if status == "succeeded" and s.k not in self.succeeded.setdefault(gid, set()):
            self.succeeded[gid].add(s.k)
            if gid in self.closed:
                self.outcome(gid, "dropped", [s.k])  # late
        if isinstance(act, Reissue):
            self.retry_queue.append(sample(gid, s.k, s.retry + 1, size=led.group_size))
        elif isinstance(act, DeadLetter):
            led.on_dead_lettered(gid, s.k, s.retry)
            self.dead.setdefault(gid, set()).add(s.k)
        self.maybe_close(gid)

    def maybe_close(self, gid: str) -> None:
        done = self.succeeded.get(gid, set()) | self.dead.get(gid, set())
        if gid in self.closed or len(done) < self.led.group_size:
            return
        self.closed.add(gid)
        ok = sorted(self.succeeded.get(gid, set()))
        if not ok:
            return
        rng = self.rng
        fate = rng.choice(["zero_variance", "straggler", "partial", "batched", "batched"])
        if fate in ("zero_variance", "straggler"):
            self.outcome(gid, "dropped", ok)
            return
        if fate == "partial" and len(ok) > 1:
            lost = ok[: rng.randint(1, len(ok) - 1)]
            self.outcome(gid, "dropped", lost)  # incomplete join / no rows
            ok = ok[len(lost) :]
        self.n_batches += 1
        bid = f"b{self.n_batches}"
        self.outcome(gid, "batched", ok, bid)
        if rng.random() < 0.2:
            self.outcome(gid, "batched", ok, bid)  # a streams crash repeats a record
        self.batches.append((bid, len(ok)))

    def outcome(self, gid: str, status: str, ks: list[int], bid: str | None = None) -> None:
        rec = (gid, status, rids(gid, ks), bid)
        self.logs["outcomes"].append(rec)
        self.led.on_outcome(*rec)

    def train(self) -> None:
        bid, n = self.batches.pop(0)
        if self.rng.random() < 0.2:
            self.logs["dlq"].append(bid)
            self.led.on_batch_dead_lettered(bid)
            return
        self.version += 1
        self.consumed += n
        self.logs["checkpoints"].append((self.version, self.consumed))
        self.led.on_checkpoint(self.version, self.consumed)


def replay(led_args: dict, logs: dict[str, list], rng: random.Random) -> Ledger:
    """Samples first (as recovery does), then the other topics interleaved at random, each in order."""
    led = Ledger(**led_args)
    for s in logs["samples"]:
        led.on_emitted(s)
    queues = {k: list(v) for k, v in logs.items() if k != "samples" and v}
    while queues:
        topic = rng.choice(sorted(queues))
        rec = queues[topic].pop(0)
        if not queues[topic]:
            del queues[topic]
        if topic == "trajectories":
            led.on_trajectory(*rec)
        elif topic == "outcomes":
            led.on_outcome(*rec)
        elif topic == "checkpoints":
            led.on_checkpoint(*rec)
        else:
            led.on_batch_dead_lettered(rec)
    return led


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2), st.integers(1, 4))
def test_a_run_with_every_kind_of_drop_ends_with_nothing_in_flight(seed: int, staleness: int, g: int) -> None:
    """Whole runs with failures, retries, dead letters, late successes, every kind of drop,
    repeated outcome records and dead-lettered batches: admission never passes the bound (but by a
    late success), never stalls while work is left, and ends with ``F == 0`` exactly (no leak, no
    over-release); a replay in another interleaving of the topics gives the same counts."""
    rng = random.Random(seed)
    args = {
        "group_size": g,
        "train_batch_size": 2,
        "max_staleness": staleness,
        "max_retries": 1,
        "max_infra_retries": 2,
    }
    led = Ledger(**args)
    world = World(rng, led, groups=12)
    for _ in range(10_000):
        if not world.step():
            break
        assert led.in_flight <= led.bound + world.late_successes
    assert not world.todo and not world.retry_queue and not world.running and not world.batches, "stalled"
    assert led.in_flight == 0 and led.open_rollouts == 0 and led.pending_actions() == []
    again = replay(args, world.logs, random.Random(seed + 1))
    for name in (
        "emitted_train",
        "running_train",
        "waiting_train",
        "consumed",
        "in_flight",
        "released_by_outcome",
    ):
        assert getattr(again, name) == getattr(led, name), name
    assert {g: b.failures for g, b in again.groups.items()} == {g: b.failures for g, b in led.groups.items()}


# ---- snapshots: prune, state round trip, replay of the tail ---------------------------------------

SNAPSHOT_COUNTS = (
    "version",
    "consumed",
    "in_flight",
    "running_train",
    "waiting_train",
    "released_by_outcome",
    "emitted_train",
    "open_rollouts",
)


def feed(led: Ledger, logs: dict[str, list], start: dict[str, int]) -> None:
    """Records of ``logs`` after ``start`` (per topic), samples first, as recovery reads them."""
    for s in logs["samples"][start["samples"] :]:
        led.on_emitted(s)
    for topic, handle in (
        ("trajectories", led.on_trajectory),
        ("outcomes", led.on_outcome),
        ("checkpoints", led.on_checkpoint),
        ("dlq", led.on_batch_dead_lettered),
    ):
        for rec in logs[topic][start[topic] :]:
            handle(rec) if topic == "dlq" else handle(*rec)
    for action in led.pending_actions():  # the sampler's own dead letters (World does not log them)
        if isinstance(action, DeadLetter):
            led.on_dead_lettered(action.group_id, action.k, action.retry)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2), st.integers(1, 4), st.floats(0.1, 0.9))
def test_a_pruned_snapshot_plus_the_tail_gives_the_counts_of_a_full_replay(
    seed: int, staleness: int, g: int, at: float
) -> None:
    import json

    args = {"group_size": g, "train_batch_size": 2, "max_staleness": staleness, "max_retries": 1}
    rng = random.Random(seed)
    world = World(rng, Ledger(**args), groups=12)
    steps = 0
    while world.step():
        steps += 1
    total = steps
    # the same run again, stopped at `at` of its steps for the snapshot
    rng = random.Random(seed)
    world = World(rng, Ledger(**args), groups=12)
    for _ in range(int(total * at)):
        world.step()
    led = world.led
    books = len(led.groups)
    pruned = led.prune()
    assert len(led.groups) == books - pruned
    state = json.loads(json.dumps(led.to_state(vars)))  # through JSON, as the snapshot stores it
    start = {topic: len(log) for topic, log in world.logs.items()}
    while world.step():
        pass
    restored = Ledger(**args)
    restored.from_state(state, lambda d: SimpleNamespace(**d))
    feed(restored, world.logs, start)
    full = Ledger(**args)
    feed(full, world.logs, dict.fromkeys(start, 0))
    for name in SNAPSHOT_COUNTS:
        assert getattr(restored, name) == getattr(full, name), name
    assert restored.in_flight == world.led.in_flight == 0 and restored.open_rollouts == 0


def test_prune_keeps_open_and_undecided_groups_and_what_keep_says() -> None:
    led = new()
    for g in ("a/0", "b/0", "c/0", "val/2/t"):
        for k in range(4):
            led.on_emitted(sample(g, k, mode="val" if g.startswith("val") else "train"))
    succeed(led, "a/0")
    led.on_outcome("a/0", "batched", rids("a/0", range(4)), "b1")  # finished
    succeed(led, "b/0")  # succeeded, not decided yet
    succeed(led, "c/0", [0, 1, 2])  # one running
    succeed(led, "val/2/t")
    assert led.prune(keep=lambda gid, book: gid.startswith("val/")) == 1
    assert sorted(led.groups) == ["b/0", "c/0", "val/2/t"]
    assert led.prune() == 1 and sorted(led.groups) == ["b/0", "c/0"]
    # a late record of a pruned group is unknown and changes no count
    before = (led.in_flight, led.running_train, led.waiting_train)
    assert led.on_trajectory("a/0", 1, 0, "succeeded") is None
    led.on_outcome("a/0", "dropped", rids("a/0", [1]), None)
    assert (led.in_flight, led.running_train, led.waiting_train) == before
    assert led.unknown_trajectories == 1 and led.unknown_outcomes == 1


def test_from_state_refuses_a_malformed_state_and_changes_nothing() -> None:
    led = new()
    emit_group(led, "a/0")
    state = led.to_state(vars)
    del state["groups"]["a/0"]["latest"]
    other = new()
    with pytest.raises(KeyError):
        other.from_state(state, lambda d: SimpleNamespace(**d))
    assert other.groups == {} and other.running_train == 0
