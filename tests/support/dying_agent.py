"""An agent that imports (so ``streamrl dev``'s preflight passes) but cannot start in a worker: its
``Agent`` subclass raises when the worker instantiates it, so the worker exits 1 every time (the
supervision tests' child that keeps dying)."""

from __future__ import annotations

from typing import Any

from streamrl import LLM, Agent


class Dies(Agent):
    """Raises in ``__init__``: ``worker.agent: tests.support.dying_agent:Dies``."""

    def __init__(self) -> None:
        raise RuntimeError("dying_agent: this agent cannot start")

    def rollout(self, task: Any, llm: LLM) -> float:  # pragma: no cover - never constructed
        return 0.0
