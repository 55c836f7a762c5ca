"""RunStats: val means per version from streams' ValidationResult records, completeness, distinct answers, rates."""

from __future__ import annotations

from streamrl.dev.stats import RunStats
from streamrl.schemas import CheckpointEvent, Mode, RolloutStatus, Split, ValidationResult
from tests.support import records as ex


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _val_traj(version: int, task: str, reward: float | None, request_id: str, ok: bool = True):
    base = ex.trajectory(1)
    return base.model_copy(
        update={
            "rollout_id": f"val/{version}/{task}/0",
            "group_id": f"val/{version}/{task}",
            "task_id": task,
            "mode": Mode.val,
            "policy_version": version,
            "status": RolloutStatus.succeeded if ok else RolloutStatus.failed,
            "reward": reward if ok else None,
            "request_ids": [request_id],
        }
    )


def _req(rollout_id: str, request_id: str, response: list[int], version: int = 0):
    return ex.llm_request(0, 4, 1).model_copy(
        update={
            "rollout_id": rollout_id,
            "request_id": request_id,
            "response_token_ids": response,
            "policy_version": version,
        }
    )


def _stats_with_val_tasks(n: int) -> RunStats:
    s = RunStats(clock=Clock())
    for i in range(n):
        s.on_task(ex.task(i).model_copy(update={"task_id": f"v{i}", "split": Split.val}))
    s.on_task(ex.task(99))
    return s


def _val_result(version: int, count: int, mean: float, failed: int = 0):
    return ValidationResult(
        policy_name="policy", policy_version=version, count=count, succeeded=count - failed, failed=failed,
        timed_out=0, mean=mean, std=0.0 if mean in (0.0, 1.0) else 0.5, min=0.0 if failed or mean < 1 else 1.0, max=1.0,
    )  # fmt: skip


def test_val_means_are_streams_records_for_complete_versions_only() -> None:
    s = _stats_with_val_tasks(3)
    assert s.val_expected == 3 and s.train_tasks == {"gsm8k-00099"}
    for i, r in enumerate([1.0, 0.0, 1.0]):
        s.on_trajectory(_val_traj(0, f"v{i}", r, f"r0-{i}"))
    assert s.val_means() == {}  # trajectories alone: the reward is streams' to compute, not dev's
    s.on_validation(_val_result(0, 3, 2 / 3))
    s.on_validation(_val_result(2, 2, 0.5, failed=1))
    assert s.val_means() == {0: 2 / 3} and not s.val_complete(2)
    s.on_validation(_val_result(2, 3, 2 / 3, failed=1))
    assert s.val_means() == {0: 2 / 3, 2: 2 / 3}
    s.on_validation(_val_result(2, 3, 1.0))  # a re-issued rollout succeeded: the record is updated
    assert s.val_means()[2] == 1.0
    s.on_validation(_val_result(2, 2, 0.5))  # an older figure never replaces a newer one
    assert s.val_means()[2] == 1.0
    assert s.summary(1.0)["val_reward"] == {"0": 0.6667, "2": 1.0}


def test_distinct_answers_from_the_last_call_of_each_val_rollout() -> None:
    s = _stats_with_val_tasks(4)
    answers = [[57], [57], [58], [57]]
    for i, resp in enumerate(answers):
        s.on_request(_req(f"val/3/v{i}/0", f"q{i}", resp, version=3))
        s.on_trajectory(_val_traj(3, f"v{i}", 1.0, f"q{i}"))
    s.on_request(_req("t/0/0", "train-call", [99]))  # train calls are not kept
    assert "train-call" not in s.val_responses
    assert s.answers(3) == {(57,): 3, (58,): 1}
    s.on_validation(_val_result(3, 4, 1.0))  # version 3's validation is complete
    summary = s.summary(12.0, decode=lambda ids: "".join(chr(i) for i in ids))
    assert summary["distinct_answers_last"] == 2
    assert summary["top_answers_last"] == [["9", 3], [":", 1]]
    assert summary["reward_first"] == summary["reward_last"] == 1.0
    assert summary["version_first"] == summary["version_last"] == 3
    assert summary["served_version_max"] == 3


def test_train_reward_per_sample_version_and_missing_trajectories() -> None:
    s = RunStats(clock=Clock())
    for k in range(3):
        smp = ex.sample(k).model_copy(update={"rollout_id": f"t/0/{k}"})
        s.on_sample(smp)
    for k, (reward, version) in enumerate([(1.0, 0), (0.0, 0)]):
        t = ex.trajectory(k).model_copy(
            update={"rollout_id": f"t/0/{k}", "reward": reward, "policy_version": version}
        )
        s.on_trajectory(t)
    failed = ex.trajectory(5).model_copy(
        update={"rollout_id": "t/0/0", "status": RolloutStatus.failed, "reward": None}
    )
    s.on_trajectory(failed)
    assert s.train_means() == {0: 0.5}
    assert s.missing_trajectories() == {"t/0/2"}
    assert s.status == {"succeeded": 2, "failed": 1}
    summary = s.summary(1.0)
    assert summary["rollouts"] == 3 and summary["samples"] == 3 and summary["missing_trajectories"] == 1
    assert summary["reward_first"] is None and summary["distinct_answers_last"] is None


