"""The live progress of ``streamrl optimize``: a rich panel (round, evaluations in flight, candidates
and their scores, the best so far), or one plain line per event."""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from streamrl.optimizer.engine import Engine
from streamrl.schemas import OptimizerEvent


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def event_line(e: OptimizerEvent) -> str:
    """One plain line for an event."""
    v = e.resource_version or "-"
    if e.kind == "candidate":
        why = f": {e.reason}" if e.reason else ""
        return f"round {e.round}: candidate {v} {e.status}{why} (from {', '.join(e.parent_versions) or '-'})"
    if e.kind == "evaluation":
        return f"round {e.round}: evaluating {v} on {len(e.task_ids)} {e.split} tasks ({e.eval_id})"
    if e.kind == "score":
        return (
            f"round {e.round}: {v} scored {_f(e.score)} on {e.count} {e.split} tasks "
            f"({e.succeeded} ok, {e.failed} failed, {e.timed_out} timed out)"
        )
    if e.kind == "best":
        return f"round {e.round}: new best {v} at {_f(e.score)}"
    if e.kind == "round":
        return f"round {e.round} done: leader {v} at {_f(e.score)} on the whole val set"
    return f"{e.kind} {e.text or ''}".strip()


class Progress:
    """Collects the run's events (an engine listener) and renders them."""

    def __init__(self, engine: Engine, rounds: int, console: Console, mode: str) -> None:
        self.engine = engine
        self.rounds = rounds
        self.console = console
        self.mode = mode
        self.t0 = time.monotonic()
        self.events: deque[OptimizerEvent] = deque(maxlen=12)
        self.scores: dict[str, float] = {}
        engine.listeners.append(self.on_event)

    def on_event(self, e: OptimizerEvent) -> None:
        self.events.append(e)
        if e.kind == "score" and e.resource_version and e.split == "val" and e.score is not None:
            self.scores[e.resource_version] = e.score
        if self.mode == "plain":
            line = f"[{time.monotonic() - self.t0:6.0f} s] {event_line(e)}"
            self.console.print(line, highlight=False, soft_wrap=True)  # one line per event, unwrapped

    def render(self) -> RenderableType:
        eng = self.engine
        st = eng.state
        head = Table.grid(padding=(0, 3))
        head.add_column()
        head.add_column()
        if st is None:
            return Panel("starting ...", title="streamrl optimize")
        first = st.history[0]["leader_score"] if st.history else None
        best = st.best or {}
        head.add_row(
            f"round {min(st.round, self.rounds)}/{self.rounds}  phase {st.phase}",
            f"val score: seed {_f(first)}  best {_f(best.get('score'))} ({best.get('version', '-')})",
        )
        head.add_row(
            f"rollouts published {st.rollouts}",
            f"candidates {len(st.candidates) - 1}, rejected {len(st.rejected)}  "
            f"elapsed {time.monotonic() - self.t0:.0f} s",
        )
        flight = Table(title="evaluations in flight", expand=True, show_edge=False)
        for col in ("evaluation", "version", "split", "scored", "deadline in"):
            flight.add_column(col)
        now = time.time()
        for ev in st.evals.values():
            if ev.published and not ev.finished:
                flight.add_row(
                    ev.eval_id.split(".", 1)[-1],
                    ev.version,
                    ev.split,
                    f"{ev.scored()}/{len(ev.task_ids)}",
                    f"{max(0.0, (ev.deadline or now) - now):.0f} s",
                )
        scores = Table(title="val scores", expand=True, show_edge=False)
        scores.add_column("version")
        scores.add_column("score")
        scores.add_column("parents")
        for version, score in sorted(self.scores.items(), key=lambda kv: -kv[1])[:8]:
            parents = ", ".join(st.candidates.get(version, {}).get("parents", [])) or "(seed)"
            scores.add_row(version, _f(score), parents)
        log = "\n".join(event_line(e) for e in list(self.events)[-6:])
        return Panel(
            Group(head, flight, scores, log),
            title=f"streamrl optimize {st.run_id} ({st.algorithm})",
        )
