"""ValidationResult: the record of a policy version's validation reward, and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamrl.schemas import ValidationResult
from streamrl.schemas.serde import Serde

GOOD = dict(
    policy_name="policy", policy_version=20, count=4, succeeded=2, failed=1, timed_out=1,
    mean=0.375, std=0.4145, min=0.0, max=1.0,
)  # fmt: skip


def test_round_trip_and_key() -> None:
    rec = ValidationResult(**GOOD)
    assert rec.key() == "policy/20"
    assert Serde().decode(Serde().encode(rec), ValidationResult) == rec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": 5}, "count=5 must be >= 1 and = succeeded \\+ failed \\+ timed_out"),
        ({"count": 0, "succeeded": 0, "failed": 0, "timed_out": 0}, "count=0 must be >= 1"),
        ({"mean": 1.5}, "mean 1.5 outside"),
        ({"min": 0.25}, "failed or timed-out rollouts score 0, but min is 0.25"),
        ({"std": -0.1}, "std must be >= 0"),
        ({"mean": float("nan")}, "mean must be finite"),
        ({"policy_version": -1}, "policy_version must be >= 0"),
    ],
)
def test_invalid_figures_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ValidationResult(**{**GOOD, **change})