def test_version_and_rate_window() -> None:
    clock = Clock()
    s = RunStats(clock=clock, rate_window_s=10.0)
    assert s.version == 0
    ev = CheckpointEvent(
        policy_name="policy", version=4, kind="full", uri="/tmp/x", digest="sha256:" + "0" * 64,
        base_model=None, metrics={}, last_batch_id=None, last_batch_offset=None, created_at=ex.task(0).created_at,
    )  # fmt: skip
    s.on_checkpoint(ev)
    assert s.version == 4
    for _ in range(20):
        s.on_trajectory(ex.trajectory(0))
    assert s.rollouts_per_s() == 2.0
    clock.t += 11
    assert s.rollouts_per_s() == 0.0
    assert s.last_progress == 1000.0


def test_group_outcomes_are_counted_by_status_and_reason() -> None:
    from streamrl.schemas import GroupOutcome

    stats = RunStats()
    stats.on_group_outcome(
        GroupOutcome(group_id="t1/0", status="batched", batch_id="b-1", rollout_ids=["t1/0/0"])
    )
    for gid in ("t2/0", "t3/0"):
        stats.on_group_outcome(
            GroupOutcome(group_id=gid, status="dropped", reason="zero_variance", rollout_ids=[f"{gid}/0"])
        )
    assert stats.group_outcomes == {"batched": 1, "dropped:zero_variance": 2}


def test_val_target_reached_reports_the_first_complete_version_at_or_above_it_and_when() -> None:
    s = _stats_with_val_tasks(2)
    clock = s.clock
    s.started_at, s.val_target = 1000.0, 0.9
    clock.t = 1010.0  # type: ignore[attr-defined]
    s.on_validation(_val_result(0, 2, 0.0))
    clock.t = 1030.0  # type: ignore[attr-defined]
    s.on_validation(_val_result(10, 1, 1.0))  # partial: not a validation yet
    assert s.target_reached() is None
    clock.t = 1042.5  # type: ignore[attr-defined]
    s.on_validation(_val_result(10, 2, 1.0))
    clock.t = 1050.0  # type: ignore[attr-defined]
    s.on_validation(_val_result(20, 2, 1.0))
    assert s.target_reached() == {"target": 0.9, "version": 10, "val": 1.0, "wall_s": 42.5}
    summary = s.summary(60.0)
    assert summary["val_wall_s"] == {"0": 10.0, "10": 42.5, "20": 50.0}
    assert summary["val_target_reached"]["version"] == 10  # type: ignore[index]
    s.val_target = None
    assert s.target_reached() is None


def test_attempts_the_runs_stop_cut_short_count_as_interrupted_not_failed() -> None:
    from datetime import timedelta

    from streamrl.schemas import FailureKind, utc_now

    s = RunStats(clock=Clock())
    stop = utc_now()

    def traj(status: RolloutStatus, kind: FailureKind | None, after_s: float):
        return ex.trajectory(1).model_copy(
            update={
                "status": status,
                "reward": 1.0 if kind is None else None,
                "failure_kind": None if kind is None else kind.value,
                "finished_at": stop + timedelta(seconds=after_s),
            }
        )

    infra_before = traj(RolloutStatus.failed, FailureKind.infrastructure, -1)
    s.on_trajectory(infra_before)  # while the run goes on: a failure
    s.stopping_since = stop
    s.on_trajectory(traj(RolloutStatus.succeeded, None, 1))
    s.on_trajectory(traj(RolloutStatus.timeout, FailureKind.infrastructure, 0))  # the worker shut down
    s.on_trajectory(traj(RolloutStatus.failed, FailureKind.infrastructure, 2))  # could not start it
    s.on_trajectory(traj(RolloutStatus.failed, FailureKind.agent, 1))  # the task's own failure
    s.on_trajectory(infra_before)  # read after the stop began, finished before it
    assert s.summary(1.0)["status"] == {"failed": 3, "succeeded": 1, "interrupted": 2}


def test_startup_milestones_are_seconds_from_the_start_in_time_order_first_time_only() -> None:
    clock = Clock()
    s = RunStats(clock=clock, started_at=clock.t, started_unix=1.7e9)
    clock.t += 5.0
    s.mark("broker_ready")
    clock.t += 2.5
    s.on_checkpoint(ex.checkpoint_event(1))  # a checkpoint before the first trajectory still counts first
    clock.t += 1.0
    s.on_trajectory(ex.trajectory(1))
    s.mark("broker_ready")  # a second time changes nothing
    clock.t += 1.0
    s.on_trajectory(ex.trajectory(2))
    s.on_checkpoint(ex.checkpoint_event(2))
    summary = s.summary(wall_s=10.0)
    assert list(summary["startup_s"].items()) == [
        ("broker_ready", 5.0),
        ("first_checkpoint", 7.5),
        ("first_trajectory", 8.5),
    ]
    assert summary["started_unix"] == 1.7e9


