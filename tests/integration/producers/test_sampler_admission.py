"""The sampler on the real broker: group fan-out, epochs, the in-flight bound at every moment, retries."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from streamrl.producers.plan import epoch_order
from streamrl.producers.publish import publish_file
from streamrl.producers.sampler import Sampler
from streamrl.schemas import DeadLetter, Mode, Sample
from streamrl.schemas.serde import Serde
from tests.support.kafka import read_topic

pytestmark = pytest.mark.integration


def start(settings) -> tuple[Sampler, threading.Event, threading.Thread, list[BaseException]]:
    sampler, stop, errors = Sampler(settings), threading.Event(), []

    def main() -> None:
        try:
            sampler.run(stop)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
        finally:
            sampler.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return sampler, stop, thread, errors


@pytest.mark.parametrize("max_staleness", [1, 0])
def test_in_flight_bound_holds_at_every_moment(
    settings_factory, trainer_sim, tmp_path, max_staleness: int
) -> None:
    s = settings_factory(
        rl={"group_size": 4, "train_batch_size": 2, "max_staleness": max_staleness, "seed": 3},
        sampler={"max_epochs": 2, "max_retries": 2, "poll_interval_s": 0.05, "flush_interval_s": 0.1},
    )
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "q": i}) + "\n" for i in range(6)))
    assert publish_file(s, data, id_field="id").published == 6
    sim = trainer_sim(s, fail={("t2/0/1", 0), ("t4/1/3", 0), ("t4/1/3", 1)})
    sampler, stop, thread, errors = start(s)
    bound = (max_staleness + 1) * 2 * 4
    total_train = 6 * 4 * 2 + 3  # two epochs of 6 tasks x 4, plus 3 re-issues
    try:
        deadline = time.monotonic() + 90
        while thread.is_alive() and time.monotonic() < deadline:
            # the sampler must fill the bound exactly (unless the work is all emitted), and never pass it:
            # every sample read is checked, and a short quiet read after filling catches any extra one
            sim.drain_until(lambda: sim.in_flight == bound or sim.emitted >= total_train, timeout_s=30)
            sim.drain(quiet_s=0.3)
            assert sim.in_flight == bound or sim.emitted >= total_train
            sim.answer()
        assert not errors, errors
        assert not thread.is_alive(), "sampler did not finish"
    finally:
        stop.set()
        thread.join(10)
    sim.drain(quiet_s=0.3)
    assert sim.max_in_flight == bound and sim.checks == total_train
    assert sampler.done and sim.version == 6
    # the sampler may exit before it reads the last checkpoint: everything else is released or consumed
    assert sampler.ledger.in_flight == (sim.version - sampler.ledger.version) * sim.per_version
    train = [x for x in sim.samples if x.mode is Mode.train]
    firsts = [x for x in train if x.retry == 0]
    # group fan-out: every (task, epoch, k) exactly once at retry 0, ids per the contract
    assert Counter((x.task_id, x.epoch, x.k) for x in firsts) == {
        (f"t{i}", e, k): 1 for i in range(6) for e in (0, 1) for k in range(4)
    }
    assert all(
        x.rollout_id == f"{x.task_id}/{x.epoch}/{x.k}" and x.group_id == f"{x.task_id}/{x.epoch}"
        for x in train
    )
    # epochs in order, each in its seeded shuffled order (samples spread over partitions, so compare
    # creation times: ms resolution, ties allowed)
    first_at = {}
    for x in firsts:
        first_at[(x.epoch, x.task_id)] = min(first_at.get((x.epoch, x.task_id), x.created_at), x.created_at)
    expected = [(e, t) for e in (0, 1) for t in epoch_order([f"t{i}" for i in range(6)], e, seed=3)]
    times = [first_at[key] for key in expected]
    assert times == sorted(times), "tasks were not fanned out in the seeded epoch order"
    assert epoch_order([f"t{i}" for i in range(6)], 0, seed=3) != epoch_order(
        [f"t{i}" for i in range(6)], 1, seed=3
    )
    # re-issues: same rollout id, retry + 1
    assert sorted((x.rollout_id, x.retry) for x in train if x.retry > 0) == [
        ("t2/0/1", 1),
        ("t4/1/3", 1),
        ("t4/1/3", 2),
    ]


def test_dropped_groups_release_capacity_so_the_sampler_never_stalls(
    settings_factory, trainer_sim, tmp_path
) -> None:
    """Streams drops groups (here as zero-variance) and says so in ``group_outcomes``; the trainer
    never consumes them. With ``max_staleness=0`` the first batch fills the bound; its two groups are
    dropped here, so no checkpoint ever comes: the sampler must release them from the outcomes, and
    keep the bound at every sample (a dropped group's member also fails once: its re-issue completes
    the group)."""
    s = settings_factory(
        rl={"group_size": 4, "train_batch_size": 2, "max_staleness": 0, "seed": 5},
        sampler={"max_epochs": 1, "max_retries": 1, "poll_interval_s": 0.05, "flush_interval_s": 0.1},
    )
    tasks = [f"t{i}" for i in range(8)]
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"id": t, "q": t}) + "\n" for t in tasks))
    assert publish_file(s, data, id_field="id").published == 8
    order = epoch_order(tasks, 0, seed=5)
    zero_variance = {f"{t}/0" for t in (order[0], order[1], order[4], order[7])}
    sim = trainer_sim(s, fail={(f"{order[0]}/0/1", 0)}, zero_variance=zero_variance)
    sampler, stop, thread, errors = start(s)
    bound, total_train = 8, 8 * 4 + 1
    try:
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            sim.drain_until(lambda: sim.in_flight == bound or sim.emitted >= total_train, timeout_s=20)
            sim.drain(quiet_s=0.3)
            assert sim.in_flight == bound or sim.emitted >= total_train
            sim.answer()
        assert not errors, errors
        assert not thread.is_alive(), "sampler did not finish"
    finally:
        stop.set()
        thread.join(10)
    sim.drain(quiet_s=0.3)
    assert sim.max_in_flight == bound and sim.checks == total_train and sim.dropped == 16
    assert sim.version == 2  # only the 4 groups with reward variance train
    # the sampler is done once every rollout has finished, and may exit before it reads the outcome of
    # the last dropped group (written just after its trajectories): nothing waits on that release. Every
    # earlier dropped group must have been released (else the sampler would have stalled at the bound)
    unread = [
        g for g in zero_variance if sampler.ledger.groups.get(g) and not sampler.ledger.groups[g].decided
    ]
    assert sampler.done and len(unread) <= 1, unread
    assert sampler.ledger.released_by_outcome == 16 - 4 * len(unread)
    # in flight: what the trainer's versions did not release yet, and the unread group's 4 samples
    untrained = (sim.version - sampler.ledger.version) * sim.per_version
    assert sampler.ledger.in_flight == untrained + 4 * len(unread)
    train = [x for x in sim.samples if x.mode is Mode.train]
    assert sorted((x.rollout_id, x.retry) for x in train if x.retry > 0) == [(f"{order[0]}/0/1", 1)]


def test_retries_exhausted_go_to_dlq_and_validation_runs_every_n_versions(
    settings_factory, trainer_sim, tmp_path
) -> None:
    s = settings_factory(
        rl={"group_size": 2, "train_batch_size": 1, "max_staleness": 0},
        sampler={
            "max_epochs": 1,
            "max_retries": 1,
            "val_every": 2,
            "val_samples_per_task": 2,
            "poll_interval_s": 0.05,
            "flush_interval_s": 0.1,
            "retry_backoff_s": 0.05,
        },
    )
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps({"id": f"t{i}", "q": i}) + "\n" for i in range(3)))
    val.write_text("".join(json.dumps({"id": f"v{i}", "q": i}) + "\n" for i in range(2)))
    publish_file(s, train, id_field="id")
    publish_file(s, val, id_field="id", split="val")
    # t1/0/0: two infrastructure failures (spend no retries), then two of its own (max_retries=1)
    sim = trainer_sim(
        s, infra={("t1/0/0", 0), ("t1/0/0", 1)}, fail={("t1/0/0", 2), ("t1/0/0", 3)}, dead={"t1/0"}
    )
    sampler, stop, thread, errors = start(s)
    try:
        deadline = time.monotonic() + 60
        sim.drain(quiet_s=0.5, first_s=20)
        while thread.is_alive() and time.monotonic() < deadline:
            sim.drain(quiet_s=0.5)
            sim.answer()  # t1/0/0 is dead-lettered: streams drops t1/0/1 as a straggler, and the
            # sampler must release it without a checkpoint, or it would stall here (max_staleness=0)
        assert not errors, errors
        assert not thread.is_alive(), "sampler did not finish"
    finally:
        stop.set()
        thread.join(10)
    dead = read_topic(s, "dlq", DeadLetter)
    assert (
        len(dead) == 1 and dead[0].stage == "sampler" and dead[0].original_topic == s.topics.name("samples")
    )
    assert dead[0].reason.startswith("agent failure: rollout t1/0/0 failed 2 time(s) (max_retries=1; 2 infra")
    assert "injected failure" in dead[0].reason and dead[0].error_type == "agent_failure"
    assert Serde().decode(dead[0].original_value, Sample).retry == 3
    vals = [x for x in sim.samples if x.mode is Mode.val]
    by_version = Counter(x.policy_version for x in vals)
    assert set(by_version) >= {0, 2} and all(
        n == 4 for n in by_version.values()
    )  # 2 tasks x 2 samples, once per version
    assert all(v % 2 == 0 for v in by_version)
    assert sim.version == 2  # t0 and t2 trained; t1's group never did
    assert sampler.ledger.released_by_outcome == 1
    assert sampler.ledger.in_flight == (sim.version - sampler.ledger.version) * sim.per_version
    assert {x.rollout_id for x in vals if x.policy_version == 2} == {
        f"val/2/v{i}/{k}" for i in range(2) for k in range(2)
    }
