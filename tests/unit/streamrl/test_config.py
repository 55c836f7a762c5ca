"""Config loading: YAML + env precedence, and clear errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrl.config import Settings, load_settings
from streamrl.errors import ConfigError, FlagError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("STREAMRL_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(Path(__file__).parent)  # no streamrl.yaml here


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "streamrl.yaml"
    p.write_text(text)
    return p


def test_defaults_without_file() -> None:
    s = load_settings()
    assert s.topics.name("samples") == "streamrl.samples"
    assert s.group_id("workers") == "streamrl-workers"
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_yaml_values_are_read(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "rl:\n  group_size: 4\ntopics:\n  prefix: exp1.\n"))
    assert s.rl.group_size == 4
    assert s.topics.name("tasks") == "exp1.tasks"
    assert s.group_id("workers") == "exp1-workers"


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(tmp_path, "rl:\n  group_size: 4\n  max_staleness: 2\nkafka:\n  bootstrap_servers: a:1\n")
    monkeypatch.setenv("STREAMRL_RL__GROUP_SIZE", "16")
    monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", "broker-x:9092")
    monkeypatch.setenv("STREAMRL_TOPIC_PREFIX", "shared.")
    s = load_settings(cfg)
    assert s.rl.group_size == 16
    assert s.rl.max_staleness == 2  # untouched by env: the file's value stays
    assert s.kafka.bootstrap_servers == "broker-x:9092"
    assert s.topics.name("dlq") == "shared.dlq"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "rl:\n  group_sise: 4\n"))
    assert "rl.group_sise: unknown key" in str(err.value)
    assert "streamrl.yaml" in str(err.value)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"samplr: unknown key"):
        load_settings(write(tmp_path, "samplr:\n  x: 1\n"))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "rl:\n  group_size: many\n"))
    msg = str(err.value)
    assert "rl.group_size" in msg and "'many'" in msg


def test_constraint_violation_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rl.max_staleness: .*greater than or equal to 0"):
        load_settings(write(tmp_path, "rl:\n  max_staleness: -1\n"))


def test_bad_env_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRL_RL__TRAIN_BATCH_SIZE", "zero")
    with pytest.raises(ConfigError, match=r"rl.train_batch_size.*STREAMRL_RL__TRAIN_BATCH_SIZE"):
        load_settings()


def test_copartitioning_is_enforced(tmp_path: Path) -> None:
    text = "topics:\n  partitions: {tasks: 1, samples: 2, requests: 4, trajectories: 2, batches: 1, checkpoints: 1, dlq: 1, validation: 1}\n"
    with pytest.raises(ConfigError, match="co-partitioned"):
        load_settings(write(tmp_path, text))


def test_not_yaml_and_not_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "rl: [1, 2\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rl: [1, 2\n",
            ":2:1: not valid YAML: expected ',' or ']', but got the end of the file (parsing a "
            "flow sequence that starts at line 1, column 5)",
        ),
        ("rl:\n\tgroup_size: 4\n", ":2:1: not valid YAML: a tab character: YAML indents with spaces only"),
        (
            "# Title\n\nSome text: with a colon: here\n",
            ":3:24: not valid YAML: a ':' where no 'key: value' can start",
        ),
    ],
    ids=["unclosed", "tab", "prose"],
)
def test_not_yaml_is_one_line_with_file_line_column(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}{expected}") and "\n" not in message, message


def test_one_config_error_is_one_line_several_are_a_header_and_a_line_each(tmp_path: Path) -> None:
    path = write(tmp_path, "rl:\n  group_sise: 4\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: rl.group_sise: unknown key"
    path = write(tmp_path, "rl:\n  group_sise: 4\n  max_staleness: x\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    header, *lines = str(info.value).splitlines()
    assert header == f"invalid configuration from {path}:"
    assert sorted(line.split(":")[0] for line in lines) == ["  rl.group_sise", "  rl.max_staleness"]


def test_sasl_needs_mechanism(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        load_settings(write(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n"))


def test_security_passes_through_to_clients(tmp_path: Path) -> None:
    from streamrl.kafka import consumer_config, producer_config

    cfg = write(
        tmp_path,
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: u\n  sasl_password: secret\n  ssl_ca_location: /etc/ca.pem\n"
        "  client_properties: {client.id: me}\n",
    )
    s = load_settings(cfg)
    assert "secret" not in repr(s)  # SecretStr
    for conf in (producer_config(s), consumer_config(s, "g")):
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.password"] == "secret"
        assert conf["ssl.ca.location"] == "/etc/ca.pem"
        assert conf["client.id"] == "me"
    assert producer_config(s)["enable.idempotence"] is True
    assert producer_config(s)["acks"] == "all"
    c = consumer_config(s, "g")
    assert c["enable.auto.commit"] is False
    assert c["partition.assignment.strategy"] == "cooperative-sticky"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[3] / "streamrl.example.yaml"
    s = load_settings(example)
    assert isinstance(s, Settings)


def test_example_config_is_current() -> None:
    """streamrl.example.yaml is generated from the models; regenerate with `streamrl config example`."""
    from streamrl.config.example import render_example

    example = Path(__file__).resolve().parents[3] / "streamrl.example.yaml"
    assert example.read_text() == render_example(), "run: streamrl config example > streamrl.example.yaml"


def test_bootstrap_follows_local_broker_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kafka.local.port` alone points every client at the broker `streamrl kafka start` runs."""
    s = load_settings(write(tmp_path, "kafka: {local: {port: 19592, controller_port: 19593}}\n"))
    assert s.kafka.bootstrap_servers == "127.0.0.1:19592"
    s = load_settings(write(tmp_path, "kafka: {local: {host: 0.0.0.0}}\n"))
    assert s.kafka.bootstrap_servers == "0.0.0.0:9092"
    explicit = "kafka: {bootstrap_servers: 'b1:9092', local: {port: 19592}}\n"
    assert load_settings(write(tmp_path, explicit)).kafka.bootstrap_servers == "b1:9092"
    monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", "ext:9092")
    assert (
        load_settings(write(tmp_path, "kafka: {local: {port: 19592}}\n")).kafka.bootstrap_servers
        == "ext:9092"
    )


