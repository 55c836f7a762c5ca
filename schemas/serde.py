"""Serde for every StreamRL topic: pydantic records <-> Avro bytes. Stages never call fastavro directly.

Two wire formats (Avro 1.11 spec "Single object encoding"; Confluent "Wire format"):

- single-object encoding (default, no registry): ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint
  of the writer schema's Parsing Canonical Form + Avro binary body. The writer schema is resolved by
  fingerprint among all versions the process knows (`schemas/avsc/*/v*.avsc`).
- Confluent framing (when a Schema Registry is configured): ``00`` + 4-byte big-endian schema id + body.
  Schemas are registered under the record-name subject (``io.streamrl.<Name>``); ids are cached.

A Serde with a registry decodes both formats; one without decodes single-object bytes only. A body written
with an older schema version is read through Avro schema resolution into the latest model.

The Avro binary codec is fastavro (``schemaless_writer``/``schemaless_reader``) throughout; every schema is
parsed once, in the catalog (`streamrl.schemas.avro`), and the parsed form is reused on each call.

Validation: models are validated by pydantic when built (all rules). ``encode`` re-checks the cheap
rules Avro cannot express (``Record.check_invariants(scan=False)``: equal lengths, non-negative versions,
exactly one batch form, ...) and fastavro checks Avro types; the O(n) scans (finite logprobs, token-id
range, mask values) are not repeated on encode. ``decode`` checks types and structure, then builds models
with ``model_construct`` (no second pydantic pass over thousands of token ids) and runs every rule
(``check_invariants(scan=True)``), so a list mutated after validation is caught by the consumer. Any failure on either side raises `SchemaError` with topic/partition/offset/reason;
no other exception escapes ``decode`` for bad bytes.
"""

from __future__ import annotations

import io
import json
import typing
from collections.abc import Callable
from enum import Enum
from types import UnionType
from typing import Any, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from pydantic import BaseModel

from streamrl.schemas.avro import SOE_MAGIC, SchemaCatalog, SchemaInfo, catalog, schema_fingerprint
from streamrl.schemas.errors import SchemaError
from streamrl.schemas.records import Record, TopRecord
from streamrl.schemas.topic_records import TOP_RECORDS

R = TypeVar("R", bound=TopRecord)
Convert = Callable[[Any], Any]

_CONFLUENT_MAGIC = 0
_SOE_HEADER_LEN = 10  # C3 01 + 8-byte fingerprint
_CONFLUENT_HEADER_LEN = 5  # 00 + 4-byte schema id


# ------------------------------------------------------------------------------- model <-> avro dicts


class _Plan:
    """Precomputed field converters for one model class (built once per Serde)."""

    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls
        self.decoders: list[tuple[str, Convert]] = []
        self.encoders: list[tuple[str, Convert]] = []
        for name, info in cls.model_fields.items():
            dec, enc = _converters(info.annotation)
            if dec is not None:
                self.decoders.append((name, dec))
            if enc is not None:
                self.encoders.append((name, enc))

    def from_avro_validated(self, data: dict[str, Any]) -> Record:
        """Build the model through full pydantic validation (slower; ``Serde(full_validation=True)``)."""
        return self.cls.model_validate(data)

    def from_avro(self, data: dict[str, Any]) -> Record:
        """Build the model from fastavro's dict without re-validating types; checks invariants."""
        for name, dec in self.decoders:
            data[name] = dec(data[name])
        record = self.cls.model_construct(**data)
        record.check_invariants()
        return record

    def to_avro(self, record: Record) -> dict[str, Any]:
        """The dict fastavro writes; checks the cheap invariants of the record and nested records."""
        record.check_invariants(scan=False)
        if not self.encoders:
            return record.__dict__
        data = dict(record.__dict__)
        for name, enc in self.encoders:
            data[name] = enc(data[name])
        return data


