"""The sampler's bookkeeping: every emission, its outcome, and the admission (staleness) bound.

Pure logic, no Kafka: the sampler feeds it what it emits and what it reads from ``trajectories``
and ``checkpoints``, live or while replaying the topics after a restart.

What is counted (train samples only; val samples never reach the trainer and are not bounded):

- **emitted** ``E``: train sample *emissions*; a re-issue after a failure (``retry + 1``) is a new
  emission.
- **released** ``R``: emissions that will never reach the trainer: those whose trajectory is
  ``failed``/``timeout`` (re-issued or dead-lettered), and every member of a *dead group* (a group
  with a dead-lettered member: streams never completes it, so its succeeded members are released too).
- **consumed** ``C = v × train_batch_size × group_size``: what the trainer has trained, from the
  latest ``checkpoints`` version ``v`` of ``rl.policy_name`` (version = step = batches trained).
- **in flight** ``F = E − R − C``: admitted samples the trainer has not consumed yet (queued,
  running, or completed and waiting to be batched).

Admission: a train sample is emitted only while ``F < (max_staleness + 1) × train_batch_size ×
group_size`` (the bound of DESIGN.md / AReaL's ``(η + 1) × B``), so ``F`` never exceeds the bound:
with ``max_staleness = 0`` the sampler emits one batch, then waits for the trainer's next version.

Known limit: groups that streams drops without the sampler seeing a failure (e.g. zero-variance
filtering) are never consumed, so they hold capacity; the trainer then needs more groups than were
admitted and the pipeline waits. Streams must report such groups as failed trajectories, or the
bound must leave room for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


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
    """

    rollout_id: str
    retry: int
    group_id: str
    mode: str
    sample: Any = None
    state: EmissionState = EmissionState.RUNNING
    released: bool = False
    error: str | None = None


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
    """

    def __init__(
        self, *, group_size: int, train_batch_size: int, max_staleness: int, max_retries: int
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
        self.version = 0
        self.emitted_train = 0
        self.released_train = 0
        self._emissions: dict[tuple[str, int], Emission] = {}
        self._latest_retry: dict[str, int] = {}
        self._group_members: dict[str, list[Emission]] = {}
        self._dead_groups: set[str] = set()
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
        if group_id in self._dead_groups:
            self._release(em)
        return True

    def on_trajectory(
        self, rollout_id: str, retry: int, status: str, error: str | None = None
    ) -> Action | None:
        """A final trajectory arrived; update the books and say what to do.

        The first trajectory of an emission decides its outcome; later ones (redeliveries, other
        attempts of the same emission) only count as duplicates.

        Args:
            status: ``succeeded``, ``failed`` or ``timeout``.

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
            if latest:
                self._open.discard(rollout_id)
            if em.group_id in self._dead_groups:
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

    def _release(self, em: Emission) -> None:
        if not em.released:
            em.released = True
            if em.mode == "train":
                self.released_train += 1
