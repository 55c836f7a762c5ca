"""What the sampler emits, in which order: rollout ids, seeded epoch order, the epoch cursor.

Pure functions and small state; no Kafka. The order of an epoch is a *hash ranking*: each task's
place depends only on ``(seed, epoch, task_id)``, so tasks added or deleted mid-epoch do not move the
others, and a restarted sampler walks exactly the order its predecessor walked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


def train_group_id(task_id: str, epoch: int) -> str:
    """``task_id/epoch``: the GRPO group of one task in one epoch (CONTRACTS.md)."""
    return f"{task_id}/{epoch}"


def train_rollout_id(task_id: str, epoch: int, k: int) -> str:
    """``task_id/epoch/k``: deterministic, so a re-emitted sample has the same key (DESIGN.md)."""
    return f"{task_id}/{epoch}/{k}"


def val_group_id(version: int, task_id: str) -> str:
    """``val/<policy_version>/<task_id>``: the val rollouts of one task for one validated version."""
    return f"val/{version}/{task_id}"


def val_rollout_id(version: int, task_id: str, k: int) -> str:
    """``val/<policy_version>/<task_id>/<k>``."""
    return f"{val_group_id(version, task_id)}/{k}"


def epoch_order(task_ids: Iterable[str], epoch: int, seed: int, shuffle: bool = True) -> list[str]:
    """The order in which the tasks of ``epoch`` are fanned out.

    Args:
        task_ids: the train tasks of the epoch (any order; duplicates are removed).
        epoch: 0-based epoch number.
        seed: ``rl.seed``.
        shuffle: False = sorted by task_id (every epoch the same order).

    Returns:
        task ids sorted by ``sha256(f"{seed}/{epoch}/{task_id}")`` (a seeded permutation that differs
        per epoch) or by task_id.
    """
    ids = set(task_ids)
    if not shuffle:
        return sorted(ids)
    return sorted(ids, key=lambda t: hashlib.sha256(f"{seed}/{epoch}/{t}".encode()).digest())


@dataclass
class EpochCursor:
    """The walk through one epoch: which ``(task_id, k)`` of it are still to be emitted.

    Attributes:
        epoch: 0-based epoch number.
        order: the task ids of the epoch in emission order (see :func:`epoch_order`).
        group_size: samples per task.
        emitted: ``(task_id, k)`` pairs of this epoch already emitted (first issue, retry 0).
    """

    epoch: int
    order: list[str]
    group_size: int
    emitted: set[tuple[str, int]] = field(default_factory=set)
    _pos: int = 0
    _k: int = 0

    def peek(self) -> tuple[str, int] | None:
        """The next ``(task_id, k)`` to emit, or None when the epoch is fully emitted."""
        while self._pos < len(self.order):
            task_id = self.order[self._pos]
            while self._k < self.group_size:
                if (task_id, self._k) not in self.emitted:
                    return task_id, self._k
                self._k += 1
            self._pos += 1
            self._k = 0
        return None

    def mark(self, task_id: str, k: int) -> None:
        """Record that ``(task_id, k)`` was emitted (by us now, or found in ``samples`` on recovery)."""
        self.emitted.add((task_id, k))

    def drop(self, task_id: str) -> None:
        """Forget a task deleted from ``tasks`` mid-epoch: its remaining samples are not emitted."""
        if task_id in self.order[self._pos + 1 :]:
            self.order = self.order[: self._pos + 1] + [
                t for t in self.order[self._pos + 1 :] if t != task_id
            ]

    @property
    def done(self) -> bool:
        """Every sample of the epoch is emitted."""
        return self.peek() is None

    @property
    def position(self) -> int:
        """Index in :attr:`order` of the task being fanned out (= tasks fully emitted, on a clean walk)."""
        return self._pos

    def remaining(self) -> Iterator[tuple[str, int]]:
        """Every ``(task_id, k)`` still to emit, in order (does not move the cursor)."""
        for i in range(self._pos, len(self.order)):
            for k in range(self.group_size):
                if (self.order[i], k) not in self.emitted:
                    yield self.order[i], k
