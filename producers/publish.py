"""``streamrl publish``: dataset rows → ``Task`` records on the compacted ``tasks`` topic.

One Task per row, keyed by ``task_id``: either the row's ``--id-field`` or a stable hash of the row,
so publishing the same file again rewrites the same keys (compaction keeps the latest value per
key) instead of adding tasks. Invalid rows (not an object, missing/empty id field, not
JSON-serializable, over ``publish.max_task_bytes``) are reported with their line/row number and
skipped; rows whose ``task_id`` already appeared earlier in the same run are skipped as duplicates.
Every delivery report is checked before returning.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streamrl.errors import DeliveryError, StreamRLError
from streamrl.producers.readers import Row, open_dataset
from streamrl.schemas import Split, Task, utc_now
from streamrl.schemas.serde import Serde
from streamrl.topics import require_topic

log = logging.getLogger(__name__)

MAX_ID_CHARS = 1024
"""Longest accepted ``task_id`` (it becomes a Kafka key and part of every rollout id)."""


METADATA_TIMEOUT_S = 10.0
"""How long publish waits for the cluster's metadata before reading the dataset, in seconds."""


class InvalidRow(StreamRLError):
    """A dataset row that cannot become a Task; ``where`` is ``line N`` / ``row N``."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason}")


@dataclass
class PublishReport:
    """Outcome of one publish run.

    Attributes:
        rows: rows read (including invalid ones; blank JSONL lines are not rows).
        published: Tasks produced and acknowledged (counted before the final flush in a dry run).
        skipped: rows whose ``task_id`` already appeared in this run.
        invalid: rows that could not become a Task.
        undelivered: Tasks the broker did not accept (each listed in ``problems``; not in ``published``).
        stopped: where reading stopped early (the file cannot be read past it), or None.
        problems: ``(where, reason)`` for every skipped or invalid row, in file order.
        elapsed_s: wall time from first read to last acknowledgement, in seconds.
    """

    rows: int = 0
    published: int = 0
    skipped: int = 0
    invalid: int = 0
    undelivered: int = 0
    stopped: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        """Rows per second (0 if nothing was read)."""
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"a {type(value).__name__} value is not JSON-serializable")


def row_payload(value: Any, where: str) -> str:
    """The JSON object text of a row (keys in file order; dates → ISO 8601, decimals → strings).

    Raises:
        InvalidRow: not an object, or a value JSON cannot represent (bytes, NaN, infinity).
    """
    if not isinstance(value, dict):
        raise InvalidRow(where, f"not a JSON object (got {type(value).__name__})")
    try:
        return json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRow(where, f"not JSON-serializable: {exc}") from None
    except RecursionError:
        raise InvalidRow(where, "nested too deeply to serialize as JSON") from None


def row_hash_id(value: dict[str, Any], split: Split, chars: int) -> str:
    """Stable task id of a row (a dict that :func:`row_payload` accepted):
    ``sha256(split + "\\n" + canonical JSON)[:chars]`` (hex).

    Canonical = keys sorted, compact separators, so key order in the file does not matter; the
    split is included so the same row published as train and as val gives two tasks.
    """
    canonical = json.dumps(
        value,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
        default=_json_default,
    )
    return hashlib.sha256(f"{split.value}\n{canonical}".encode()).hexdigest()[:chars]


def row_field_id(value: dict[str, Any], id_field: str, where: str) -> str:
    """The task id from ``value[id_field]`` (a non-empty string, or an integer).

    Raises:
        InvalidRow: the field is missing, empty, not a string/integer, or too long.
    """
    if id_field not in value:
        raise InvalidRow(where, f"missing id field {id_field!r} (has {sorted(value)[:8]})")
    raw = value[id_field]
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InvalidRow(
            where, f"id field {id_field!r} must be a string or integer, got {type(raw).__name__}"
        )
    task_id = str(raw)
    if not task_id.strip():
        raise InvalidRow(where, f"id field {id_field!r} is empty")
    if len(task_id) > MAX_ID_CHARS:
        raise InvalidRow(where, f"id field {id_field!r} is {len(task_id)} characters (max {MAX_ID_CHARS})")
    return task_id


def build_task(
    row: Row,
    *,
    split: Split,
    id_field: str | None,
    source: str,
    hash_chars: int,
    now: dt.datetime | None = None,
) -> Task:
    """The Task of one dataset row.

    Args:
        row: a parsed row (``row.error`` set means it was unparseable).
        split: the Task split.
        id_field: the row field that holds the task id; None = :func:`row_hash_id`.
        source: provenance prefix (the file name); the Task's ``source`` is ``"<source>:<line|row N>"``.
        hash_chars: hex characters of the hash id.

    Raises:
        InvalidRow: unparseable row, not an object, bad id field, no field but the id (or none at
            all: nothing for the agent), not JSON-serializable.
    """
    if row.error is not None:
        raise InvalidRow(row.where, row.error)
    payload = row_payload(row.value, row.where)
    task_id = (
        row_field_id(row.value, id_field, row.where)
        if id_field
        else row_hash_id(row.value, split, hash_chars)
    )
    if not any(k != id_field for k in row.value):
        # the payload is what the agent gets (Task.payload, schemas/records.py): an id alone is no task
        raise InvalidRow(
            row.where,
            f"no task fields: the row has only its id field {id_field!r}"
            if row.value
            else "no task fields: the row is an empty object",
        )
    return Task(
        task_id=task_id,
        split=split,
        payload=payload,
        source=f"{source}:{row.where}",
        created_at=now or utc_now(),
    )


def _not_produced(err: KafkaError, size: int, settings: Any, topic_limit: int | None = None) -> str:
    """Why a Task was not accepted by the client or the broker, naming its size and the limit.

    ``topic_limit`` is the topic's ``max.message.bytes`` as the broker holds it (None: unknown, then
    the configured ``topics.max_message_bytes`` is named)."""
    if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        if topic_limit is not None:
            return (
                f"not published: {err.str()}: the task is {size} bytes, over the topic's "
                f"max.message.bytes={topic_limit} (publish.max_task_bytes={settings.publish.max_task_bytes})"
            )
        return (
            f"not published: {err.str()}: the task is {size} bytes, over what the topic accepts "
            f"(topics.max_message_bytes={settings.topics.max_message_bytes}; the broker's "
            "max.message.bytes of the topic may be lower)"
        )
    return f"not published: {err.str()} ({size} bytes)"


def _on_delivery(
    undelivered: list[tuple[str, KafkaError, int]], where: str, size: int
) -> Callable[[Any, Any], None]:
    """A delivery callback that records a refused Task as ``(where, error, size in bytes)``."""

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            undelivered.append((where, err, size))

    return delivered


def _refusals(
    undelivered: list[tuple[str, KafkaError, int]], settings: Any, topic: str
) -> list[tuple[str, str]]:
    """``(where, reason)`` of each Task the broker refused, in file order; a refusal for size names
    the topic's own ``max.message.bytes`` (read once from the broker, when it lets us)."""
    limit: int | None = None
    if any(err.code() == KafkaError.MSG_SIZE_TOO_LARGE for _, err, _ in undelivered):
        from streamrl.topics import topic_config_value

        value = topic_config_value(settings, topic, "max.message.bytes")
        limit = int(value) if value is not None and value.isdigit() else None
    out = [(where, _not_produced(err, size, settings, limit)) for where, err, size in undelivered]
    return sorted(out, key=lambda p: _position(p[0]))


