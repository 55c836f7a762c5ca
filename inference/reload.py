"""Weight reload: consume ``checkpoints``, verify each new version, load it in the background, stage it.

Before the server serves anything, :meth:`CheckpointWatcher.catch_up` reads ``checkpoints`` (compacted:
the newest event per policy is there) to its end offsets and loads the newest checkpoint that
verifies, so a restarted server never answers with an older policy than the trainer's (it served
the initial model for a moment, and streams dropped those rollouts as stale). Then the
:class:`CheckpointWatcher` thread reads on from there with its own consumer group (one per server
instance: every replica must see every checkpoint). Per poll it takes the events of
``rl.policy_name`` newer than what is loaded, newest first, and hands them to a
:class:`ReloadTarget` until one loads:

- the ``uri`` must be a directory and ``schemas.digest_dir(uri) == event.digest``;
- ``full``: a Hugging Face model directory; ``lora``: a peft adapter directory applied to
  ``event.base_model`` (or the served base model); ``prompt_template`` events are not weights and
  are ignored by inference.

A refused checkpoint (missing, digest mismatch, unloadable) is counted in
``streamrl_inference_reload_errors_total{reason}``, logged as ``topic[partition]@offset: reason``,
sent to ``dlq``, and the old version keeps serving. Undecodable records go to ``dlq`` too.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from streamrl.errors import CheckpointError
from streamrl.inference.metrics import InferenceMetrics
from streamrl.schemas import CheckpointEvent, CheckpointKind, SchemaError, local_path, verify_checkpoint_dir
from streamrl.schemas.serde import Serde

if TYPE_CHECKING:
    from streamrl.config import Settings
    from streamrl.inference.engine import Policy

log = logging.getLogger(__name__)


class ReloadTarget(Protocol):
    """What a backend offers the watcher."""

    @property
    def loaded_version(self) -> int:
        """Newest version loaded (serving or staged)."""
        ...

    def apply(self, event: CheckpointEvent, path: Path) -> None:
        """Load the verified checkpoint at ``path`` and switch to it between requests.

        Raises:
            CheckpointError: it cannot be loaded; the old version keeps serving.
        """
        ...


def checkpoint_path(uri: str) -> Path:
    """Local path of a checkpoint ``uri`` (the forms of :func:`streamrl.schemas.local_path`).

    Raises:
        CheckpointError: unsupported URI (``reason="uri"``).
    """
    try:
        return local_path(uri)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint uri {uri!r}: {exc}", "uri") from exc


def verify_checkpoint(event: CheckpointEvent) -> Path:
    """Check that the event's directory exists and matches its digest
    (:func:`streamrl.schemas.verify_checkpoint_dir`, the rule every stage applies).

    Returns:
        The directory.

    Raises:
        CheckpointError: ``reason="uri"``, ``"missing"`` (not a directory) or ``"digest"`` (content differs).
    """
    return verify_checkpoint_dir(event.uri, event.digest, f"checkpoint v{event.version}")


def require_safetensors(event: CheckpointEvent, path: Path) -> None:
    """Refuse a weights checkpoint whose tensors are not in safetensors files (``full``: a
    ``*.safetensors`` file; ``lora``: ``adapter_model.safetensors``): the loaders would otherwise fall
    back to a pickled ``.bin``. Every backend calls this before it loads (docs/SECURITY.md).

    Raises:
        CheckpointError: ``reason="load"``.
    """
    if event.kind == CheckpointKind.lora:
        ok = (path / "adapter_model.safetensors").is_file()
    elif event.kind == CheckpointKind.full:
        ok = any(path.glob("*.safetensors"))
    else:
        return
    if not ok:
        raise CheckpointError(
            f"checkpoint v{event.version}: {path} has no {'adapter_model' if event.kind == CheckpointKind.lora else '*'}"
            ".safetensors (weights are loaded from safetensors only, never a pickled .bin)",
            "load",
        )


def load_policy(event: CheckpointEvent, path: Path, *, base_dir: str, dtype: str = "float32") -> Policy:
    """Load a verified checkpoint as a CPU :class:`~streamrl.inference.engine.Policy`.

    ``full``: ``AutoModelForCausalLM.from_pretrained(path)``, safetensors only. ``lora``: the base model
    (``event.base_model`` if it is a local directory, else ``base_dir``) with the peft adapter at
    ``path`` (``adapter_model.safetensors``; never a pickled ``.bin``) merged into it
    (``merge_and_unload``), so decoding costs no adapter overhead.

    Raises:
        CheckpointError: ``reason="kind"`` for ``prompt_template``; ``"load"`` when transformers/peft fail.
    """
    from streamrl.inference.engine import Policy
    from streamrl.inference.server import load_model

    require_safetensors(event, path)
    try:
        if event.kind == CheckpointKind.full:
            model = load_model(str(path), dtype)
        elif event.kind == CheckpointKind.lora:
            from peft import PeftModel

            base = event.base_model if event.base_model and Path(event.base_model).is_dir() else base_dir
            model = PeftModel.from_pretrained(load_model(base, dtype), str(path)).merge_and_unload().eval()
        else:
            raise CheckpointError(
                f"checkpoint v{event.version}: kind {event.kind.value} holds no weights", "kind"
            )
    except CheckpointError:
        raise
    except Exception as exc:  # transformers/peft raise OSError, ValueError, KeyError, safetensors errors...
        raise CheckpointError(f"checkpoint v{event.version}: cannot load {path}: {exc}", "load") from exc
    return Policy(model=model, version=event.version, source=str(path))


class CpuReloadTarget:
    """Reload target of the CPU server: load in the watcher thread, stage into the engine.

    Args:
        service: the :class:`~streamrl.inference.server.InferenceService`.
    """

    def __init__(self, service: Any) -> None:
        self.service = service
        self._loaded = service.engine.version

    @property
    def loaded_version(self) -> int:
        """Newest version loaded (serving or staged)."""
        return self._loaded

    def apply(self, event: CheckpointEvent, path: Path) -> None:
        """Load and stage; the batcher swaps it in before its next batch."""
        policy = load_policy(event, path, base_dir=self.service.model_dir, dtype=self.service.options.dtype)
        self.service.stage(policy)
        self._loaded = event.version

    def activate(self) -> None:
        """Serve the staged policy now (at start, before any request: no batch to wait for)."""
        if self.service.engine.swap_if_staged() is not None:
            self.service.metrics.version.set(self.service.engine.version)


class CheckpointWatcher:
    """Background consumer of ``checkpoints`` that reloads the target on new versions.

    Args:
        settings: StreamRL settings (topics, Kafka, ``rl.policy_name``, ``inference.reload_poll_s``).
        target: the backend to reload.
        metrics: where reloads and refusals are counted.
    """

    def __init__(self, settings: Settings, target: ReloadTarget, metrics: InferenceMetrics) -> None:
        self.settings = settings
        self.target = target
        self.metrics = metrics
        self.topic = settings.topics.name("checkpoints")
        self.serde = Serde(registry_url=settings.kafka.schema_registry_url)
        self.group_id = settings.group_id(f"inference-{uuid.uuid4().hex[:12]}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        self._producer: Any = None
        self._dlq: Any = None
        self._resume_at: dict[int, int] | None = None  # partition -> next offset, after catch_up

    def catch_up(self, timeout_s: float) -> int | None:
        """Read ``checkpoints`` to the end offsets it has now and load the newest verified checkpoint
        of ``rl.policy_name`` newer than the served model (a refused one falls back to the next
        newest, as :meth:`handle` does). The watcher thread then reads on from there.

        Returns:
            The version loaded, or None when the topic holds none newer that loads.

        Raises:
            BrokerError: the topic cannot be read to its end within ``timeout_s`` (cluster
                unreachable, topic missing).
        """
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

        from streamrl.errors import BrokerError
        from streamrl.kafka import make_consumer

        consumer = make_consumer(self.settings, self.group_id, **{"enable.partition.eof": False})
        msgs: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            try:
                meta = consumer.list_topics(self.topic, timeout=max(1.0, min(10.0, timeout_s)))
            except KafkaException as exc:
                raise BrokerError(f"cannot read {self.topic}: {exc}") from exc
            info = meta.topics.get(self.topic)
            if info is None or info.error is not None:
                raise BrokerError(f"cannot read {self.topic}: {info.error if info else 'no such topic'}")
            ends: dict[int, int] = {}
            for p in sorted(info.partitions):
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
                except KafkaException as exc:
                    raise BrokerError(f"{self.topic}[{p}]: cannot read watermarks: {exc}") from exc
                ends[p] = high
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            todo = {p for p, end in ends.items() if end > 0}
            while todo:
                if time.monotonic() > deadline:
                    raise BrokerError(f"{self.topic} not read to its end within {timeout_s:.0f} s")
                for msg in consumer.consume(num_messages=256, timeout=0.5):
                    if msg.error() is not None:
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            log.warning("%s: consumer error: %s", self.topic, msg.error())
                        continue
                    msgs.append(msg)
                    if msg.offset() + 1 >= ends[msg.partition()]:
                        todo.discard(msg.partition())
                for tp in consumer.position([TopicPartition(self.topic, p) for p in list(todo)]):
                    if tp.offset >= ends[tp.partition]:  # compaction gaps at the end
                        todo.discard(tp.partition)
        finally:
            consumer.close()
        self._resume_at = ends
        before = self.target.loaded_version
        version = self.handle(msgs) if msgs else None
        log.info(
            "%s read to its end (%d event(s)): serving policy version %d%s",
            self.topic,
            len(msgs),
            self.target.loaded_version,
            "" if version is not None else f" (no newer checkpoint than v{before} loaded)",
        )
        return version

    def start(self) -> CheckpointWatcher:
        """Start the consumer thread."""
        self._thread = threading.Thread(target=self._run, name="checkpoint-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._producer is not None:
            self._producer.close()

    def _dead_letter(self, msg: Any, reason: str, error: BaseException) -> None:
        from streamrl.dlq import DeadLetterSink
        from streamrl.kafka import EventProducer

        try:
            if self._producer is None:
                self._producer = EventProducer(self.settings)
                self._dlq = DeadLetterSink(self.settings, self._producer, stage="inference", serde=self.serde)
            self._dlq.send(msg, reason=reason, error=error)
            self._producer.flush(10.0)
        except Exception:  # the dead-letter path must not stop reloads
            log.exception(
                "could not send %s[%d]@%d to the dead-letter topic",
                msg.topic(),
                msg.partition(),
                msg.offset(),
            )

    def _run(self) -> None:
        from streamrl.kafka import make_consumer

        consumer = make_consumer(self.settings, self.group_id)
        if self._resume_at is not None:  # on from where catch_up stopped (no event handled twice)
            from confluent_kafka import TopicPartition

            consumer.assign([TopicPartition(self.topic, p, off) for p, off in self._resume_at.items()])
            self.assigned.set()
        else:
            consumer.subscribe([self.topic], on_assign=lambda c, parts: self.assigned.set())
        poll_s = self.settings.inference.reload_poll_s
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=256, timeout=poll_s)
                if msgs:
                    self.handle(msgs)
        finally:
            consumer.close()

    def handle(self, msgs: list[Any]) -> int | None:
        """Process one poll's messages; returns the version switched to, or None.

        Candidates (this policy, newer than loaded, with weights) are tried newest first; the first
        that verifies and loads wins, refused ones are counted and dead-lettered.
        """
        policy_name = self.settings.rl.policy_name
        candidates: list[tuple[CheckpointEvent, Any]] = []
        for msg in msgs:
            if msg.error() is not None:
                log.warning("%s: consumer error: %s", self.topic, msg.error())
                continue
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            try:
                event = self.serde.decode_message(msg, CheckpointEvent)
            except SchemaError as exc:
                log.error("%s: undecodable checkpoint event: %s", where, exc)
                self.metrics.reload_errors.labels("schema").inc()
                self._dead_letter(msg, f"{where}: undecodable checkpoint event: {exc.reason}", exc)
                continue
            if event.policy_name != policy_name or event.kind == CheckpointKind.prompt_template:
                continue
            if event.version > self.target.loaded_version:
                candidates.append((event, msg))
        for event, msg in sorted(candidates, key=lambda c: c[0].version, reverse=True):
            if event.version <= self.target.loaded_version:
                break
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            started = time.monotonic()
            try:
                path = verify_checkpoint(event)
                self.target.apply(event, path)
            except CheckpointError as exc:
                log.error("%s: checkpoint v%d refused (%s): %s", where, event.version, exc.reason, exc)
                self.metrics.reload_errors.labels(exc.reason).inc()
                self._dead_letter(
                    msg, f"{where}: checkpoint v{event.version} refused ({exc.reason}): {exc}", exc
                )
                continue
            dt = time.monotonic() - started
            self.metrics.reloads.labels(event.kind.value).inc()
            self.metrics.reload_seconds.observe(dt)
            log.info("%s: checkpoint v%d (%s) loaded in %.2f s; serving it from the next batch",
                     where, event.version, event.kind.value, dt)  # fmt: skip
            return event.version
        return None
