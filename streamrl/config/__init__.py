"""StreamRL configuration: one YAML file, one section per stage, validated by pydantic-settings.

Precedence (highest first): explicit overrides (command-line flags, ``load_settings(flags=...)`` and
``load_settings(**sections)``), then ``STREAMRL_BOOTSTRAP_SERVERS`` / ``STREAMRL_TOPIC_PREFIX`` /
``STREAMRL_SCHEMA_REGISTRY_URL``, then ``STREAMRL_<SECTION>__<FIELD>`` environment variables
(``STREAMRL_SAMPLER__MAX_EPOCHS=3``), then the YAML file (with ``base`` merged over it), then the
defaults. Unknown keys and bad values fail at start with the key path, the reason and where the
value came from (a flag, an environment variable, the file): :class:`streamrl.errors.ConfigError`.
This package imports no torch, faust or vllm.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamrl.config.consumers import GatewaySettings, WorkerSettings
from streamrl.config.dev import DevSettings
from streamrl.config.inference import InferenceSettings
from streamrl.config.kafka import COMPACTED_TOPICS, TOPIC_NAMES, KafkaSettings, TopicsSettings
from streamrl.config.optimizer import OptimizeSettings
from streamrl.config.producers import PublishSettings, SamplerSettings
from streamrl.config.rl import RLSettings
from streamrl.config.security import SecuritySettings
from streamrl.config.streams import StreamsSettings
from streamrl.config.trainer import TrainerSettings
from streamrl.errors import ConfigError, FlagError

__all__ = [
    "COMPACTED_TOPICS",
    "TOPIC_NAMES",
    "ConfigError",
    "Settings",
    "default_config_path",
    "flag_overrides",
    "load_settings",
    "yaml_error",
]

ENV_PREFIX = "STREAMRL_"
#: Environment variables with a short name, mapped to their key path.
ENV_SHORTCUTS: dict[str, tuple[str, str]] = {
    "STREAMRL_BOOTSTRAP_SERVERS": ("kafka", "bootstrap_servers"),
    "STREAMRL_TOPIC_PREFIX": ("topics", "prefix"),
    "STREAMRL_SCHEMA_REGISTRY_URL": ("kafka", "schema_registry_url"),
}

#: The sources below the explicit overrides, for the ``Settings(...)`` call of :func:`load_settings`:
#: ``(shortcut environment variables, file data)``. Empty for a bare ``Settings(...)``.
_LOWER_SOURCES: ContextVar[tuple[dict[str, Any], dict[str, Any]]] = ContextVar(
    "streamrl_lower_sources", default=({}, {})
)


class _DictSource(PydanticBaseSettingsSource):
    """A settings source that returns a fixed mapping (the YAML file, the shortcut variables)."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


RECORD_OVERHEAD_BYTES = 8192
"""Room a topic's message size must leave beside a task payload: the key (a task id up to 1,024
characters, 4 bytes each at most), the Sample's other fields and Kafka's record framing."""


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
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    """Tokens of StreamRL's own HTTP endpoints and the CA its clients trust (docs/SECURITY.md)."""
    optimize: OptimizeSettings = Field(default_factory=OptimizeSettings)
    """Prompt optimization (``streamrl optimize``): the prompt, the algorithm, evaluations, outputs."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit overrides (init kwargs) > shortcut variables > STREAMRL_<SECTION>__<KEY> > file.
        shortcuts, file_data = _LOWER_SOURCES.get()
        return (
            init_settings,
            _DictSource(settings_cls, shortcuts),
            env_settings,
            _DictSource(settings_cls, file_data),
        )

    @model_validator(mode="after")
    def _across_sections(self) -> Settings:
        """Rules between sections (each names both keys and how to fix it)."""
        limit = self.topics.max_message_bytes - RECORD_OVERHEAD_BYTES
        if self.publish.max_task_bytes > limit:
            raise ValueError(
                f"publish.max_task_bytes={self.publish.max_task_bytes} is over what a topic takes: "
                f"topics.max_message_bytes={self.topics.max_message_bytes} minus {RECORD_OVERHEAD_BYTES} "
                f"bytes for the key and the Sample's other fields = {limit}; lower publish.max_task_bytes "
                "or raise topics.max_message_bytes"
            )
        return self

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
    except UnicodeDecodeError as exc:
        raw = path.read_bytes()
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x}: {exc.reason}); save the file as UTF-8"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def yaml_error(path: Path | str, exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: ``<file>:<line>:<column>: not valid YAML: <what is wrong>``
    (line and column from 1, where the parser stopped), with what it was reading and where that
    began, instead of PyYAML's four-line message.

    ``streamrl.yaml:4:4: not valid YAML: bad indentation (this line is indented differently from
    the mapping it is in, which starts at line 2, column 3)``.
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"{path}: not valid YAML: " + " ".join(str(exc).split())
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    began = f"line {start.line + 1}, column {start.column + 1}" if start is not None else None
    if problem.startswith("expected <block end>"):
        what = "bad indentation (this line is indented differently from the block it is in"
        what += f", which starts at {began})" if began else ")"
    elif "'\\t'" in problem or "\t" in problem:
        what = "a tab character: YAML indents with spaces only"
    elif problem == "mapping values are not allowed here":
        what = (
            "a ':' where no 'key: value' can start (a value holding ': ' needs quotes; is this a YAML file?)"
        )
    else:
        what = problem.replace("'<stream end>'", "the end of the file")
        if context and began:
            what += f" ({context.removeprefix('while ')} that starts at {began})"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {what}"


def _origin(loc: tuple[str, ...], origins: Mapping[tuple[str, ...], str]) -> str | None:
    """The flag (or other named origin) whose key path is ``loc`` or a prefix of it."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return None


