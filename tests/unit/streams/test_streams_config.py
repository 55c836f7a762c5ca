"""StreamsSettings validation and the Settings → Faust translation (names, broker, credentials)."""

from __future__ import annotations

import pytest

from streamrl.config import load_settings
from streamrl.errors import ConfigError
from streamrl.streams.faust_config import faust_broker, streams_topics


def test_bad_pattern_and_timeouts_are_config_errors():
    with pytest.raises(ConfigError, match="train_agents"):
        load_settings(None, streams={"train_agents": ["("]})
    with pytest.raises(ConfigError, match="tick_interval_s"):
        load_settings(None, streams={"tick_interval_s": 5, "join_timeout_s": 1})
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(None, streams={"nope": 1})


def test_names_follow_the_prefix():
    s = load_settings(None, topics={"prefix": "exp1."}, streams={"group_partitions": 2})
    n = streams_topics(s)
    assert (
        n.app_id == "exp1.streams" and n.ticks == "exp1.streams-ticks" and n.groups == "exp1.streams-groups"
    )
    assert n.requests == "exp1.requests" and n.join_partitions == s.topics.partitions["requests"]
    assert n.group_partitions == 2


def test_broker_and_sasl_credentials_are_translated():
    import faust

    s = load_settings(
        None,
        kafka={
            "bootstrap_servers": "a:1,b:2",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "u",
            "sasl_password": "p",
        },
    )
    out = faust_broker(s)
    assert out["broker"] == ["kafka://a:1", "kafka://b:2"]
    creds = out["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, str(creds.mechanism.value)) == ("u", "p", "SCRAM-SHA-512")
    assert "broker_credentials" not in faust_broker(load_settings(None))


def test_oauthbearer_is_refused():
    s = load_settings(None, kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"})
    with pytest.raises(ConfigError, match="OAUTHBEARER"):
        faust_broker(s)
