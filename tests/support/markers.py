"""The ``integration`` marker follows the broker, so ``-m "not integration"`` never starts Kafka.

``tests/conftest.py`` imports :func:`pytest_runtest_setup` as its hook: a test whose fixtures reach
the session's real broker (``kafka_bootstrap``, directly or through ``settings``,
``settings_factory``, ...) and that is not marked ``integration`` fails at setup, before the broker
starts, with the line to add.
"""

from __future__ import annotations

import pytest

BROKER_FIXTURE = "kafka_bootstrap"
"""The fixture every use of the session's broker goes through."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail ``item`` if it uses :data:`BROKER_FIXTURE` without the ``integration`` marker."""
    if BROKER_FIXTURE in getattr(item, "fixturenames", ()) and item.get_closest_marker("integration") is None:
        pytest.fail(
            f"{item.nodeid} uses the real Kafka broker (fixture {BROKER_FIXTURE}) but is not marked "
            "integration: add `pytestmark = pytest.mark.integration` to its module",
            pytrace=False,
        )
