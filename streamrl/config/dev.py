"""Config section of ``streamrl dev`` / ``streamrl demo``: the whole pipeline on one machine.

``dev`` starts the local broker (unless ``STREAMRL_BOOTSTRAP_SERVERS`` is set), creates the topics,
fetches or builds the policy model if it is missing, publishes the datasets and supervises every stage as a child
process. Everything a stage reads (model paths, ports, directories) is written into the run's own
effective config file, ``<run_root>/<run_id>/config.yaml``, which every child is started with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from streamrl.config.base import Section


class DatasetSpec(Section):
    """One dataset file published to ``tasks`` (``streamrl publish FILE --split ...``) at start."""

    path: Path
    """JSONL/JSON/CSV/Parquet file (relative paths are relative to the working directory)."""
    split: Literal["train", "val"] = "train"
    """Task split of every row of the file."""
    limit: int | None = Field(None, ge=1)
    """Publish at most this many rows (the first ones); None = all."""
    id_field: str | None = None
    """Row field holding the task id; None = a stable hash of the row."""


class ModelSpec(Section):
    """The policy model: a real pretrained one fetched by name, or a tiny one built locally.

    With ``pretrained`` set, ``streamrl dev`` runs ``streamrl model fetch <pretrained> --out <path>``
    when ``path`` has no ``config.json`` (converted once, cached in ``~/.cache/streamrl``); otherwise it
    builds a randomly initialised model there (``streamrl.inference.model_builder``).
    """

    pretrained: str | None = None
    """Name of a pretrained model ``streamrl model fetch`` knows (``smollm2-135m-instruct``); None = build
    a tiny model. With a name, ``path`` defaults to ``models/<pretrained>``."""
    path: Path = Field(Path("models/tiny-char"), json_schema_extra={"derived": True})
    """Hugging Face model directory. Used as ``inference.model`` and ``trainer.model_path`` unless those
    are set. When not given: ``models/<pretrained>``, else ``models/tiny-char``."""
    build: bool = True
    """Fetch or build the model there when it is missing; False = it must exist."""
    preset: str = "tiny"
    """Size preset of the builder (``tiny`` ~0.3M parameters with ``char``, ``small`` ~5M)."""
    tokenizer: Literal["char", "bpe"] = "char"
    """Tokenizer kind: ``char`` (one token per character) or ``bpe``."""
    arch: Literal["llama", "qwen2"] = "llama"
    """Architecture of the built model."""
    text: list[Path] = Field(default_factory=list)
    """Tokenizer training text files; empty = the builder's default (GSM8K train)."""
    max_chars: int | None = Field(200_000, ge=1)
    """Characters of training text read to build the tokenizer; None = all."""
    seed: int = 0
    """Weight initialisation seed."""

    @model_validator(mode="after")
    def _pretrained_path(self) -> ModelSpec:
        if self.pretrained is not None:
            if not self.pretrained or "/" in self.pretrained:
                raise ValueError(
                    f"dev.model.pretrained {self.pretrained!r} must be a model name (streamrl model list)"
                )
            if "path" not in self.model_fields_set:
                self.path = Path("models") / self.pretrained
        return self


class RestartSettings(Section):
    """How ``streamrl dev`` restarts a stage that died, as Kubernetes restarts a container (restart
    policy ``Always`` with a crash-loop back-off): every stage resumes from Kafka, so a death is
    reported and answered with a restart, and only a stage that keeps dying ends the run."""

    max_restarts: int = Field(5, ge=0)
    """Restarts of one stage allowed within ``window_s``; one more death ends the run with the tail
    of its log (exit 1). 0 = the first death ends the run."""
    window_s: float = Field(600.0, gt=0)
    """Sliding window the restarts are counted in, in seconds."""
    backoff_s: float = Field(1.0, ge=0)
    """Delay before restarting a dead stage, in seconds; doubled for each restart within the window."""
    backoff_max_s: float = Field(30.0, ge=0)
    """Longest delay before a restart, in seconds."""


