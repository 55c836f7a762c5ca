"""The run directory of ``streamrl dev`` and the effective config every child is started with.

``<run_root>/<run_id>/`` holds ``config.yaml`` (the user's config plus what ``dev`` decided: the
broker address, the run's topic prefix, model paths, the inference port, run-local directories),
``logs/<child>.log``, ``checkpoints/``, ``streams/``, ``blobs/``, and at the end ``summary.json`` and
``reward.png``.
"""

from __future__ import annotations

import copy
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from streamrl.config import Settings, default_config_path, yaml_error
from streamrl.errors import ConfigError, StreamRLError


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx`` (UTC time and 4 random hex digits)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in (mappings merged recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def raw_config(path: Path | None) -> dict[str, Any]:
    """The YAML mapping of the config file (``path``, else the default file, else ``{}``).

    Raises:
        ConfigError: unreadable file or not a YAML mapping.
    """
    cfg = Path(path) if path is not None else default_config_path()
    if cfg is None:
        return {}
    try:
        data = yaml.safe_load(cfg.read_text())
    except OSError as exc:
        raise ConfigError(f"{cfg}: cannot read config file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error(cfg, exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def metrics_ports(settings: Settings, host: str = "127.0.0.1") -> dict[str, int]:
    """With ``dev.metrics``: the metrics port of every child (``sampler``, ``streams``, ``trainer``,
    ``worker-<i>``), the configured one where a ``*.metrics_port`` is set, else a free port."""
    ports = {
        "sampler": settings.sampler.metrics_port or free_port(host),
        "streams": settings.streams.metrics_port or free_port(host),
        "trainer": settings.trainer.metrics_port or free_port(host),
    }
    for i in range(settings.dev.workers):
        ports[f"worker-{i}"] = free_port(host)
    return ports


def write_prometheus_targets(path: Path, ports: dict[str, int], inference_port: int | None) -> Path:
    """Write Prometheus ``file_sd_configs`` targets: one group per child, ``job`` = its stage
    (``worker-3`` -> ``worker``), ``instance`` = ``127.0.0.1:<port>``; inference's ``/metrics`` is on
    its API port."""
    groups = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"job": name.split("-")[0], "child": name}}
        for name, port in sorted(ports.items())
    ]
    if inference_port is not None:
        groups.append(
            {"targets": [f"127.0.0.1:{inference_port}"], "labels": {"job": "inference", "child": "inference"}}
        )
    path.write_text(json.dumps(groups, indent=2) + "\n")
    return path


