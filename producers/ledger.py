"""The sampler's bookkeeping: emissions, their outcomes, and the admission bound, from facts only.

Pure logic, no Kafka: the sampler feeds it what it emits and what it reads from ``trajectories``,
``group_outcomes``, ``checkpoints`` and the trainer's dead letters in ``dlq``, live or while
replaying the topics after a restart. It copies no rule of another stage: what became of a group is
read from streams' ``GroupOutcome`` records, what the trainer consumed from its ``CheckpointEvent``.

The unit is the rollout ``(group_id, k)`` (``rollout_id = group_id/k``, :mod:`streamrl.producers.plan`);
an *emission* is one sample of it, ``retry`` 0, 1, ... (a re-issue after a failed rollout is a new
emission). What is counted (train only; val samples never reach the trainer and are not bounded):

- **running** ``U``: train emissions without a final trajectory yet. An emission's first final
  trajectory ends it: ``failed``/``timeout`` (re-issued or dead-lettered by the sampler) or
  ``succeeded``.
- **waiting** ``W``: train rollouts with a succeeded trajectory (of any emission, any attempt:
  streams keeps the first completed attempt of a rollout, whichever emission ran it) whose first
  group outcome is not ``dropped``. A rollout holds one unit however many of its emissions
  succeeded, until streams drops it or the trainer consumes it.
- **consumed** ``C``: rollouts the trainer consumed: ``CheckpointEvent.consumed_rollouts`` of the
  newest version (rollouts of every trained batch, their stale-dropped rows included), plus the
  rollouts of every batch the trainer dead-lettered (``dlq`` records of stage ``trainer`` from
  ``batches``, keyed by ``batch_id``), counted by the ``batched`` outcomes that name that batch.
- **in flight** ``F = U + W − C``: admitted work the trainer has not consumed (queued, running,
  or succeeded and waiting to be batched or trained).

Admission: train samples are emitted only while ``F`` stays within ``(max_staleness + 1) ×
train_batch_size × group_size`` (DESIGN.md / AReaL's ``(η + 1) × B``); the sampler admits a new
group only when all its members fit (:meth:`Ledger.can_admit` with the group's size), a re-issue
when one fits. Each rollout that succeeded is decided by
streams exactly once (batched, or dropped with a reason: zero variance, straggler, no rows,
incomplete join, invalid rows, late), so every unit of ``W`` is released by a ``dropped`` outcome or
consumed by the trainer: no drop leaks capacity, and nothing is released twice (a rollout's first
outcome decides; a repeated record, e.g. after a streams crash, changes nothing).

Replay determinism: every count depends only on the set of records read (an emission's first
final trajectory and a rollout's first outcome are first in their partitions, which are ordered;
"has a succeeded trajectory" is order-free), so replaying the topics after a restart gives the same
``U``, ``W`` and ``C`` whatever the interleaving of topics.

Failures are counted per rollout by kind (each emission's first final trajectory once): the task's
own (``agent``; a v1 trajectory without a kind is ``agent``) against ``max_retries``,
``infrastructure`` ones (the inference service down, a worker stopping) against
``max_infra_retries`` only, so an outage spends no sample's retries. Past its kind's budget a
rollout is dead-lettered, the reason starting with the kind. A ``request`` failure (the inference
service refused a call with a deterministic 4xx, e.g. a prompt longer than the context) is
dead-lettered at once: a re-issue of the same task cannot succeed.

State is per group and compact: the latest retry per ``k``, bitmasks of succeeded / decided /
dropped rollouts, failure counts of members that failed, and the ``Sample`` of running or
failed-awaiting-action emissions only (needed to re-issue or dead-letter them); a finished emission
keeps nothing. A group's book stays (about a hundred bytes) so late records are recognised until
the sampler prunes finished groups (:meth:`Ledger.prune`, before each snapshot: every member
emitted, none open, every success decided); a late record of a pruned group is counted as unknown
and changes no count. :meth:`Ledger.to_state` / :meth:`Ledger.from_state` give the books and counts
as plain JSON-able data for the sampler's snapshot (:mod:`streamrl.producers.snapshot`).

Where it is not exact (each rare, none a stall): ``F`` grows by one without an admission when a
rollout succeeds only after its emission's first trajectory failed (a redelivered sample's second
attempt), so ``F`` may pass the bound by that much; streams forgets a closed group after
``streams.dedup_retention_s`` (default 1 h), so a rollout arriving later than that opens a new group
and may be decided twice (the sampler keeps the first decision; if both are ``batched`` the trainer
counts it twice and ``F`` under-counts by one); a batch the trainer cannot decode at all is counted
if its key is its ``batch_id`` (as streams writes it); a ``CheckpointEvent`` without
``consumed_rollouts`` (schema v1) counts ``version × train_batch_size × group_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def split_rollout_id(rollout_id: str) -> tuple[str, int] | None:
    """``group_id/k`` -> ``(group_id, k)``; None if ``rollout_id`` does not end in ``/<k>``."""
    group_id, _, k = rollout_id.rpartition("/")
    if not group_id or not k.isdigit():
        return None
    return group_id, int(k)


@dataclass(slots=True)
class GroupBook:
    """What the ledger keeps of one group (train or val).

    Attributes:
        train: a train group (counted against the bound).
        latest: latest retry emitted, per ``k`` (-1 = not emitted).
        running: ``(k, retry) -> Sample`` of emissions without a final trajectory.
        failed: ``(k, retry) -> (Sample, error, kind)`` of failed latest emissions whose re-issue or
            dead letter is owed (not yet emitted / sent).
        succeeded, decided, dropped: bitmasks over ``k``: a succeeded trajectory was read; a group
            outcome was read (the first decides); that first outcome was ``dropped``.
        failures: ``k -> (task failures, infrastructure failures)`` of the rollout's emissions (each
            emission's first final trajectory counts once); None while no member failed.
    """

    train: bool
    latest: list[int]
    running: dict[tuple[int, int], Any] = field(default_factory=dict)
    failed: dict[tuple[int, int], tuple[Any, str | None, str]] = field(default_factory=dict)
    succeeded: int = 0
    decided: int = 0
    dropped: int = 0
    failures: dict[int, tuple[int, int]] | None = None


INFRASTRUCTURE = "infrastructure"
"""``FailureKind.infrastructure``: a failure that is not the task's (the ledger compares strings; it
imports no records)."""
AGENT = "agent"
REQUEST = "request"
"""``FailureKind.request``: the inference service refused a call deterministically (a 4xx): dead-lettered
at once, never re-issued."""


@dataclass(frozen=True)
class Reissue:
    """Action: emit ``sample`` again with ``retry = sample.retry + 1``.

    Attributes:
        kind: the failure that caused it (``agent``, ``request``, ``infrastructure``).
        failures: failures of that kind so far (counting infrastructure failures apart from the
            task's), for the re-issue's backoff.
    """

    sample: Any
    group_id: str
    k: int
    retry: int
    kind: str = AGENT
    failures: int = 1


@dataclass(frozen=True)
class DeadLetter:
    """Action: send ``sample`` to ``dlq`` with ``reason`` (which starts with the failure kind)."""

    sample: Any
    group_id: str
    k: int
    retry: int
    reason: str
    kind: str = AGENT


Action = Reissue | DeadLetter


class Ledger:
    """Emissions, outcomes and the admission bound of one sampler.

    Args:
        group_size: samples per train group (``rl.group_size``).
        train_batch_size: groups per trainer step (``rl.train_batch_size``).
        max_staleness: ``rl.max_staleness`` (η).
        max_retries: re-issues allowed after the task's own failures (``agent`` trajectories;
            ``sampler.max_retries``); a ``request`` failure is dead-lettered at once.
        max_infra_retries: re-issues allowed after infrastructure failures, counted apart
            (``sampler.max_infra_retries``): they spend none of ``max_retries``.

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
        max_infra_retries: int = 20,
    ) -> None:
        if (
            group_size < 1
            or train_batch_size < 1
            or max_staleness < 0
            or max_retries < 0
            or max_infra_retries < 0
        ):
            raise ValueError(
                "Ledger: need group_size>=1, train_batch_size>=1, max_staleness>=0, max_retries>=0, "
                f"max_infra_retries>=0; got {group_size}, {train_batch_size}, {max_staleness}, "
                f"{max_retries}, {max_infra_retries}"
            )
        self.group_size = group_size
        self.train_batch_size = train_batch_size
        self.max_staleness = max_staleness
        self.max_retries = max_retries
        self.max_infra_retries = max_infra_retries
        self.version = 0
        self.consumed_trained = 0
        self.consumed_dead_lettered = 0
        self.emitted_train = 0
        self.running_train = 0
        self.waiting_train = 0
        self.released_by_outcome = 0
        self.groups: dict[str, GroupBook] = {}
        self._open: set[tuple[str, int]] = (
            set()
        )  # rollouts whose latest emission is running or owed an action
        self._batch_rollouts: dict[str, int] = {}  # batch id -> rollouts whose first outcome names it
        self._dead_batches: dict[str, None] = {}  # batches the trainer dead-lettered (ordered)
        self.unknown_trajectories = 0
        self.duplicate_trajectories = 0
        self.unknown_outcomes = 0

    # ---- snapshots ------------------------------------------------------------------------------
    COUNTS = (
        "version",
        "consumed_trained",
        "consumed_dead_lettered",
        "emitted_train",
        "running_train",
        "waiting_train",
        "released_by_outcome",
        "unknown_trajectories",
        "duplicate_trajectories",
        "unknown_outcomes",
    )
    """The ledger's counters, as :meth:`to_state` names them."""

    MAX_BATCHES = 4096
    """Batch ids remembered for a later trainer dead letter (the newest; :meth:`prune` drops older)."""

    def finished(self, book: GroupBook, group_id: str) -> bool:
        """Whether nothing more is owed or expected of a group: every member emitted, none running
        or owed a re-issue / dead letter, and every member that succeeded decided by an outcome
        (train groups)."""
        if book.running or book.failed or min(book.latest, default=-1) < 0:
            return False
        if any((group_id, k) in self._open for k in range(len(book.latest))):
            return False
        return not book.train or book.succeeded & ~book.decided == 0

    def prune(self, keep: Callable[[str, GroupBook], bool] | None = None) -> int:
        """Forget the books of finished groups (:meth:`finished`) that ``keep(group_id, book)`` does
        not keep, and batch ids past the newest :attr:`MAX_BATCHES`. No count changes; a later record
        of a pruned group is counted as unknown and ignored. Returns the groups pruned."""
        gone = [
            gid
            for gid, book in self.groups.items()
            if self.finished(book, gid) and (keep is None or not keep(gid, book))
        ]
        for gid in gone:
            del self.groups[gid]
        for ids in (self._batch_rollouts, self._dead_batches):
            extra = len(ids) - self.MAX_BATCHES
            if extra > 0:
                for batch_id in list(ids)[:extra]:  # dicts keep insertion order: the oldest first
                    del ids[batch_id]
        return len(gone)

    def to_state(self, encode_sample: Callable[[Any], Any]) -> dict[str, Any]:
        """Counts and books as JSON-able data (samples through ``encode_sample``); :meth:`from_state` inverts it."""
        groups = {}
        for gid, b in self.groups.items():
            groups[gid] = {
                "train": b.train,
                "latest": list(b.latest),
                "running": [[k, r, encode_sample(x)] for (k, r), x in b.running.items()],
                "failed": [[k, r, encode_sample(x), e, kind] for (k, r), (x, e, kind) in b.failed.items()],
                "succeeded": b.succeeded,
                "decided": b.decided,
                "dropped": b.dropped,
                "failures": None if b.failures is None else [[k, t, i] for k, (t, i) in b.failures.items()],
            }
        return {
            "counts": {name: getattr(self, name) for name in self.COUNTS},
            "groups": groups,
            "open": sorted([gid, k] for gid, k in self._open),
            "batches": list(self._batch_rollouts.items()),
            "dead_batches": list(self._dead_batches),
        }

    def from_state(self, state: dict[str, Any], decode_sample: Callable[[Any], Any]) -> None:
        """Replace this ledger's counts and books by ``state`` (from :meth:`to_state`).

        Raises:
            KeyError, TypeError, ValueError: ``state`` is not what :meth:`to_state` writes.
        """
        counts = state["counts"]
        values = {name: int(counts[name]) for name in self.COUNTS}
        groups: dict[str, GroupBook] = {}
        for gid, g in state["groups"].items():
            groups[str(gid)] = GroupBook(
                train=bool(g["train"]),
                latest=[int(r) for r in g["latest"]],
                running={(int(k), int(r)): decode_sample(x) for k, r, x in g["running"]},
                failed={
                    (int(k), int(r)): (decode_sample(x), e, str(kind)) for k, r, x, e, kind in g["failed"]
                },
                succeeded=int(g["succeeded"]),
                decided=int(g["decided"]),
                dropped=int(g["dropped"]),
                failures=None
                if g["failures"] is None
                else {int(k): (int(t), int(i)) for k, t, i in g["failures"]},
            )
        opened = {(str(gid), int(k)) for gid, k in state["open"]}
        batches = {str(b): int(n) for b, n in state["batches"]}
        dead = dict.fromkeys(str(b) for b in state["dead_batches"])
        for name, value in values.items():
            setattr(self, name, value)
        self.groups, self._open, self._batch_rollouts, self._dead_batches = groups, opened, batches, dead

    # ---- the bound ------------------------------------------------------------------------------
    @property
    def bound(self) -> int:
        """``(max_staleness + 1) × train_batch_size × group_size`` samples."""
        return (self.max_staleness + 1) * self.train_batch_size * self.group_size

    @property
    def consumed(self) -> int:
        """``C``: rollouts of trained batches (the newest checkpoint's count) and of dead-lettered ones."""
        return self.consumed_trained + self.consumed_dead_lettered

    @property
    def in_flight(self) -> int:
        """``F = U + W − C`` (may be negative if the trainer consumed samples of a previous run)."""
        return self.running_train + self.waiting_train - self.consumed

    def can_admit(self, n: int = 1) -> bool:
        """Whether ``n`` more train samples fit under the bound."""
        return self.in_flight + n <= self.bound

    # ---- inputs ---------------------------------------------------------------------------------
    def on_checkpoint(self, version: int, consumed_rollouts: int | None) -> bool:
        """A ``checkpoints`` event of our policy; returns whether the version moved forward.

        The newest version's ``consumed_rollouts`` is the trainer's count (a repeated version, as a
        restarted trainer publishes, replaces it); None (a schema v1 event) counts
        ``version × train_batch_size × group_size``.
        """
        if version < self.version:
            return False
        if consumed_rollouts is None:
            consumed_rollouts = version * self.train_batch_size * self.group_size
        self.consumed_trained = consumed_rollouts
        moved = version > self.version
        self.version = version
        return moved

    def on_emitted(self, sample: Any) -> bool:
        """Record an emission (ours now, or one read back from ``samples``).

        Args:
            sample: a ``Sample`` (``group_id``, ``k``, ``retry``, ``group_size``, ``mode``).

        Returns:
            False if ``(rollout_id, retry)`` was already recorded (a duplicate in ``samples``), else True.
        """
        gid, k, retry = sample.group_id, sample.k, sample.retry
        book = self.groups.get(gid)
        if book is None:
            train = getattr(sample.mode, "value", sample.mode) == "train"
            book = self.groups[gid] = GroupBook(train=train, latest=[-1] * sample.group_size)
        if k >= len(book.latest):
            book.latest.extend([-1] * (k + 1 - len(book.latest)))
        prev = book.latest[k]
        if retry <= prev:
            return False
        book.latest[k] = retry
        book.running[(k, retry)] = sample
        if book.train:
            self.emitted_train += 1
            self.running_train += 1
        if prev >= 0:
            book.failed.pop((k, prev), None)  # its re-issue is out
        self._open.add((gid, k))
        return True

    def on_trajectory(
        self,
        group_id: str,
        k: int,
        retry: int,
        status: str,
        error: str | None = None,
        kind: str | None = None,
    ) -> Action | None:
        """A final trajectory arrived; update the books and say what to do.

        The first trajectory of an emission ends it; any succeeded trajectory marks its rollout
        succeeded (streams keeps the first completed attempt, whichever emission ran it). A failed
        emission counts once against its kind's budget: ``infrastructure`` failures against
        ``max_infra_retries``, the task's own (``agent``) against ``max_retries``; a ``request``
        failure (a deterministic 4xx) is dead-lettered without a re-issue.

        Args:
            status: ``succeeded``, ``failed`` or ``timeout``.
            error: the trajectory's error (failed/timeout), for the dead-letter reason.
            kind: the trajectory's failure kind (``Trajectory.failure()``; None = ``agent``).

        Returns:
            :class:`Reissue` (failed, retries of its kind left), :class:`DeadLetter` (failed after
            its kind's budget), or None (succeeded, a newer retry exists, the rollout already
            succeeded, a duplicate, or unknown).
        """
        book = self.groups.get(group_id)
        if book is None or k >= len(book.latest) or retry > book.latest[k]:
            self.unknown_trajectories += 1
            return None
        if status == "succeeded":
            self._succeeded(group_id, book, k)
        sample = book.running.pop((k, retry), None)
        if sample is None:
            self.duplicate_trajectories += 1
            return None
        if not book.running:
            book.running = {}  # an emptied dict keeps its table: give it back
        if book.train:
            self.running_train -= 1
        kind = kind or AGENT
        if status != "succeeded":  # this emission's first final trajectory: count it, once
            fails = book.failures if book.failures is not None else {}
            task, infra = fails.get(k, (0, 0))
            fails[k] = (task, infra + 1) if kind == INFRASTRUCTURE else (task + 1, infra)
            book.failures = fails
        if retry < book.latest[k]:
            return None  # a newer emission of the rollout is out
        if status == "succeeded" or book.succeeded >> k & 1:
            self._open.discard((group_id, k))
            return None
        book.failed[(k, retry)] = (sample, error, kind)
        return self._action(group_id, book, k, retry, sample, error or status, kind)

    def on_outcome(self, group_id: str, status: str, rollout_ids: list[str], batch_id: str | None) -> None:
        """A ``GroupOutcome``: the first outcome of each listed rollout decides it.

        ``dropped`` releases a rollout's waiting unit (now, or when its success is read);
        ``batched`` leaves it waiting until the trainer consumes the batch (and counts it for the
        batch, in case the trainer dead-letters that batch).
        """
        book = self.groups.get(group_id)
        if book is None or not book.train:
            self.unknown_outcomes += 1
            return
        for rid in rollout_ids:
            parsed = split_rollout_id(rid)
            if parsed is None or parsed[0] != group_id or parsed[1] >= len(book.latest):
                self.unknown_outcomes += 1
                continue
            k = parsed[1]
            if book.decided >> k & 1:
                continue
            book.decided |= 1 << k
            if status == "dropped":
                book.dropped |= 1 << k
                self.released_by_outcome += 1
                if book.succeeded >> k & 1:
                    self.waiting_train -= 1
            elif batch_id is not None:
                self._batch_rollouts[batch_id] = self._batch_rollouts.get(batch_id, 0) + 1
                if batch_id in self._dead_batches:
                    self.consumed_dead_lettered += 1

    def on_batch_dead_lettered(self, batch_id: str) -> None:
        """The trainer sent batch ``batch_id`` to ``dlq``: its rollouts are consumed (once per id)."""
        if batch_id in self._dead_batches:
            return
        self._dead_batches[batch_id] = None
        self.consumed_dead_lettered += self._batch_rollouts.get(batch_id, 0)

    def on_dead_lettered(self, group_id: str, k: int, retry: int) -> None:
        """The emission went to ``dlq`` (now, or found there on recovery): nothing more is owed."""
        book = self.groups.get(group_id)
        if book is None:
            return
        book.failed.pop((k, retry), None)
        self._open.discard((group_id, k))

    # ---- queries --------------------------------------------------------------------------------
    def pending_actions(self) -> list[Action]:
        """Actions owed for failed emissions not yet re-issued or dead-lettered (used after recovery)."""
        out: list[Action] = []
        for gid in sorted(self.groups):
            book = self.groups[gid]
            for (k, retry), (sample, error, kind) in sorted(book.failed.items(), key=lambda kv: kv[0]):
                out.append(self._action(gid, book, k, retry, sample, error or "failed", kind))
        return out

    def has_emitted(self, rollout_id: str, retry: int) -> bool:
        """Whether ``(rollout_id, retry)`` is recorded."""
        parsed = split_rollout_id(rollout_id)
        if parsed is None or parsed[0] not in self.groups:
            return False
        latest = self.groups[parsed[0]].latest
        return parsed[1] < len(latest) and latest[parsed[1]] >= retry

    def owes_reissue(self, group_id: str, k: int, retry: int) -> bool:
        """Whether emission ``retry`` of ``group_id/k`` failed and its re-issue is still owed (not
        emitted, and the rollout did not succeed meanwhile through another attempt: then streams has
        a completed attempt and a queued re-issue is dropped, as recovery would not owe it)."""
        book = self.groups.get(group_id)
        return book is not None and (k, retry) in book.failed

    def has_group(self, group_id: str) -> bool:
        """Whether any sample of ``group_id`` is recorded."""
        return group_id in self.groups

    @property
    def open_rollouts(self) -> int:
        """Rollouts whose latest emission is running, or failed and awaiting its re-issue / dead letter."""
        return len(self._open)

    # ---- internals ------------------------------------------------------------------------------
    def _succeeded(self, group_id: str, book: GroupBook, k: int) -> None:
        if book.succeeded >> k & 1:
            return
        book.succeeded |= 1 << k
        if book.train and not book.dropped >> k & 1:
            self.waiting_train += 1
        for key in [key for key in book.failed if key[0] == k]:
            del book.failed[key]  # no re-issue owed: streams has a completed attempt
        if (k, book.latest[k]) not in book.running:
            self._open.discard((group_id, k))

    def _action(
        self, group_id: str, book: GroupBook, k: int, retry: int, sample: Any, error: str, kind: str
    ) -> Action:
        """Re-issue while the failure's kind has budget left, else dead-letter; the reason names the
        kind first (``agent failure: ...``, ``infrastructure failure: ...``)."""
        task, infra = (book.failures or {}).get(k, (0, 0))
        if kind == INFRASTRUCTURE:
            if infra <= self.max_infra_retries:
                return Reissue(sample, group_id, k, retry, kind, infra)
            reason = (
                f"infrastructure failure: rollout {group_id}/{k} failed {infra} time(s) for reasons "
                f"outside the task (max_infra_retries={self.max_infra_retries}; {task} failure(s) of "
                f"its own); last error: {error}"
            )
            return DeadLetter(sample, group_id, k, retry, reason, kind)
        if kind == REQUEST:  # a call the inference service refuses deterministically: never retried
            reason = (
                f"request failure: rollout {group_id}/{k}: the inference service refused a call with a "
                f"deterministic 4xx (e.g. a prompt longer than the context); a re-issue cannot succeed, "
                f"so it is not retried; last error: {error}"
            )
            return DeadLetter(sample, group_id, k, retry, reason, kind)
        if task <= self.max_retries:
            return Reissue(sample, group_id, k, retry, kind, task)
        reason = (
            f"{kind} failure: rollout {group_id}/{k} failed {task} time(s) (max_retries={self.max_retries}; "
            f"{infra} infrastructure failure(s) not counted); last error: {error}"
        )
        return DeadLetter(sample, group_id, k, retry, reason, kind)