def test_only_open_rollouts_are_kept_whatever_the_order_of_the_topics() -> None:
    clock = Clock()
    s = RunStats(clock=clock)

    def sample(rid: str, retry: int = 0):
        return ex.sample(0).model_copy(update={"rollout_id": rid, "retry": retry})

    def traj(rid: str, ok: bool = True):
        return ex.trajectory(0).model_copy(
            update={"rollout_id": rid, "status": RolloutStatus.succeeded if ok else RolloutStatus.failed}
        )

    for k in range(5000):  # a long run: nothing per finished rollout stays
        s.on_sample(sample(f"t/{k}/0"))
        s.on_trajectory(traj(f"t/{k}/0"))
    assert s.samples == 5000 and s._open == {} and s._ahead_since == {}
    s.on_sample(sample("t/x/0"))
    s.on_trajectory(traj("t/x/0", ok=False))
    s.on_sample(sample("t/x/0", retry=1))  # re-issued: in flight again, not a new sample
    assert s.missing_trajectories() == {"t/x/0"} and s.samples == 5001
    s.on_trajectory(traj("t/x/0"))
    assert s.missing_trajectories() == set() and s._open == {}
    # streamrl status reads each topic whole: both trajectories of a re-issued rollout, then its samples
    s.on_trajectory(traj("t/y/0", ok=False))
    s.on_trajectory(traj("t/y/0"))
    assert s.missing_trajectories() == set()
    s.on_sample(sample("t/y/0"))
    s.on_sample(sample("t/y/0", retry=1))
    assert s.missing_trajectories() == set() and s._open == {}
    s.on_sample(sample("t/z/0"))
    s.on_trajectory(traj("t/z/0"))
    s.on_trajectory(traj("t/z/0"))  # a duplicate trajectory waits for a sample that never comes
    assert s._open == {"t/z/0": -1} and s.missing_trajectories() == set()
    clock.t += 601
    for k in range(65):
        s.on_trajectory(traj(f"t/e{k}/0"))
    assert "t/z/0" not in s._open and len(s._open) == 65


def test_a_re_sent_batch_or_group_outcome_counts_once() -> None:
    from streamrl.schemas import GroupOutcome, GroupOutcomeStatus

    s = RunStats(clock=Clock())
    for batch_id in ("b1", "b2", "b1"):  # b1 re-sent by a restarted streams
        s.on_batch(batch_id)
    assert s.batches == 2
    batched = GroupOutcome(
        group_id="g", status=GroupOutcomeStatus.batched, batch_id="b1", rollout_ids=["g/0", "g/1"]
    )
    lost = GroupOutcome(
        group_id="g", status=GroupOutcomeStatus.dropped, reason="incomplete_join", rollout_ids=["g/2"]
    )
    for o in (batched, lost, batched, lost):
        s.on_group_outcome(o)
    assert s.group_outcomes == {"batched": 1, "dropped:incomplete_join": 1}


def test_answers_are_kept_for_the_newest_validated_versions_only() -> None:
    s = _stats_with_val_tasks(2)
    for version in range(40):
        for i in range(2):
            s.on_request(_req(f"val/{version}/v{i}/0", f"q{version}-{i}-first", [1], version=version))
            s.on_request(_req(f"val/{version}/v{i}/0", f"q{version}-{i}", [50 + i], version=version))
            s.on_trajectory(_val_traj(version, f"v{i}", 1.0, f"q{version}-{i}"))
        s.on_validation(_val_result(version, 2, 1.0))
    assert sorted(s.val_answers) == list(range(24, 40))
    assert s.answers(39) == {(50,): 1, (51,): 1} and s.answers(3) == {}
    assert len(s.val_responses) <= 16 * 2 + 8 * 2  # the answers kept, and a bounded rest
    assert s.summary(1.0)["distinct_answers_last"] == 2


def test_dead_letters_are_counted_by_stage_and_kind_with_the_last_reasons() -> None:
    s = RunStats(clock=Clock())
    for i in range(7):
        s.on_dead_letter("trainer", "BadBatchError", f"batch {i}: " + "x" * 400)
    s.on_dead_letter("streams", "incomplete_join", "g/0: calls missing")
    summary = s.summary(1.0)
    assert summary["dead_letters"] == {"trainer BadBatchError": 7, "streams incomplete_join": 1}
    reasons = summary["dead_letter_reasons"]
    assert len(reasons) == 5 and reasons[-1] == "g/0: calls missing"
    assert reasons[0].startswith("batch 3: ") and len(reasons[0]) == 300 and reasons[0].endswith("…")
