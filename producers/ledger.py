"""The sampler's bookkeeping: every emission, its outcome, and the admission (staleness) bound.

Pure logic, no Kafka: the sampler feeds it what it emits and what it reads from ``trajectories``
and ``checkpoints``, live or while replaying the topics after a restart.

What is counted (train samples only; val samples never reach the trainer and are not bounded):

- **emitted** ``E``: train sample *emissions*; a re-issue after a failure (``retry + 1``) is a new
  emission.
- **released** ``R``: emissions that will never reach the trainer, each counted once:

  * those whose trajectory is ``failed``/``timeout`` (re-issued or dead-lettered);
  * every member of a *dead group* (a group with a dead-lettered member: streams never completes it,
    so its succeeded members are released too), once it has a final outcome (running members and
    any emitted after the group died are released when their trajectory arrives, so a replay that
    learns of the death after every sample gives the same count);
  * every member of a *zero-variance group*, when ``filter_zero_variance`` is on (it mirrors
    ``streams.filter_zero_variance``; both stages read the same config): a train group whose
    ``group_size`` rollouts (``group_size >= 2``) each have a latest emission whose first final
    trajectory is ``succeeded``, with rewards all equal by streams' rule (:func:`is_zero_variance`
    over :func:`streams_reward`, the comparison of ``streams/groups.py``). Streams drops such a
    group before batching, so it is never consumed; without this release it would hold admission
    capacity for ever and stall the pipeline. Emissions of the group recorded later (none in normal
    operation) are released too.
- **consumed** ``C = v × train_batch_size × group_size``: what the trainer has trained, from the
  latest ``checkpoints`` version ``v`` of ``rl.policy_name`` (version = step = batches trained).
- **in flight** ``F = E − R − C``: admitted samples the trainer has not consumed yet (queued,
  running, or completed and waiting to be batched).

Admission: a train sample is emitted only while ``F < (max_staleness + 1) × train_batch_size ×
group_size`` (the bound of DESIGN.md / AReaL's ``(η + 1) × B``), so ``F`` never exceeds the bound:
with ``max_staleness = 0`` the sampler emits one batch, then waits for the trainer's next version.

Every count depends only on the set of records read (each emission's outcome is its first final
trajectory, and trajectories of one rollout share a partition), so replaying the topics after a
restart gives the same ``E``, ``R`` and ``C``.

Known limits: the sampler sees ``samples``, ``trajectories`` and ``checkpoints`` only, not what
streams decides at group close, so these cases are not mirrored:

- *Leaks* (samples never consumed nor released: they hold capacity for good, a restart replays the
  same counts; enough of them stall admission): a group streams drops as a straggler (fewer than
  ``streams.min_group_size`` complete rollouts after ``straggler_timeout_s``: e.g. a rollout whose
  join timed out (``incomplete_join`` to ``dlq``, the sampler saw it ``succeeded``), a rollout whose
  rows were invalid, the rest of a task deleted mid-epoch); a group that becomes empty or
  zero-variance only after streams drops stale rows (``streams.staleness: drop``, judged against
  streams' latest version at close time, unknown here); a group closed by the straggler timeout
  whose early subset is zero-variance while the full group is not (the late members are ignored).
  Mirroring them would need streams' ``dlq`` records and its close-time decisions (event-time
  ticks, its version at close); e.g. after an incomplete join the group may still be trained
  partial (then ``C`` already counts the lost member, and releasing it would count it twice) or be
  dropped (then every member leaks), which the sampler cannot tell apart.
- *Over-releases* (``F`` under-counts, so up to that many samples more than the bound may be
  admitted; never a stall): a zero-variance group of which streams keeps exactly one rollout (the
  others stale, row-less, or lost to a join timeout) and trains it with ``min_group_size <= 1``;
  a dead group that streams had already trained as a straggler partial group; a batch emitted
  partial after ``batch_timeout_s`` (``C`` counts ``train_batch_size`` groups per version).
- Exact already: a group streams trains partial after ``straggler_timeout_s`` counts as
  ``group_size`` consumed samples in ``C``, so its late members (ignored by streams) balance, and
  a re-issued late member's failed emission is released as usual. A zero-variance group that
  streams closes early, or thins by stale rows or lost joins, is still dropped (any two survivors
  are still equal; none left is dropped as empty), except the one-survivor case above.
- Outcome mismatch: streams takes the first *succeeded, fully joined attempt* of a rollout, the
  ledger the first final trajectory of each emission; they differ only when one emission runs
  several attempts with different outcomes or rewards (a redelivered sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

ZERO_VARIANCE_TOLERANCE = 1e-12
"""Rewards within this of each other are "all equal": the tolerance of ``GroupMachine._close`` in
``streams/groups.py`` (``max(rewards) - min(rewards) <= 1e-12``)."""


def streams_reward(reward: float | None) -> float:
    """The reward streams groups a rollout by: ``float(reward or 0.0)`` (``streams/join.py``), so a
    succeeded trajectory without a reward counts as 0.0."""
    return float(reward or 0.0)


def is_zero_variance(rewards: list[float]) -> bool:
    """Streams' zero-variance rule (``streams/groups.py`` ``GroupMachine._close``): at least two
    rewards and ``max − min <= ZERO_VARIANCE_TOLERANCE``. Rewards are finite (the ``Trajectory``
    schema rejects NaN/inf), so the order of ``rewards`` does not matter."""
    return len(rewards) >= 2 and max(rewards) - min(rewards) <= ZERO_VARIANCE_TOLERANCE


class EmissionState(str, Enum):
    """Lifecycle of one emission ``(rollout_id, retry)``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass
