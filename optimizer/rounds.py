"""What every optimization algorithm shares: the run loop, the baseline, candidates, bests, rounds.

An algorithm is a state machine over the run's state (``round``, ``phase``): :meth:`Algorithm.step`
does one phase and saves; :meth:`Algorithm.run` steps until the last round is done, so a restarted
run continues with the phase it was in. Every random choice comes from :meth:`Algorithm.rng`, seeded
by ``optimize.seed``, the round and the purpose, so a resumed run draws what the first one drew.
"""

from __future__ import annotations

import random

from streamrl.optimizer.engine import Engine, OptimizerError
from streamrl.optimizer.evaluation import Evaluation
from streamrl.optimizer.state import RunState

MAX_TEXT_CHARS = 4000
"""Longest critique kept in a candidate event."""


def batches(ids: list[str], size: int, n: int, rng: random.Random) -> list[list[str]]:
    """``n`` batches of ``size`` ids (fewer when there are fewer ids): a shuffled pass over ``ids``,
    then another, so batches differ as long as there are ids to spare."""
    size = min(size, len(ids))
    out: list[list[str]] = []
    pool: list[str] = []
    for _ in range(n):
        batch: list[str] = []
        while len(batch) < size:
            if not pool:
                pool = list(ids)
                rng.shuffle(pool)
            tid = pool.pop()
            if tid not in batch:
                batch.append(tid)
        out.append(sorted(batch))
    return out


class Algorithm:
    """The base of APO and few-shot: subclasses define :attr:`rounds` and :meth:`step`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def st(self) -> RunState:
        assert self.engine.state is not None
        return self.engine.state

    @property
    def rounds(self) -> int:
        raise NotImplementedError

    async def step(self) -> None:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.st.round > self.rounds or self.st.phase == "done"

    async def run(self) -> None:
        """Step until the last round is done (each step saves the state)."""
        while not self.done:
            await self.step()

    def rng(self, purpose: str) -> random.Random:
        """The random source of one choice of the current round."""
        return random.Random(f"{self.engine.cfg.seed}/{self.st.round}/{purpose}")

    @staticmethod
    def error(message: str) -> OptimizerError:
        return OptimizerError(message)

    def eval_on(self, version: str, task_ids: list[str], split: str, tag: str) -> Evaluation:
        """An evaluation of ``version`` on ``task_ids``: a finished one of the run on the same tasks is
        reused, else ``<run>.r<round>.<tag>``."""
        cached = self.st.score_of(version, task_ids, split)
        if cached is not None:
            return cached
        return self.engine.evaluation(f"{self.st.run_id}.r{self.st.round}.{tag}", version, split, task_ids)

    async def baseline(self) -> float:
        """Round 0: the seed prompt on the whole val set (``score_first``); it starts the beam and the best."""
        st = self.st
        ev = self.eval_on(st.seed_version, list(self.engine.val_ids), "val", f"full-{st.seed_version}")
        await self.engine.run_evals([ev])
        assert ev.result is not None
        st.beam = [st.seed_version]
        self.consider_best(st.seed_version, ev.result.score)
        self.record_round(st.seed_version, ev.result.score, {st.seed_version: ev.result.score}, 0, 0)
        return ev.result.score

    def record_candidate(
        self, version: str | None, parents: list[str], reason: str | None, text: str | None, note: str | None
    ) -> None:
        """An accepted (``version`` set) or rejected candidate: an event, and the rejected list."""
        st, eng = self.st, self.engine
        if version is None:
            st.rejected.append(
                {"round": st.round, "parents": parents, "reason": reason, "preview": (text or "")[:300]}
            )
        eng.emit(
            "candidate",
            resource_name=st.resource_name,
            resource_version=version,
            parent_versions=parents,
            status="accepted" if version is not None else "rejected",
            reason=reason,
            text=(note or "")[:MAX_TEXT_CHARS] or None,
        )

    def consider_best(self, version: str, score: float) -> None:
        """Make ``version`` the best if it beats the best so far (on the whole val set)."""
        st = self.st
        if st.best is None or score > st.best["score"]:
            st.best = {"version": version, "score": score, "round": st.round}
            self.engine.emit("best", resource_name=st.resource_name, resource_version=version, score=score)

    def record_round(
        self, leader: str, score: float, evaluated: dict[str, float], accepted: int, rejected: int
    ) -> None:
        """The round's line of the history, and its event."""
        st = self.st
        assert st.best is not None
        st.history.append(
            {
                "round": st.round,
                "leader": leader,
                "leader_score": score,
                "best": st.best["version"],
                "best_score": st.best["score"],
                "evaluated": dict(evaluated),
                "accepted": accepted,
                "rejected": rejected,
                "rollouts": st.rollouts,
            }
        )
        self.engine.emit("round", resource_name=st.resource_name, resource_version=leader, score=score)
