"""The staleness policy: one registry, owned by the trainer, with the names the config accepts."""

from __future__ import annotations

import typing

import pytest

from streamrl.config.rl import RLSettings
from streamrl.errors import ConfigError
from streamrl.trainer.staleness import (
    STALENESS_POLICIES,
    StalenessRule,
    get_staleness_fn,
    register_staleness_policy,
)


def test_the_config_accepts_exactly_the_registered_policies() -> None:
    accepted = typing.get_args(RLSettings.model_fields["staleness_policy"].annotation)
    assert set(accepted) == set(STALENESS_POLICIES) == {"drop", "weight"}


def test_drop_keeps_fresh_rows_at_weight_one_and_drops_stale_ones() -> None:
    drop = get_staleness_fn("drop")
    assert [drop(s, 1, 0.5) for s in (0, 1, 2, 5)] == [1.0, 1.0, None, None]


def test_weight_decays_per_version_past_the_bound() -> None:
    weight = get_staleness_fn("weight")
    assert [weight(s, 1, 0.5) for s in (0, 1, 2, 3, 4)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    assert weight(7, 0, 1.0) == 1.0


def test_rule_binds_the_settings_and_rejects_unknown_names() -> None:
    assert StalenessRule("weight", 0, 0.5).weight(2) == 0.25
    assert StalenessRule("drop", 2, 0.5).weight(3) is None
    with pytest.raises(ConfigError, match=r"rl.staleness_policy='keep'.*known: \['drop', 'weight'\]"):
        StalenessRule("keep", 1, 0.5)
    with pytest.raises(ValueError, match="already registered"):
        register_staleness_policy("drop")(lambda s, m, d: 1.0)


def test_streams_keys_moved_to_rl_with_a_one_line_hint() -> None:
    from streamrl.config import load_settings

    with pytest.raises(ConfigError, match=r"streams.staleness moved to rl.staleness_policy"):
        load_settings(None, streams={"staleness": "weight"})
    with pytest.raises(ConfigError, match=r"streams.stale_weight_decay moved to rl.stale_weight_decay"):
        load_settings(None, streams={"stale_weight_decay": 0.5})
