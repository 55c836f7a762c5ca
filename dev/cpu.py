"""CPU time of a run's processes: what each stage costs, per rollout, whatever else runs on the machine.

Wall-clock figures of a run on a shared machine say as much about the other jobs as about the
pipeline; the CPU time a process spent does not (much). :class:`CpuMeter` reads the user + system
CPU seconds of each child from ``/proc/<pid>/stat`` (Linux; elsewhere it measures nothing and says
so) at every display tick, keeps the last reading of a process that exited, and takes one
snapshot when training starts (the first checkpoint), so the summary can give the training phase
alone: CPU seconds per stage and CPU milliseconds per rollout, start-up (imports, model loads)
excluded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

try:
    _TICKS_PER_S = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # not POSIX
    _TICKS_PER_S = 100.0


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (its threads included, its children not), or None
    when it is gone or ``/proc`` is not there.

    ``/proc/<pid>/stat`` fields 14 and 15 (``utime``, ``stime``) in clock ticks; the command name
    (field 2) may hold spaces and parentheses, so fields are counted after the last ``)``.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    except (IndexError, ValueError):
        return None


@dataclass
class CpuMeter:
    """CPU seconds per named process over a run.

    Attributes:
        cpu_s: name → CPU seconds at the last reading (a process that exited keeps its last one).
        start: name → CPU seconds at :meth:`mark_start` (empty until then).
        start_rollouts: rollouts counted when :meth:`mark_start` was called.
        start_version: the policy version then.
        start_clock: the caller's clock at :meth:`mark_start`, in seconds.
    """

    cpu_s: dict[str, float] = field(default_factory=dict)
    start: dict[str, float] = field(default_factory=dict)
    start_rollouts: int = 0
    start_version: int = 0
    start_clock: float | None = None
    available: bool = field(default_factory=lambda: Path("/proc/self/stat").is_file())

    def sample(self, pids: Mapping[str, int | None]) -> None:
        """Read every process of ``pids`` (name → pid; None or a dead pid keeps the last reading)."""
        if not self.available:
            return
        for name, pid in pids.items():
            if pid is None:
                continue
            cpu = process_cpu_s(pid)
            if cpu is not None and cpu >= self.cpu_s.get(name, 0.0):
                self.cpu_s[name] = cpu

    def mark_start(self, rollouts: int, version: int, clock: float) -> None:
        """Remember the readings now as the start of the training phase (first call only)."""
        if self.start_clock is not None:
            return
        self.start = dict(self.cpu_s)
        self.start_rollouts = rollouts
        self.start_version = version
        self.start_clock = clock

    def report(self, rollouts: int, version: int, clock: float) -> dict[str, object]:
        """The ``cpu`` section of ``summary.json``.

        Args:
            rollouts: trajectories counted so far (every attempt, val included).
            version: the latest policy version.
            clock: the caller's clock now (the same clock as :meth:`mark_start`'s), seconds.

        Returns:
            ``{"total_s": {name: s}, "training": {...} | None}``; ``training`` (from the first
            checkpoint on): ``wall_s``, ``rollouts``, ``versions`` (trained since), ``cpu_s`` (name → s),
            ``cpu_ms_per_rollout`` (name → ms, and ``total``), ``s_per_version``. Empty figures
            (``{}``) where ``/proc`` is not readable.
        """
        total = {k: round(v, 2) for k, v in sorted(self.cpu_s.items())}
        out: dict[str, object] = {"total_s": total, "training": None}
        if not self.available:
            out["note"] = "no /proc on this system: CPU time not measured"
            return out
        if self.start_clock is None:
            return out
        n = rollouts - self.start_rollouts
        trained = {k: round(v - self.start.get(k, 0.0), 2) for k, v in sorted(self.cpu_s.items())}
        per = {k: round(1000.0 * v / n, 3) for k, v in trained.items()} if n > 0 else {}
        if per:
            per["total"] = round(sum(v for v in per.values()), 3)
        wall = clock - self.start_clock
        versions = version - self.start_version
        out["training"] = {
            "wall_s": round(wall, 1),
            "rollouts": n,
            "versions": versions,
            "cpu_s": trained,
            "cpu_ms_per_rollout": per,
            "s_per_version": round(wall / versions, 3) if versions > 0 else None,
        }
        return out
