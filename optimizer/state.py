"""The state of an optimization run: what ``OptimizerState.state`` holds (a JSON object).

Layout (``version`` 1)::

    {"version": 1, "run_id", "algorithm", "resource_name", "seed_version", "seed_placeholders": [...],
     "started_at": s, "finished_at": s | null, "outcome": str | null,
     "start_offsets": {"trajectories": {partition: offset}, "requests": {...}},
     "round": r, "phase": "<algorithm's step>", "seq": next event number, "rollouts": samples published,
     "evals": {eval_id: Evaluation.to_json()},          # deadlines, re-issues, results once finished
     "candidates": {version: {"round", "parents", "source"}},   # every accepted prompt (seed included)
     "rejected": [{"round", "parents", "reason", "preview"}],
     "seen": {normalized text: version},                # duplicate guard
     "beam": [version, ...], "best": {"version", "score", "round"} | null,
     "history": [{"round", "leader", "leader_score", "best", "best_score", "evaluated": {version: score},
                  "accepted": n, "rejected": n, "rollouts": n}],
     "algo": {...}}                                     # the algorithm's own step data

It is written after every step (evaluations published or finished, a candidate made, a phase
ended), so a restarted run re-attaches to the evaluations in flight (their samples are not
published again, their deadlines hold) and never re-runs a finished one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from streamrl.optimizer.evaluation import Evaluation

STATE_VERSION = 1


@dataclass
class RunState:
    """A run's state (see the module docstring for the JSON layout)."""

    run_id: str
    algorithm: str
    resource_name: str
    seed_version: str
    seed_placeholders: list[str]
    start_offsets: dict[str, dict[int, int]]
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    outcome: str | None = None
    round: int = 0
    phase: str = "start"
    seq: int = 0
    rollouts: int = 0
    evals: dict[str, Evaluation] = field(default_factory=dict)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)
    beam: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    algo: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def score_of(self, version: str, task_ids: list[str], split: str) -> Evaluation | None:
        """A finished evaluation of ``version`` on exactly these tasks, if the run has one (reused
        instead of running the same evaluation again)."""
        for ev in self.evals.values():
            if ev.finished and ev.version == version and ev.split == split and ev.task_ids == task_ids:
                return ev
        return None

    def to_json(self) -> str:
        d = {
            "version": STATE_VERSION,
            "run_id": self.run_id,
            "algorithm": self.algorithm,
            "resource_name": self.resource_name,
            "seed_version": self.seed_version,
            "seed_placeholders": list(self.seed_placeholders),
            "start_offsets": {
                b: {str(p): o for p, o in parts.items()} for b, parts in self.start_offsets.items()
            },
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "round": self.round,
            "phase": self.phase,
            "seq": self.seq,
            "rollouts": self.rollouts,
            "evals": {k: v.to_json() for k, v in self.evals.items()},
            "candidates": self.candidates,
            "rejected": self.rejected,
            "seen": self.seen,
            "beam": self.beam,
            "best": self.best,
            "history": self.history,
            "algo": self.algo,
        }
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunState:
        """Read a state written by :meth:`to_json`.

        Raises:
            ValueError: not this layout (another ``version``, a missing field).
        """
        d = json.loads(text)
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"optimizer state layout {d.get('version')!r}, this build reads {STATE_VERSION}")
        try:
            return cls(
                run_id=d["run_id"],
                algorithm=d["algorithm"],
                resource_name=d["resource_name"],
                seed_version=d["seed_version"],
                seed_placeholders=list(d["seed_placeholders"]),
                start_offsets={
                    b: {int(p): int(o) for p, o in parts.items()} for b, parts in d["start_offsets"].items()
                },
                started_at=float(d["started_at"]),
                finished_at=d.get("finished_at"),
                outcome=d.get("outcome"),
                round=int(d["round"]),
                phase=d["phase"],
                seq=int(d["seq"]),
                rollouts=int(d["rollouts"]),
                evals={k: Evaluation.from_json(v) for k, v in d["evals"].items()},
                candidates=d["candidates"],
                rejected=d["rejected"],
                seen=d["seen"],
                beam=list(d["beam"]),
                best=d.get("best"),
                history=d["history"],
                algo=d["algo"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"optimizer state is missing or has a bad field: {exc!r}") from exc