def _loc(err: Mapping[str, Any]) -> tuple[str, ...]:
    """The key path of a validation error; for a discriminated union whose tag is wrong
    (``optimize.algorithm``), the path of the tag itself (``optimize.algorithm.type``)."""
    loc = tuple(str(p) for p in err["loc"])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        if tag:
            loc += (tag,)
    return loc


def _describe(exc: ValidationError, source: str, origins: Mapping[tuple[str, ...], str]) -> str:
    """One line per flag error, in click's words as for a flag the parser rejects
    (``Invalid value for '--max-steps': trainer.max_steps: <reason> (got 0)``), then the
    other errors: one alone is one line (``<source>: rl.group_sise: unknown key``; without a file,
    the key path first), several are a header ``invalid configuration from <source>:`` and one
    indented line each, with its key path."""
    flag_lines, lines = [], []
    for err in exc.errors():
        loc_t = _loc(err)
        loc = ".".join(loc_t)
        msg = str(err["msg"]).removeprefix("Value error, ")  # our validators' own sentence
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        given = err.get("input")
        if err["type"] == "union_tag_invalid":  # the tag's value, not the whole section
            msg = f"expected one of {err.get('ctx', {}).get('expected_tags', '?')}"
            given = err.get("ctx", {}).get("tag", given)
        shown = "" if err["type"] == "extra_forbidden" or isinstance(given, dict) else f" (got {given!r})"
        flag = _origin(loc_t, origins)
        if flag is not None:
            flag_lines.append(f"Invalid value for '{flag}': {loc}: {msg}{shown}")  # click's wording
            continue
        env_name = ENV_PREFIX + "__".join(loc_t).upper()
        origin = f" [from env {env_name}]" if env_name in os.environ else ""
        lines.append(f"  {loc}: {msg}{shown}{origin}" if loc else f"  {msg}{origin}")
    if len(lines) == 1:
        one = lines[0].strip()
        flag_lines.append(f"{source}: {one}" if source != "defaults" else one)
    elif lines:
        flag_lines.append(f"invalid configuration from {source}:\n" + "\n".join(lines))
    return "\n".join(flag_lines)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: mappings merged key by key, recursively; other values replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def flag_overrides(
    flags: Mapping[str, tuple[str, Any]],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Sections set by command-line flags, and which flag set each key path.

    Args:
        flags: ``{"--max-steps": ("trainer.max_steps", 5)}``; None values (flags not given) are left out.

    Returns:
        ``({"trainer": {"max_steps": 5}}, {("trainer", "max_steps"): "--max-steps"})``; paths
        (``pathlib.Path``) become strings.
    """
    sections: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for flag, (key, value) in flags.items():
        if value is None:
            continue
        *parents, name = key.split(".")
        node = sections
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = str(value) if isinstance(value, Path) else value
        origins[tuple(key.split("."))] = flag
    return sections, origins


def load_settings(
    path: str | Path | None = None,
    *,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    base: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Load and validate the configuration.

    Args:
        path: YAML file; None uses :func:`default_config_path` (or the defaults if there is none).
        flags: command-line flags, ``{"--max-steps": ("trainer.max_steps", 0)}`` (flag -> dotted key
            path, value); they override everything, and an invalid one is reported as
            ``Invalid value for '--max-steps': trainer.max_steps: <reason> (got 0)``. None values
            count as not given.
        base: sections merged over the file, below the environment (an embedded config such as
            ``streamrl demo``'s).
        **overrides: top-level sections (``topics={"prefix": "t1."}``) that override the environment
            and the file, as flags do (tests and tools that set values explicitly).

    Returns:
        The validated :class:`Settings`.

    Raises:
        ConfigError: the file is unreadable or not YAML, or any key is unknown or has a bad value;
            the message lists every offending key path with the reason and the flag that set it.
        FlagError: (a ConfigError) every bad value came from a flag.
    """
    cfg_path = Path(path) if path is not None else default_config_path()
    data: dict[str, Any] = _read_yaml(cfg_path) if cfg_path is not None else {}
    data = _merge(data, base or {})
    from_flags, origins = flag_overrides(flags or {})
    explicit = _merge(overrides, from_flags)
    source = str(cfg_path) if cfg_path is not None else "defaults"
    env_used = sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
    if env_used:
        source += " and environment (" + ", ".join(env_used) + ")"
    shortcuts: dict[str, Any] = {}
    for env_name, (section, key) in ENV_SHORTCUTS.items():
        value = os.environ.get(env_name)
        if value:
            shortcuts.setdefault(section, {})[key] = value
    token = _LOWER_SOURCES.set((shortcuts, data))
    try:
        return Settings(**explicit)
    except ValidationError as exc:
        message = _describe(exc, source, origins)
        if all(_origin(_loc(e), origins) for e in exc.errors()):
            raise FlagError(message) from None  # a usage error: exit 2, as click's
        raise ConfigError(message) from None
    finally:
        _LOWER_SOURCES.reset(token)
