"""Checks ``streamrl dev`` makes before it starts anything (broker, topics, children).

A mistake these catch would otherwise surface minutes later: a missing dataset as a failed
``publish`` child, an agent that cannot be imported as a worker restarted under ``dev.restart``
until the policy gives up. Each raises one error naming the config key and the value.
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamrl.config import Settings
from streamrl.errors import ConfigError


def preflight(settings: Settings) -> None:
    """Run every check below, in order.

    Raises:
        ConfigError: a dataset is missing, or ``worker.agent`` is unset while ``dev.workers`` > 0.
        AgentLoadError: ``worker.agent`` cannot be imported or is not an agent (:func:`check_agent`).
    """
    check_datasets(settings)
    check_agent(settings)


def check_datasets(settings: Settings) -> None:
    """Every ``dev.datasets[i].path`` exists.

    Raises:
        ConfigError: ``dev.datasets[i].path: <path> does not exist (...)``.
    """
    for i, ds in enumerate(settings.dev.datasets):
        if not ds.path.exists():
            raise ConfigError(
                f"dev.datasets[{i}].path: {ds.path} does not exist (relative paths are relative to "
                f"{Path.cwd()}; run from the repository root)"
            )


def check_agent(settings: Settings) -> None:
    """Import ``worker.agent`` as the workers will (:func:`streamrl.consumers.runner.import_agent`,
    with ``dev.pythonpath`` importable as the children's ``PYTHONPATH`` makes it), without
    instantiating it. Nothing to check without workers (``dev.workers: 0``).

    Raises:
        ConfigError: ``worker.agent`` is not set.
        AgentLoadError: ``worker.agent '<value>': cannot import '<module>': ModuleNotFoundError: ...``
            or ``worker.agent '<value>': AttributeError: module '<module>' has no attribute '<name>'``.
    """
    if settings.dev.workers == 0:
        return
    spec = settings.worker.agent
    if not spec:
        raise ConfigError(
            "worker.agent: not set; name the agent the workers run (package.module:function or :Class)"
        )
    for path in reversed([str(p.resolve()) for p in settings.dev.pythonpath]):
        if path not in sys.path:
            sys.path.insert(0, path)
    from streamrl.consumers.runner import import_agent

    import_agent(spec, key="worker.agent")
