"""StreamRL configuration: one YAML file, one section per stage, validated by pydantic-settings.

Precedence (highest first): ``STREAMRL_BOOTSTRAP_SERVERS`` / ``STREAMRL_TOPIC_PREFIX``, then
``STREAMRL_<SECTION>__<FIELD>`` environment variables (``STREAMRL_SAMPLER__MAX_EPOCHS=3``), then the
YAML file, then the defaults. Unknown keys and bad values fail at start with the key path and the
reason (:class:`streamrl.errors.ConfigError`). This package imports no torch, faust or vllm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamrl.config.consumers import GatewaySettings, WorkerSettings
from streamrl.config.dev import DevSettings
from streamrl.config.inference import InferenceSettings
from streamrl.config.kafka import COMPACTED_TOPICS, TOPIC_NAMES, KafkaSettings, TopicsSettings
from streamrl.config.producers import PublishSettings, SamplerSettings
from streamrl.config.rl import RLSettings
from streamrl.config.streams import StreamsSettings
from streamrl.config.trainer import TrainerSettings
from streamrl.errors import ConfigError

__all__ = [
    "COMPACTED_TOPICS",
    "TOPIC_NAMES",
    "ConfigError",
    "Settings",
    "default_config_path",
    "load_settings",
]

ENV_PREFIX = "STREAMRL_"
#: Environment variables with a short name, mapped to their key path.
ENV_SHORTCUTS: dict[str, tuple[str, str]] = {
    "STREAMRL_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "STREAMRL_TOPIC_PREFIX": ("topics", "prefix"),
    "STREAMRL_SCHEMA_REGISTRY_URL": ("kafka", "schema_registry_url"),
}


class Settings(BaseSettings):
    """The whole StreamRL configuration (``streamrl.yaml``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    """Cluster connection and security, and the local broker."""
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    """Topic names (prefix), partitions and topic configs."""
    rl: RLSettings = Field(default_factory=RLSettings)
    """Knobs shared by sampler, streams and trainer: group size, batch size, staleness bound."""
    publish: PublishSettings = Field(default_factory=PublishSettings)
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    streams: StreamsSettings = Field(default_factory=StreamsSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    dev: DevSettings = Field(default_factory=DevSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the YAML file (passed as init kwargs).
        return (env_settings, init_settings)

    def group_id(self, name: str) -> str:
        """Consumer group id of a stage: ``group_id("workers") -> "streamrl-workers"``."""
        stem = self.topics.prefix.rstrip(".-_") or "streamrl"
        return f"{stem}-{name}"


def default_config_path() -> Path | None:
    """The config file used when none is given: ``$STREAMRL_CONFIG``, else ``./streamrl.yaml`` if present."""
    env = os.environ.get("STREAMRL_CONFIG")
    if env:
        return Path(env)
    local = Path("streamrl.yaml")
    return local if local.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:  # a stream, so YAML errors name the file
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        given = err.get("input")
        shown = "" if err["type"] == "extra_forbidden" or isinstance(given, dict) else f" (got {given!r})"
        env_name = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
        origin = f" [from env {env_name}]" if env_name in os.environ else ""
        lines.append(f"  {loc}: {msg}{shown}{origin}")
    return f"invalid configuration from {source}:\n" + "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration.

    Args:
        path: YAML file; None uses :func:`default_config_path` (or the defaults if there is none).
        **overrides: top-level sections merged over the file (``topics={"prefix": "t1."}``), below env vars.

    Returns:
        The validated :class:`Settings`.

    Raises:
        ConfigError: the file is unreadable or not YAML, or any key is unknown or has a bad value;
            the message lists every offending key path with the reason.
    """
    cfg_path = Path(path) if path is not None else default_config_path()
    data: dict[str, Any] = _read_yaml(cfg_path) if cfg_path is not None else {}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    source = str(cfg_path) if cfg_path is not None else "defaults"
    env_used = sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
    if env_used:
        source += " and environment (" + ", ".join(env_used) + ")"
    for env_name, (section, key) in ENV_SHORTCUTS.items():
        value = os.environ.get(env_name)
        if value:
            sec = data.setdefault(section, {})
            if not isinstance(sec, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping")
            sec[key] = value
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    # Shortcut variables win over the nested STREAMRL_KAFKA__... form too.
    for env_name, (section, key) in ENV_SHORTCUTS.items():
        value = os.environ.get(env_name)
        if value:
            try:
                setattr(getattr(settings, section), key, value)
            except ValidationError as exc:
                raise ConfigError(_describe(exc, env_name)) from None
    return settings