def _position(where: str) -> int:
    try:
        return int(where.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


Progress = Callable[[int], None]


def publish_file(
    settings: Any,
    path: str | Path,
    *,
    split: Split = Split.train,
    id_field: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    fmt: str | None = None,
    hf_split: str | None = None,
    on_rows: Progress | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> PublishReport:
    """Publish every row of a dataset file as a Task to the ``tasks`` topic.

    Args:
        settings: StreamRL ``Settings`` (cluster, topic prefix, ``publish`` section).
        path: dataset file or Hugging Face ``save_to_disk`` directory (see :mod:`streamrl.producers.readers`).
        split: ``train`` or ``val``.
        id_field: row field holding the task id; None = stable row hash.
        limit: read at most this many rows; None = all.
        dry_run: read and validate only; nothing is produced (no broker needed).
        fmt, hf_split: see :func:`streamrl.producers.readers.open_dataset`.
        on_rows: called with the number of rows just read (progress display).
        on_total: called once with the row count when the format knows it upfront, else None.

    Returns:
        The :class:`PublishReport`; invalid, duplicate and undelivered rows are listed in
        ``problems`` (a Task the broker refuses, e.g. over the topic's message size, is one row's
        problem: the rows after it are still published).

    Raises:
        streamrl.producers.readers.DatasetError: the dataset cannot be opened.
        streamrl.errors.DeliveryError: records were not acknowledged for another reason than their
            own (the broker went away, the flush timed out).
    """
    from streamrl.producers.metrics import PUBLISH_INVALID, PUBLISH_PUBLISHED, PUBLISH_SKIPPED

    ds = open_dataset(path, fmt, hf_split=hf_split)
    if on_total is not None:
        on_total(min(ds.total, limit) if ds.total is not None and limit is not None else ds.total)
    cfg = settings.publish
    serde = Serde(registry_url=settings.kafka.schema_registry_url)
    topic = settings.topics.name("tasks")
    producer = None
    if not dry_run:
        from streamrl.kafka import EventProducer

        producer = EventProducer(settings)
        try:
            # fail fast, before reading the dataset: a missing topic or a dead broker would show only at
            # the final flush, after publish.flush_timeout_s, with one error log line per row
            require_topic(producer.producer, topic, settings.kafka.bootstrap_servers, METADATA_TIMEOUT_S)
        except BaseException:
            producer.close(timeout_s=0.1)  # nothing was produced yet
            raise
    report = PublishReport()
    undelivered: list[tuple[str, KafkaError, int]] = []  # appended on the producer's poll thread
    first_seen: dict[str, str] = {}
    source = Path(path).name
    start = time.perf_counter()
    pending = 0
    failed = False
    try:
        for row in ds.rows:
            if limit is not None and report.rows >= limit:
                break
            report.rows += 1
            pending += 1
            if pending >= 256 and on_rows is not None:
                on_rows(pending)
                pending = 0
            if row.stopped:
                report.stopped = row.where
            try:
                task = build_task(
                    row, split=split, id_field=id_field, source=source, hash_chars=cfg.id_hash_chars
                )
                value = serde.encode(task, topic=topic)
                if len(value) > cfg.max_task_bytes:
                    raise InvalidRow(
                        row.where,
                        f"task is {len(value)} bytes encoded, over publish.max_task_bytes={cfg.max_task_bytes}",
                    )
            except (InvalidRow, StreamRLError, ValueError, RecursionError) as exc:
                if isinstance(exc, InvalidRow):
                    reason = exc.reason
                elif isinstance(exc, RecursionError):
                    reason = "nested too deeply"
                else:
                    reason = str(exc)
                report.invalid += 1
                report.problems.append((row.where, reason))
                PUBLISH_INVALID.inc()
                continue
            if task.task_id in first_seen:
                report.skipped += 1
                report.problems.append(
                    (
                        row.where,
                        f"duplicate task_id {task.task_id!r} (first at {first_seen[task.task_id]}); skipped",
                    )
                )
                PUBLISH_SKIPPED.inc()
                continue
            first_seen[task.task_id] = row.where
            if producer is not None:
                try:
                    producer.produce(
                        topic,
                        value,
                        key=task.task_id,
                        on_delivery=_on_delivery(undelivered, row.where, len(value)),
                    )
                except KafkaException as exc:  # refused by the client itself (e.g. over message.max.bytes)
                    report.invalid += 1
                    report.problems.append((row.where, _not_produced(exc.args[0], len(value), settings)))
                    PUBLISH_INVALID.inc()
                    continue
            report.published += 1
        if producer is not None:
            try:
                producer.flush(cfg.flush_timeout_s)
            except DeliveryError as exc:
                if len(exc.failures) != len(undelivered):  # not only rows the broker refused: a real outage
                    raise
            report.undelivered = len(undelivered)
            report.published -= len(undelivered)
            report.problems.extend(_refusals(undelivered, settings, topic))
            PUBLISH_PUBLISHED.inc(report.published)
    except BaseException:
        failed = True
        raise
    finally:
        if on_rows is not None and pending:
            on_rows(pending)
        if producer is not None:
            try:
                producer.close(timeout_s=5.0)
            except StreamRLError as exc:
                if not failed:
                    raise
                # The error already propagating (usually the flush's DeliveryError) is the one to report.
                log.warning("publish: records still undelivered at close: %s", exc)
        report.elapsed_s = time.perf_counter() - start
    return report