class Emission:
    """One emitted sample ``(rollout_id, retry)`` and what became of it.

    Attributes:
        rollout_id, retry, group_id, mode: as in the ``Sample`` record.
        sample: the emitted record itself (opaque here; the sampler re-issues and dead-letters it).
        state: running until its first final trajectory arrives.
        released: counted in ``R`` (never twice).
        error: the error of the first final trajectory, if it failed.
        reward: the ``reward`` of the first final trajectory, if it succeeded (None = no reward).
    """

    rollout_id: str
    retry: int
    group_id: str
    mode: str
    sample: Any = None
    state: EmissionState = EmissionState.RUNNING
    released: bool = False
    error: str | None = None
    reward: float | None = None


@dataclass(frozen=True)
class Reissue:
    """Action: emit ``emission.sample`` again with ``retry = emission.retry + 1``."""

    emission: Emission


@dataclass(frozen=True)
class DeadLetter:
    """Action: send ``emission.sample`` to ``dlq`` with ``reason``; its group is dead."""

    emission: Emission
    reason: str


Action = Reissue | DeadLetter


class Ledger:
    """Emissions, outcomes and the admission bound of one sampler.

    Args:
        group_size: samples per train group (``rl.group_size``).
        train_batch_size: groups per trainer step (``rl.train_batch_size``).
        max_staleness: ``rl.max_staleness`` (η).
        max_retries: re-issues allowed after a failed/timeout trajectory (``sampler.max_retries``).
        filter_zero_variance: release zero-variance train groups (``streams.filter_zero_variance``;
            must match what streams runs with, see the module docstring).

    Raises:
        ValueError: a parameter out of range.
    """

    def __init__(
        self,
        *,
        group_size: int,
        train_batch_size: int,
        max_staleness: int,
        max_retries: int,
        filter_zero_variance: bool,
    ) -> None:
        if group_size < 1 or train_batch_size < 1 or max_staleness < 0 or max_retries < 0:
            raise ValueError(
                f"Ledger: need group_size>=1, train_batch_size>=1, max_staleness>=0, max_retries>=0; got "
                f"{group_size}, {train_batch_size}, {max_staleness}, {max_retries}"
            )
        self.group_size = group_size
        self.train_batch_size = train_batch_size
        self.max_staleness = max_staleness
        self.max_retries = max_retries
        self.filter_zero_variance = filter_zero_variance
        self.version = 0
        self.emitted_train = 0
        self.released_train = 0
        self._emissions: dict[tuple[str, int], Emission] = {}
        self._latest_retry: dict[str, int] = {}
        self._group_members: dict[str, list[Emission]] = {}
        self._dead_groups: set[str] = set()
        self._zero_variance_groups: set[str] = set()
        self._open: set[str] = set()  # rollout ids whose latest emission has no final outcome
        self._pending: set[tuple[str, int]] = set()  # failed emissions whose action is not done yet
        self.unknown_trajectories = 0
        self.duplicate_trajectories = 0

    # ---- the bound ------------------------------------------------------------------------------
    @property
    def bound(self) -> int:
        """``(max_staleness + 1) × train_batch_size × group_size`` samples."""
        return (self.max_staleness + 1) * self.train_batch_size * self.group_size

    @property
    def consumed(self) -> int:
        """``C = version × train_batch_size × group_size`` samples trained."""
        return self.version * self.train_batch_size * self.group_size

    @property
    def in_flight(self) -> int:
        """``F = E − R − C`` (may be negative if the trainer consumed samples of a previous run)."""
        return self.emitted_train - self.released_train - self.consumed

    def can_admit(self, n: int = 1) -> bool:
        """Whether ``n`` more train samples fit under the bound."""
        return self.in_flight + n <= self.bound

    # ---- inputs ---------------------------------------------------------------------------------
    def on_checkpoint(self, version: int) -> bool:
        """A ``checkpoints`` event of our policy; returns whether the version moved forward."""
        if version > self.version:
            self.version = version
            return True
        return False

    def on_emitted(self, rollout_id: str, retry: int, group_id: str, mode: str, sample: Any = None) -> bool:
        """Record an emission (ours now, or one read back from ``samples``).

        Returns:
            False if ``(rollout_id, retry)`` was already recorded (a duplicate in ``samples``), else True.
        """
        key = (rollout_id, retry)
        if key in self._emissions:
            return False
        em = Emission(rollout_id, retry, group_id, mode, sample)
        self._emissions[key] = em
        self._group_members.setdefault(group_id, []).append(em)
        if mode == "train":
            self.emitted_train += 1
        prev = self._latest_retry.get(rollout_id, -1)
        if retry > prev:
            self._latest_retry[rollout_id] = retry
            self._pending.discard((rollout_id, prev))
            self._open.add(rollout_id)
        if group_id in self._zero_variance_groups:
            self._release(em)
        # an emission into a dead group is released when it ends, like the members that were running
        # when the group died: recovery learns of dead groups only after replaying every sample, so
        # releasing it here would make the live count differ from the replayed one
        return True

    def on_trajectory(
        self,
        rollout_id: str,
        retry: int,
        status: str,
        error: str | None = None,
        reward: float | None = None,
    ) -> Action | None:
        """A final trajectory arrived; update the books and say what to do.

        The first trajectory of an emission decides its outcome; later ones (redeliveries, other
        attempts of the same emission) only count as duplicates.

        Args:
            status: ``succeeded``, ``failed`` or ``timeout``.
            error: the trajectory's error (failed/timeout), for the dead-letter reason.
            reward: the trajectory's ``reward`` (succeeded); decides zero-variance groups.

        Returns:
            :class:`Reissue` (failed, retries left, not yet re-issued), :class:`DeadLetter` (failed
            after ``max_retries``), or None.
        """
        em = self._emissions.get((rollout_id, retry))
        if em is None:
            self.unknown_trajectories += 1
            return None
        if em.state is not EmissionState.RUNNING:
            self.duplicate_trajectories += 1
            return None
        latest = self._latest_retry[rollout_id] == retry
        if status == "succeeded":
            em.state = EmissionState.SUCCEEDED
            em.reward = reward
            if latest:
                self._open.discard(rollout_id)
                self._check_zero_variance(em.group_id)
            if em.group_id in self._dead_groups or em.group_id in self._zero_variance_groups:
                self._release(em)
            return None
        em.state = EmissionState.FAILED
        em.error = error
        self._release(em)
        if not latest or em.group_id in self._dead_groups:
            if latest:
                self._open.discard(rollout_id)
            return None
        self._pending.add((rollout_id, retry))
        if retry < self.max_retries:
            return Reissue(em)
        return DeadLetter(
            em,
            f"rollout {rollout_id} {status} {retry + 1} time(s) (max_retries={self.max_retries}); last error: {error or status}",
        )

    def on_dead_lettered(self, rollout_id: str, retry: int) -> None:
        """The emission went to ``dlq`` (now, or found there on recovery): its group is dead."""
        em = self._emissions.get((rollout_id, retry))
        self._pending.discard((rollout_id, retry))
        self._open.discard(rollout_id)
        group_id = em.group_id if em is not None else None
        if group_id is None or group_id in self._dead_groups:
            return
        self._dead_groups.add(group_id)
        for member in self._group_members.get(group_id, []):
            if member.state is not EmissionState.RUNNING:
                self._release(member)

    # ---- queries --------------------------------------------------------------------------------
    def pending_actions(self) -> list[Action]:
        """Actions owed for failed emissions not yet re-issued or dead-lettered (used after recovery)."""
        out: list[Action] = []
        for rollout_id, retry in sorted(self._pending):
            em = self._emissions[(rollout_id, retry)]
            if retry < self.max_retries:
                out.append(Reissue(em))
            else:
                out.append(
                    DeadLetter(
                        em,
                        f"rollout {rollout_id} failed {retry + 1} time(s) (max_retries={self.max_retries}); last error: {em.error}",
                    )
                )
        return out

    def has_emitted(self, rollout_id: str, retry: int) -> bool:
        """Whether ``(rollout_id, retry)`` is recorded."""
        return (rollout_id, retry) in self._emissions

    def group_emissions(self, group_id: str) -> list[Emission]:
        """Every emission of a group, in recording order."""
        return list(self._group_members.get(group_id, []))

    @property
    def open_rollouts(self) -> int:
        """Rollouts without a final outcome (running, or failed and awaiting re-issue / dead-letter)."""
        return len(self._open)

    @property
    def dead_groups(self) -> int:
        """Groups with a dead-lettered member."""
        return len(self._dead_groups)

    @property
    def zero_variance_groups(self) -> int:
        """Train groups released because streams drops them as zero-variance."""
        return len(self._zero_variance_groups)

    def _check_zero_variance(self, group_id: str) -> None:
        """Release every member of ``group_id`` if streams will drop it as zero-variance.

        The group qualifies when it is a train group with ``group_size`` distinct rollouts, the
        latest emission (highest ``retry``) of each has its first final trajectory ``succeeded``,
        and those ``group_size`` rewards pass :func:`is_zero_variance`. Earlier failed emissions of
        its rollouts are already released; :meth:`_release` never counts one twice.
        """
        if (
            not self.filter_zero_variance
            or self.group_size < 2
            or group_id in self._zero_variance_groups
            or group_id in self._dead_groups
        ):
            return
        members = self._group_members.get(group_id, [])
        latest = {em.rollout_id: em for em in members if em.retry == self._latest_retry.get(em.rollout_id)}
        if (
            len(latest) != self.group_size
            or any(em.mode != "train" or em.state is not EmissionState.SUCCEEDED for em in latest.values())
            or not is_zero_variance([streams_reward(em.reward) for em in latest.values()])
        ):
            return
        self._zero_variance_groups.add(group_id)
        for em in members:
            self._release(em)

    def _release(self, em: Emission) -> None:
        if not em.released:
            em.released = True
            if em.mode == "train":
                self.released_train += 1
