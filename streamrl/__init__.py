"""StreamRL: train LLM agents with reinforcement learning over Apache Kafka.

This package is the glue: config (:mod:`streamrl.config`), Kafka client factories
(:mod:`streamrl.kafka`) and topic admin (:mod:`streamrl.topics`), the local broker launcher
(:mod:`streamrl.broker`), the dead-letter sink, metrics helpers and the CLI. It imports no stage at
module level; the public agent SDK names are re-exported lazily from ``streamrl.sdk``::

    from streamrl import rollout, emit_reward

    @rollout
    def my_agent(task, llm): ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public SDK names and the module that defines them.
_LAZY = {
    "rollout": "streamrl.sdk",
    "emit_reward": "streamrl.sdk",
    "LLM": "streamrl.sdk",
    "Agent": "streamrl.sdk",
}

__all__ = ["LLM", "Agent", "__version__", "emit_reward", "rollout"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