def test_librdkafka_repeats_are_held_back() -> None:
    """An unreachable broker's connection errors (one every ~50 ms) show once per window, then a count."""
    import logging

    from streamrl.kafka import _RepeatFilter

    filt = _RepeatFilter(window_s=60)

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("streamrl.librdkafka", logging.ERROR, __file__, 1, msg, None, None)

    shown = [
        filt.filter(rec(f"Connect to 127.0.0.1:1 failed (after {i}ms in state CONNECT)")) for i in range(50)
    ]
    assert shown == [True] + [False] * 49
    assert filt.filter(rec("a different message"))
    filt.window_s = 0  # window over: the next one passes and says how many were held
    r = rec("Connect to 127.0.0.1:1 failed (after 9ms in state CONNECT)")
    assert filt.filter(r) and "49 similar" in r.getMessage()


def test_flags_and_overrides_beat_env_which_beats_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path, "rl:\n  group_size: 4\n  max_staleness: 3\ntopics:\n  prefix: file.\n")
    monkeypatch.setenv("STREAMRL_RL__GROUP_SIZE", "16")
    monkeypatch.setenv("STREAMRL_RL__MAX_STALENESS", "5")
    monkeypatch.setenv("STREAMRL_TOPIC_PREFIX", "env.")
    s = load_settings(cfg, flags={"--group-size": ("rl.group_size", 2), "--unset": ("rl.seed", None)})
    assert (s.rl.group_size, s.rl.max_staleness, s.topics.prefix) == (2, 5, "env.")
    s = load_settings(cfg, topics={"prefix": "explicit."}, base={"rl": {"max_staleness": 9, "seed": 7}})
    assert (s.topics.prefix, s.rl.max_staleness, s.rl.seed) == ("explicit.", 5, 7)  # base: below env


def test_a_bad_flag_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRL_TRAINER__MAX_STEPS", "3")  # the flag's value is the one judged
    with pytest.raises(ConfigError) as err:
        load_settings(flags={"--max-steps": ("trainer.max_steps", 0)})
    assert str(err.value) == (
        "Invalid value for '--max-steps': trainer.max_steps: Input should be greater than or equal to 1 (got 0)"
    )
    with pytest.raises(
        ConfigError,
        match=r"^Invalid value for '--backend': trainer.backend: Input should be 'torch' or 'verl'",
    ):
        load_settings(flags={"--backend": ("trainer.backend", "tf")})
    # a discriminated union's tag (optimize.algorithm.type) is judged as the flag that set it
    with pytest.raises(FlagError) as tag_err:
        load_settings(flags={"--algorithm": ("optimize.algorithm.type", "apoo")})
    assert str(tag_err.value) == (
        "Invalid value for '--algorithm': optimize.algorithm.type: expected one of 'apo', 'fewshot' (got 'apoo')"
    )