class DevSettings(Section):
    """``streamrl dev``: which children run, where the run lives, when it stops, how it is shown."""

    run_root: Path = Path("runs")
    """Run directories are created under it: ``<run_root>/<run_id>/`` (logs, config, summary, plot)."""
    run_id: str | None = None
    """Name of the run directory; None = ``<UTC date>-<time>-<4 hex>``."""
    fresh_topics: bool = True
    """Give the run its own topic prefix (``<topics.prefix><run_id>.``, also over
    ``STREAMRL_TOPIC_PREFIX``) so a re-run never reads an earlier run's records; a run whose topics
    already hold records (an earlier run with the same ``run_id``) is refused. False keeps
    ``topics.prefix`` (resume a pipeline)."""
    keep_broker: bool = False
    """Leave the local broker that ``dev`` started running after the run (False stops it)."""
    broker_data_dir: Path | None = None
    """Data directory of the local broker ``dev`` starts; None = the launcher's (``kafka.local.home``/kafka-data)."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    """The policy model (fetched or built if missing)."""
    datasets: list[DatasetSpec] = Field(default_factory=list)
    """Files published to ``tasks`` before the stages start."""
    workers: int = Field(1, ge=0, le=64)
    """Rollout worker processes (``streamrl worker``) in the workers consumer group."""
    start_inference: bool = True
    """Start ``streamrl inference``; False = ``gateway.upstream_url`` points at a running service."""
    free_ports: bool = True
    """Pick a free port for the inference server (and point ``gateway.upstream_url`` at it), and
    start this run's own local broker on free ports when the configured one (``kafka.local``) was
    started by another live ``dev`` run (another clone's demo), which stops it when it ends; False
    then stops with an error naming that run."""
    pythonpath: list[Path] = Field(default_factory=lambda: [Path(".")])
    """Directories prepended to the children's ``PYTHONPATH`` (so ``--agent examples.x:fn`` imports)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables of every child (e.g. ``OMP_NUM_THREADS``)."""
    stage_env: dict[
        Literal["inference", "trainer", "streams", "worker", "sampler", "publish"], dict[str, str]
    ] = Field(default_factory=dict)
    """Extra environment variables per stage, over ``env``: e.g. each stage's own Kafka login
    (``{worker: {STREAMRL_KAFKA__SASL_USERNAME: streamrl-worker, ...}}``, docs/SECURITY.md)."""
    metrics: bool = False
    """Serve every stage's Prometheus metrics on a free port (``sampler``/``streams``/``trainer``
    ``.metrics_port`` unless set, one per worker; inference on its API port) and write their scrape
    targets to ``<run_dir>/prometheus-targets.json`` (Prometheus ``file_sd_configs`` format, label
    ``job`` = the stage), so a local Prometheus and the Grafana dashboard can watch the run."""
    max_steps: int | None = Field(None, ge=1)
    """Stop once a checkpoint of this policy version is published; None = ``trainer.max_steps``."""
    val_target: float | None = Field(None)
    """A validation reward to watch for: the summary reports the first version that reached it and
    the wall time since the start (``val_target_reached``); with ``stop_at_val_target`` the run
    ends there. None = not watched."""
    stop_at_val_target: bool = False
    """End the run (exit 0) once a complete validation reaches ``val_target``."""
    final_val_timeout_s: float = Field(120.0, ge=0)
    """After ``max_steps``, how long to wait for the last version's validation and for the inference server to
    report that version, in seconds."""
    drain_s: float = Field(60.0, ge=0)
    """Once the sampler exited (all epochs done), stop after this many seconds without a new
    trajectory or checkpoint."""
    timeout_s: float | None = Field(None, gt=0)
    """Wall-clock limit of the run in seconds; reaching it stops everything and exits non-zero."""
    stop_timeout_s: float = Field(20.0, gt=0)
    """Seconds a child may take to exit after SIGTERM before its process group gets SIGKILL."""
    refresh_s: float = Field(1.0, gt=0)
    """Progress display refresh period, in seconds."""
    display: Literal["auto", "live", "plain", "off"] = "auto"
    """``live``: one rich live panel; ``plain``: a status line every ``plain_every_s``; ``auto``:
    live on a terminal, plain otherwise; ``off``: only the final summary."""
    plain_every_s: float = Field(10.0, gt=0)
    """Period of the plain status line, in seconds."""
    log_tail_lines: int = Field(40, ge=1)
    """Lines of a failed child's log shown in the error."""
    restart: RestartSettings = Field(default_factory=RestartSettings)
    """Restart policy of the stages (``inference``, ``trainer``, ``streams``, workers, ``sampler``);
    publishing a dataset is never restarted."""

    @model_validator(mode="after")
    def _check(self) -> DevSettings:
        if self.run_id is not None and (not self.run_id or "/" in self.run_id or self.run_id.startswith(".")):
            raise ValueError(
                f"dev.run_id {self.run_id!r} must be a plain directory name (no '/', not hidden)"
            )
        if self.stop_at_val_target and self.val_target is None:
            raise ValueError("dev.stop_at_val_target needs dev.val_target")
        return self