def _converters(annotation: Any) -> tuple[Convert | None, Convert | None]:
    """(decode, encode) converters for a field annotation; None means identity."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _converters(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported, got {annotation}")
        dec, enc = _converters(args[0])
        return (
            None if dec is None else (lambda v, f=dec: None if v is None else f(v)),
            None if enc is None else (lambda v, f=enc: None if v is None else f(v)),
        )
    if origin is list:
        (item,) = typing.get_args(annotation)
        dec, enc = _converters(item)
        return (
            None if dec is None else (lambda v, f=dec: [f(x) for x in v]),
            None if enc is None else (lambda v, f=enc: [f(x) for x in v]),
        )
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        members = annotation._value2member_map_

        def dec_enum(value: str, members: dict[Any, Enum] = members, cls: type[Enum] = annotation) -> Enum:
            try:
                return members[value]
            except KeyError:
                raise ValueError(f"{value!r} is not a {cls.__name__} symbol") from None

        return dec_enum, lambda v: v.value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        plan = _Plan(annotation)
        return plan.from_avro, plan.to_avro
    return None, None


# ------------------------------------------------------------------------------------------- Serde


class Serde:
    """Encode/decode StreamRL records (see module docstring for formats and validation).

    Args:
        registry_url: Schema Registry URL; None = single-object encoding. ``mock://<name>`` gives
            confluent-kafka's in-memory registry (one store per client: share it with `registry_client`).
        registry_client: an existing ``confluent_kafka.schema_registry.SchemaRegistryClient`` (wins over
            `registry_url`).
        registry_config: extra client config (auth, TLS) merged with ``{"url": registry_url}``.
        auto_register: register the latest schema on first encode of a type (else look it up; missing = error).
        full_validation: decode through ``model_validate`` (every field re-validated by pydantic) instead of
            ``model_construct`` + ``check_invariants``; same outcome for bytes fastavro accepts, ~slower
            (see bench/serde.py).
        catalog_: schema catalog (tests); default: the packaged `.avsc` files.

    Thread safety: encode/decode may be called from several threads; caches only grow.
    """

    def __init__(
        self,
        registry_url: str | None = None,
        *,
        registry_client: Any = None,
        registry_config: dict[str, Any] | None = None,
        auto_register: bool = True,
        full_validation: bool = False,
        catalog_: SchemaCatalog | None = None,
    ) -> None:
        self._full_validation = full_validation
        self.catalog = catalog_ if catalog_ is not None else catalog()
        self._plans: dict[type[Record], _Plan] = {}
        self._latest: dict[type[Record], SchemaInfo] = {}
        for cls in TOP_RECORDS:
            self._plans[cls] = _Plan(cls)
            self._latest[cls] = self.catalog.latest(cls.__name__)
        self._auto_register = auto_register
        self._registry = registry_client
        if self._registry is None and registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient  # lazy: loads librdkafka

            conf = {**(registry_config or {}), "url": registry_url}
            self._registry = SchemaRegistryClient.new_client(conf)  # handles mock:// URLs
        self._ids_by_type: dict[type[Record], int] = {}
        self._writers_by_id: dict[int, SchemaInfo] = {}

    @property
    def wire_format(self) -> str:
        """Wire format of encode: "confluent" with a registry, else "single-object"."""
        return "confluent" if self._registry is not None else "single-object"

    # ----------------------------------------------------------------------------------- encode

    def encode(self, record: TopRecord, *, topic: str = "") -> bytes:
        """Serialize `record` (Task, Sample, LLMRequest, Trajectory, TrainingBatch, CheckpointEvent, DeadLetter).

        Args:
            record: a validated model; its invariants are re-checked.
            topic: only used in error messages.
        Returns:
            Framed Avro bytes (header + body) in this Serde's wire format.
        Raises:
            SchemaError: invariants broken, a value Avro cannot carry, or the registry refused/failed.
            TypeError: `record` is not a StreamRL topic record.
        """
        cls = type(record)
        plan = self._plans.get(cls)
        if plan is None:
            raise TypeError(f"cannot encode {cls.__name__}: not one of {[c.__name__ for c in TOP_RECORDS]}")
        info = self._latest[cls]
        header = self._registry_header(cls, info, topic) if self._registry is not None else info.soe_header
        try:
            buf = io.BytesIO()
            buf.write(header)
            schemaless_writer(buf, info.parsed, plan.to_avro(record))
            return buf.getvalue()
        except Exception as exc:
            raise SchemaError(
                topic, -1, -1, f"cannot encode {cls.__name__}: {type(exc).__name__}: {exc}"
            ) from exc

    def _registry_header(self, cls: type[Record], info: SchemaInfo, topic: str) -> bytes:
        schema_id = self._ids_by_type.get(cls)
        if schema_id is None:
            from confluent_kafka.schema_registry import Schema

            schema = Schema(json.dumps(info.raw), "AVRO")
            try:
                if self._auto_register:
                    schema_id = self._registry.register_schema(info.fullname, schema)
                else:
                    schema_id = self._registry.lookup_schema(info.fullname, schema).schema_id
            except Exception as exc:
                raise SchemaError(
                    topic, -1, -1, f"schema registry failed for {info.fullname}: {exc}"
                ) from exc
            self._ids_by_type[cls] = schema_id
            self._writers_by_id[schema_id] = info
        return bytes([_CONFLUENT_MAGIC]) + int(schema_id).to_bytes(4, "big")

    # ----------------------------------------------------------------------------------- decode

    def decode(
        self,
        data: bytes | None,
        record_type: type[R],
        *,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
    ) -> R:
        """Deserialize framed Avro bytes into `record_type`, resolving older writer schemas.

        Args:
            data: a message value (single-object or Confluent framing).
            record_type: the expected record class (e.g. ``LLMRequest``).
            topic, partition, offset: where the bytes came from, for the error.
        Returns:
            The record; fields added after the writer's version take their defaults.
        Raises:
            SchemaError: empty/None value, unknown framing, unknown fingerprint or schema id, a record of
                another type, truncated or trailing bytes, invalid values. Never another exception for bad bytes.
            TypeError: `record_type` is not a StreamRL topic record (a programming error).
        """
        plan = self._plans.get(record_type)
        if plan is None:
            raise TypeError(
                f"cannot decode into {record_type!r}: not one of {[c.__name__ for c in TOP_RECORDS]}"
            )

        def fail(reason: str) -> SchemaError:
            return SchemaError(topic, partition, offset, f"{record_type.__name__}: {reason}")

        try:
            if not data:
                raise fail("empty value (None or 0 bytes)")
            if not isinstance(data, bytes):
                if not isinstance(data, bytearray | memoryview):
                    raise fail(f"value must be bytes, got {type(data).__name__}")
                data = bytes(data)
            writer, start = self._writer_for(data, fail)
            latest = self._latest[record_type]
            if writer.name != latest.name:
                raise fail(f"bytes hold a {writer.name} record (schema v{writer.version})")
            buf = io.BytesIO(data)
            buf.seek(start)
            fields = schemaless_reader(buf, writer.parsed, None if writer is latest else latest.parsed)
            end = buf.tell()
            if end != len(data):
                raise fail(f"{len(data) - end} trailing bytes after the Avro body")
            if not isinstance(fields, dict):
                raise fail(f"body decoded to {type(fields).__name__}, not a record")
            if self._full_validation:
                return plan.from_avro_validated(fields)  # type: ignore[return-value]
            return plan.from_avro(fields)  # type: ignore[return-value]
        except SchemaError:
            raise
        except (EOFError, IndexError) as exc:
            raise fail(f"truncated body ({len(data)} bytes): {str(exc) or 'unexpected end of data'}") from exc
        except Exception as exc:  # fastavro type/structure errors, invariant ValueErrors, registry errors
            raise fail(f"{type(exc).__name__}: {exc}") from exc

    def decode_message(self, msg: Any, record_type: type[R]) -> R:
        """Decode a confluent_kafka ``Message`` value, passing its topic/partition/offset to errors."""
        return self.decode(
            msg.value(), record_type, topic=msg.topic() or "", partition=msg.partition(), offset=msg.offset()
        )

    def _writer_for(self, data: bytes, fail: Callable[[str], SchemaError]) -> tuple[SchemaInfo, int]:
        """(writer schema, body start) from the framing header."""
        if data[:2] == SOE_MAGIC:
            if len(data) < _SOE_HEADER_LEN:
                raise fail(f"truncated single-object header ({len(data)} of {_SOE_HEADER_LEN} bytes)")
            fingerprint = int.from_bytes(data[2:_SOE_HEADER_LEN], "little")
            writer = self.catalog.by_fingerprint.get(fingerprint)
            if writer is None:
                raise fail(
                    f"unknown schema fingerprint {fingerprint:#018x} (written by a newer or foreign schema?)"
                )
            return writer, _SOE_HEADER_LEN
        if data[0] == _CONFLUENT_MAGIC:
            if self._registry is None:
                raise fail("Confluent-framed bytes (magic 0x00) but no schema registry is configured")
            if len(data) < _CONFLUENT_HEADER_LEN:
                raise fail(f"truncated Confluent header ({len(data)} of {_CONFLUENT_HEADER_LEN} bytes)")
            schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER_LEN], "big")
            return self._writer_for_id(schema_id, fail), _CONFLUENT_HEADER_LEN
        raise fail(f"unknown framing: first bytes {bytes(data[:4]).hex()} (expected c301 or 00)")

    def _writer_for_id(self, schema_id: int, fail: Callable[[str], SchemaError]) -> SchemaInfo:
        """Writer schema for a registry id: a catalog version if known by fingerprint, else the registry's."""
        writer = self._writers_by_id.get(schema_id)
        if writer is not None:
            return writer
        try:
            schema_str = self._registry.get_schema(schema_id).schema_str
            raw = json.loads(schema_str)
            parsed = parse_schema(raw, named_schemas={})
        except Exception as exc:
            raise fail(f"unknown schema id {schema_id}: {exc}") from exc
        canonical = to_parsing_canonical_form(parsed)
        fingerprint = schema_fingerprint(canonical)
        writer = self.catalog.by_fingerprint.get(fingerprint)
        if writer is None:  # registered by a newer producer: still readable through schema resolution
            name = raw.get("name", "?") if isinstance(raw, dict) else "?"
            writer = SchemaInfo(
                name=name.rsplit(".", 1)[-1],
                version=0,
                raw=raw,
                parsed=parsed,
                canonical=canonical,
                fingerprint=fingerprint,
                path=None,
            )
        self._writers_by_id[schema_id] = writer
        return writer
