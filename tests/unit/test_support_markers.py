"""The marker check of tests/support/markers.py, run on a small test tree in a separate pytest session."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest
from tests.support.markers import pytest_runtest_setup  # noqa: F401

@pytest.fixture
def kafka_bootstrap():
    return "127.0.0.1:1"

@pytest.fixture
def settings(kafka_bootstrap):
    return kafka_bootstrap
"""


def test_a_broker_test_without_the_marker_fails_at_setup(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    integration: talks to a real Kafka broker\n")
    pytester.makepyfile(
        test_unmarked="def test_uses_it(settings):\n    assert settings\n\ndef test_no_broker():\n    pass\n",
        test_marked=(
            "import pytest\npytestmark = pytest.mark.integration\n\n"
            "def test_uses_it(settings):\n    assert settings\n"
        ),
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_unmarked.py::test_uses_it uses the real Kafka broker (fixture kafka_bootstrap)*integration*"]
    )
