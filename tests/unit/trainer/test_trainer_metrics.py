"""The trainer's Prometheus gauges: the staleness series exist from start-up and are set on every step,
0 when every row of the batch was fresh."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from streamrl.trainer import metrics as m


def _staleness() -> dict[str, float | None]:
    return {s: REGISTRY.get_sample_value("streamrl_trainer_staleness", {"stat": s}) for s in ("mean", "max")}


def test_staleness_is_set_on_every_step_zero_when_fresh() -> None:
    m.record_step(3, {"actor/loss": 0.5, "staleness/mean": 0.5, "staleness/max": 1.0}, 0.1, 100)
    assert _staleness() == {"mean": 0.5, "max": 1.0}
    m.record_step(4, {"actor/loss": 0.4, "staleness/mean": 0.0, "staleness/max": 0.0}, 0.1, 100)
    assert _staleness() == {"mean": 0.0, "max": 0.0}
    m.record_step(5, {"actor/loss": 0.3, "staleness/mean": 1.0, "staleness/max": 1.0}, 0.1, 100)
    m.record_step(6, {"actor/loss": 0.3}, 0.1, 100)  # a step without the figures: fresh, not the last value
    assert _staleness() == {"mean": 0.0, "max": 0.0}


def test_start_up_sets_the_series_from_the_resumed_checkpoint() -> None:
    m.record_start(7, 112, {"actor/loss": 0.2, "staleness/mean": 0.25, "staleness/max": 1.0})
    assert _staleness() == {"mean": 0.25, "max": 1.0}
    assert REGISTRY.get_sample_value("streamrl_trainer_version") == 7
    assert REGISTRY.get_sample_value("streamrl_trainer_consumed_rollouts") == 112
    m.record_start(0, 0, {})  # a fresh start: the series exist (a scrape before the first step sees 0)
    assert _staleness() == {"mean": 0.0, "max": 0.0}
    text = generate_latest(REGISTRY).decode()
    assert 'streamrl_trainer_staleness{stat="mean"} 0.0' in text
    assert 'streamrl_trainer_staleness{stat="max"} 0.0' in text