def run_overrides(
    settings: Settings,
    run_dir: Path,
    *,
    bootstrap: str | None,
    run_id: str,
    inference_port: int | None,
    metrics: dict[str, int] | None = None,
) -> dict[str, Any]:
    """What ``dev`` adds to the user's config for this run.

    - ``kafka.bootstrap_servers``: the local broker it started (when it started one);
    - ``topics.prefix``: ``<prefix><run_id>.`` with ``dev.fresh_topics``;
    - ``inference.model`` / ``trainer.model_path``: ``dev.model.path`` when unset;
    - ``inference.port`` and ``gateway.upstream_url``: a free port with ``dev.free_ports``; without
      it, ``gateway.upstream_url`` left at its default follows ``inference.host``/``port``;
    - ``trainer.checkpoint_dir``, ``streams.state_dir``, ``streams.blob_dir``: inside the run
      directory when left at their defaults (so runs never share state);
    - ``sampler``/``streams``/``trainer.metrics_port`` from ``metrics`` (:func:`metrics_ports`);
      each worker gets its port through its environment (``STREAMRL_WORKER__METRICS_PORT``);
    - ``streams.instance_id`` ``<run_id>-streams`` when unset (static group membership: a restarted
      streams process takes its partitions back at once; workers get theirs by ``--worker-id``).
    """
    over: dict[str, Any] = {}
    if bootstrap is not None:
        over["kafka"] = {"bootstrap_servers": bootstrap}
    if settings.dev.fresh_topics:
        over["topics"] = {"prefix": f"{settings.topics.prefix}{run_id}."}
    model = str(settings.dev.model.path)
    inference: dict[str, Any] = {}
    if settings.inference.model is None:
        inference["model"] = model
    if inference_port is not None:
        inference["port"] = inference_port
    default_upstream = type(settings.gateway).model_fields["upstream_url"].default
    if settings.dev.start_inference and (
        inference_port is not None or settings.gateway.upstream_url == default_upstream
    ):
        # the server this run starts, also when only inference.port was changed (the default
        # upstream_url would still name 8000)
        host = settings.inference.host if settings.inference.host not in ("0.0.0.0", "::") else "127.0.0.1"
        scheme = "https" if settings.inference.tls.enabled else "http"
        port = inference_port if inference_port is not None else settings.inference.port
        url = f"{scheme}://{host}:{port}/v1"
        if url != settings.gateway.upstream_url:
            over["gateway"] = {"upstream_url": url}
    if inference:
        over["inference"] = inference
    trainer: dict[str, Any] = {}
    if settings.trainer.model_path is None:
        trainer["model_path"] = model
    if settings.trainer.checkpoint_dir == Path("runs/checkpoints"):
        trainer["checkpoint_dir"] = str(run_dir / "checkpoints")
    if metrics:
        trainer["metrics_port"] = metrics["trainer"]
        over["sampler"] = {"metrics_port": metrics["sampler"]}
    if trainer:
        over["trainer"] = trainer
    streams: dict[str, Any] = {}
    if settings.streams.state_dir == "runs/streams":
        streams["state_dir"] = str(run_dir / "streams")
    if settings.streams.blob_dir == "runs/blobs":
        streams["blob_dir"] = str(run_dir / "blobs")
    if metrics:
        streams["metrics_port"] = metrics["streams"]
    if settings.streams.instance_id is None:
        streams["instance_id"] = f"{run_id}-streams"
    if streams:
        over["streams"] = streams
    return over


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write the effective config as YAML (keys in the order given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Effective config of this run, written by `streamrl dev`; every child process reads it.\n"
    path.write_text(header + yaml.safe_dump(_plain(data), sort_keys=False))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _local_broker_note() -> str:
    """How to reach the topics again after ``dev`` stopped the local broker it started."""
    import os

    if os.environ.get("STREAMRL_BOOTSTRAP_SERVERS"):
        return ""
    return "; the local broker must be running: streamrl kafka start"


class TopicsInUseError(StreamRLError):
    """The run's fresh topics already hold records of an earlier run (:func:`refuse_used_topics`)."""


def refuse_used_topics(settings: Settings) -> None:
    """With ``dev.fresh_topics``, refuse a run whose topics already hold records.

    The run's topic prefix is ``<topics.prefix><run_id>.``: an earlier run with the same ``run_id``
    on the same cluster (another run root, or a run directory deleted since) left its records there.
    Started on them, this run would not be fresh: the inference server would load that run's newest
    checkpoint before serving (and the trainer go on from its versions), the sampler and workers
    would read its tasks and samples, and the summary would count its rollouts.

    Args:
        settings: the run's effective settings (its topic prefix and cluster).

    Raises:
        TopicsInUseError: a topic of the run holds records (names and record counts, and what to do).
        BrokerError: the cluster is unreachable.
    """
    if not settings.dev.fresh_topics:
        return
    from streamrl.topics import describe_topics

    used = [t for t in describe_topics(settings) if t.records]
    if used:
        held = ", ".join(f"{t.name} ({t.records} record{'' if t.records == 1 else 's'})" for t in used)
        raise TopicsInUseError(
            f"the run's topics {settings.topics.prefix}* on {settings.kafka.bootstrap_servers} already "
            f"hold records of an earlier run with the same run id: {held}. A run started on them would "
            "serve that run's checkpoints and read its tasks; choose another dev.run_id (or leave it "
            f"unset for a new one), or delete those topics: streamrl topics delete --prefix "
            f"{settings.topics.prefix} (with this config{_local_broker_note()})"
        )
