"""Pure figures of the coordination benchmark: percentiles, rates, service times, medians of repetitions.

No Kafka, no processes: everything here takes plain numbers (milliseconds since the Unix epoch for
timestamps, as Kafka and Avro ``timestamp-millis`` carry them) and is unit-tested.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "TrajectoryTiming",
    "group_to_batch_ms",
    "median_of",
    "percentile",
    "rate_per_s",
    "service_times_ms",
]


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks (numpy's default).

    Returns NaN for no values.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rate_per_s(count: int, start_ms: float, end_ms: float) -> float:
    """``count / (end − start)`` in events per second, timestamps in ms.

    Raises:
        ValueError: ``end_ms`` is not after ``start_ms`` (the span cannot be measured).
    """
    span_ms = end_ms - start_ms
    if span_ms <= 0:
        raise ValueError(f"end ({end_ms} ms) must be after start ({start_ms} ms) to compute a rate")
    return count * 1000.0 / span_ms


@dataclass(frozen=True)
class TrajectoryTiming:
    """What the benchmark reads from one Trajectory record.

    Attributes:
        rollout_id: the record's key.
        started_ms: ``Trajectory.started_at`` (worker clock, ms since the epoch): when the worker
            took the sample from its consumer and started the rollout ("sample consumed").
        acked_ms: the record's broker ``LogAppendTime`` (ms since the epoch): when the log accepted
            it ("Trajectory acknowledged"; the ack follows the append on a single-replica topic).
        ok: the trajectory's status is ``succeeded``.
    """

    rollout_id: str
    started_ms: float
    acked_ms: float
    ok: bool = True


def service_times_ms(timings: Iterable[TrajectoryTiming]) -> list[float]:
    """Per-rollout service time ``acked_ms − started_ms`` in ms, one per distinct rollout (first record wins).

    Redelivered samples can produce a second Trajectory for the same ``rollout_id``; only the first
    acknowledged one counts, like the aggregator keeps one attempt per rollout.
    """
    first: dict[str, TrajectoryTiming] = {}
    for t in sorted(timings, key=lambda t: t.acked_ms):
        first.setdefault(t.rollout_id, t)
    return [t.acked_ms - t.started_ms for t in first.values()]


def group_to_batch_ms(
    last_trajectory_ms: Mapping[str, float], batch_of_group_ms: Mapping[str, float]
) -> list[float]:
    """Per-group delay from its last Trajectory's append to its batch record's append, in ms.

    Args:
        last_trajectory_ms: ``{group_id: LogAppendTime of the group's last Trajectory}``.
        batch_of_group_ms: ``{group_id: LogAppendTime of the batch that holds the group}``.

    Returns:
        One delay per group present in both maps (groups filtered out by the aggregator have no
        batch and are skipped).
    """
    return [batch_of_group_ms[g] - t for g, t in last_trajectory_ms.items() if g in batch_of_group_ms]


def median_of(
    runs: Sequence[Mapping[str, float | int | None]], keys: Iterable[str] | None = None
) -> dict[str, float]:
    """Per-key median over repetitions (keys missing or None/NaN in a run are ignored for that run).

    Args:
        runs: one dict of figures per repetition.
        keys: the keys to summarize; default every numeric key of any run.

    Returns:
        ``{key: median}``; keys with no finite value in any run map to NaN.
    """
    if keys is None:
        seen: dict[str, None] = {}
        for run in runs:
            for k, v in run.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    seen.setdefault(k, None)
        keys = list(seen)
    out: dict[str, float] = {}
    for k in keys:
        vals = [
            float(v) for run in runs if isinstance(v := run.get(k), int | float) and math.isfinite(float(v))
        ]
        out[k] = statistics.median(vals) if vals else math.nan
    return out
