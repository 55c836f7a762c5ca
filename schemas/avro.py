"""The schema catalog: every `.avsc` under `schemas/avsc/<RecordName>/v<N>.avsc`, parsed once.

Each record's history is kept (v1, v2, ...); the highest version is the reader ("latest") schema. Every
version is known by its CRC-64-AVRO fingerprint of the Parsing Canonical Form, so single-object-encoded
bytes written by any known version can be resolved to the latest one.

Formula source: Avro 1.11 specification, "Schema Fingerprints" (CRC-64-AVRO, empty = 0xc15d213aa4d7a795)
and "Single object encoding" (``C3 01`` + 8-byte little-endian fingerprint + body).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

AVSC_DIR = Path(__file__).parent / "avsc"
NAMESPACE = "io.streamrl"
SOE_MAGIC = b"\xc3\x01"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO fingerprint of `data` (an unsigned 64-bit int), as the Avro spec defines it.

    Args:
        data: usually the UTF-8 Parsing Canonical Form of a schema.
    Returns:
        The fingerprint, 0 <= fp < 2**64. Single-object encoding writes it little-endian.
    """
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaInfo:
    """One version of one record's schema.

    Attributes:
        name: record name without namespace (e.g. "LLMRequest").
        version: N of `v<N>.avsc` (>= 1).
        raw: the JSON object as written in the file (docs included).
        parsed: fastavro's parsed form (what the reader/writer take).
        canonical: Parsing Canonical Form (compact JSON text).
        fingerprint: CRC-64-AVRO of `canonical` (unsigned 64-bit).
        path: the `.avsc` file (None for a schema only the registry knows).
    """

    name: str
    version: int
    raw: dict[str, Any]
    parsed: Any = field(repr=False)
    canonical: str = field(repr=False)
    fingerprint: int
    path: Path | None

    @property
    def fullname(self) -> str:
        """Namespaced record name, e.g. "io.streamrl.LLMRequest" (also the registry subject)."""
        return f"{self.raw.get('namespace', NAMESPACE)}.{self.raw['name']}"

    @property
    def soe_header(self) -> bytes:
        """The 10-byte single-object-encoding header: ``C3 01`` + little-endian fingerprint."""
        return SOE_MAGIC + self.fingerprint.to_bytes(8, "little")


def load_schema_file(path: Path) -> SchemaInfo:
    """Read and parse one `.avsc` file.

    Raises:
        ValueError: the file is not valid JSON, not a valid Avro schema, or its name/version disagree
            with its location `avsc/<Name>/v<N>.avsc`.
    """
    match = _VERSION_FILE.match(path.name)
    if match is None:
        raise ValueError(f"{path}: schema files must be named v<N>.avsc")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = parse_schema(raw, named_schemas={})  # fresh names: each file stands alone
    except Exception as exc:  # json or fastavro parse errors: say which file
        raise ValueError(f"{path}: invalid Avro schema: {exc}") from exc
    if raw.get("type") != "record" or raw.get("name") != path.parent.name:
        raise ValueError(f"{path}: expected a record named {path.parent.name!r}, got {raw.get('name')!r}")
    canonical = to_parsing_canonical_form(parsed)
    return SchemaInfo(
        name=raw["name"],
        version=int(match.group(1)),
        raw=raw,
        parsed=parsed,
        canonical=canonical,
        fingerprint=crc64_avro(canonical.encode("utf-8")),
        path=path,
    )


@dataclass(frozen=True)
class SchemaCatalog:
    """All known schema versions, by record name and by fingerprint.

    Attributes:
        history: record name -> versions in ascending order (v1 first).
        by_fingerprint: CRC-64-AVRO fingerprint -> schema version.
    """

    history: dict[str, tuple[SchemaInfo, ...]]
    by_fingerprint: dict[int, SchemaInfo]

    def latest(self, name: str) -> SchemaInfo:
        """The newest version of record `name` (the reader schema). Raises KeyError if unknown."""
        return self.history[name][-1]


def build_catalog(avsc_dir: Path = AVSC_DIR) -> SchemaCatalog:
    """Load every `<Name>/v<N>.avsc` under `avsc_dir`.

    Raises:
        ValueError: a bad file, a gap in a record's versions (v1, v3 without v2), or two schemas with the
            same fingerprint under different names/versions.
    """
    history: dict[str, tuple[SchemaInfo, ...]] = {}
    by_fp: dict[int, SchemaInfo] = {}
    for record_dir in sorted(p for p in avsc_dir.iterdir() if p.is_dir()):
        versions = sorted((load_schema_file(f) for f in record_dir.glob("*.avsc")), key=lambda s: s.version)
        if [s.version for s in versions] != list(range(1, len(versions) + 1)):
            raise ValueError(
                f"{record_dir}: versions must be v1..vN without gaps, got {[s.version for s in versions]}"
            )
        for info in versions:
            if info.fingerprint in by_fp:
                raise ValueError(f"{info.path} has the same canonical form as {by_fp[info.fingerprint].path}")
            by_fp[info.fingerprint] = info
        if versions:
            history[record_dir.name] = tuple(versions)
    return SchemaCatalog(history=history, by_fingerprint=by_fp)


@cache
def catalog() -> SchemaCatalog:
    """The catalog of the packaged `.avsc` files, loaded once per process (files are read-only data)."""
    return build_catalog(AVSC_DIR)


# ------------------------------------------------------------------------------ evolution (BACKWARD)

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return (
            schema["type"]
            if schema["type"] in ("record", "enum", "array", "map", "fixed")
            else _type_name(schema["type"])
        )
    return schema


def _named(schema: Any, names: dict[str, Any], namespace: str) -> Any:
    """Resolve a reference to a named type defined earlier in the same file."""
    if isinstance(schema, str) and schema not in _PROMOTIONS and schema not in ("null", "boolean", "double"):
        return names.get(schema) or names.get(f"{namespace}.{schema}") or schema
    return schema


def _collect(schema: Any, names: dict[str, Any], namespace: str) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            names[schema["name"]] = names[f"{ns}.{schema['name']}"] = schema
            for f in schema.get("fields", []):
                _collect(f["type"], names, ns)
        elif kind == "array":
            _collect(schema["items"], names, namespace)
        elif kind == "map":
            _collect(schema["values"], names, namespace)
        elif isinstance(kind, dict | list):
            _collect(kind, names, namespace)


def _resolution_errors(
    reader: Any, writer: Any, rn: dict[str, Any], wn: dict[str, Any], path: str
) -> list[str]:
    """Why data written with `writer` cannot be read with `reader` (Avro spec "Schema Resolution")."""
    reader, writer = _named(reader, rn, NAMESPACE), _named(writer, wn, NAMESPACE)
    if isinstance(writer, list):  # every writer branch must resolve
        errors = []
        for branch in writer:
            errors += _resolution_errors(reader, branch, rn, wn, f"{path}<{_type_name(branch)}>")
        return errors
    if isinstance(reader, list):  # some reader branch must accept the writer type
        if any(not _resolution_errors(b, writer, rn, wn, path) for b in reader):
            return []
        return [f"{path}: writer type {_type_name(writer)} matches no branch of the reader union"]
    rt, wt = _type_name(reader), _type_name(writer)
    if rt != wt:
        if rt in _PROMOTIONS.get(wt, set()):
            return []
        return [f"{path}: type changed from {wt} to {rt}"]
    if rt == "record":
        return _record_errors(reader, writer, rn, wn, path)
    if rt == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{path}: enum symbols {sorted(missing)} removed without an enum default"]
        return []
    if rt == "array":
        return _resolution_errors(reader["items"], writer["items"], rn, wn, f"{path}[]")
    if rt == "map":
        return _resolution_errors(reader["values"], writer["values"], rn, wn, f"{path}{{}}")
    if rt == "fixed" and reader.get("size") != writer.get("size"):
        return [f"{path}: fixed size changed"]
    if (
        isinstance(reader, dict)
        and isinstance(writer, dict)
        and reader.get("logicalType") != writer.get("logicalType")
    ):
        return [
            f"{path}: logicalType changed from {writer.get('logicalType')} to {reader.get('logicalType')}"
        ]
    return []


def _record_errors(
    reader: dict, writer: dict, rn: dict[str, Any], wn: dict[str, Any], path: str
) -> list[str]:
    errors = []
    if reader["name"] != writer["name"] and writer["name"] not in reader.get("aliases", []):
        errors.append(f"{path}: record renamed from {writer['name']} to {reader['name']}")
    written = {f["name"]: f for f in writer["fields"]}
    for field_ in reader["fields"]:
        name = field_["name"]
        source = written.get(name) or next(
            (written[a] for a in field_.get("aliases", []) if a in written), None
        )
        if source is None:
            if "default" not in field_:
                errors.append(f"{path}.{name}: added without a default")
        else:
            errors += _resolution_errors(field_["type"], source["type"], rn, wn, f"{path}.{name}")
    return errors


def backward_compatibility_errors(new: SchemaInfo, old: SchemaInfo) -> list[str]:
    """Reasons a reader with schema `new` cannot read data written with `old` (empty list = BACKWARD ok).

    Rules (Avro spec, "Schema Resolution"): fields the reader has and the writer lacks need a default;
    fields the writer has and the reader lacks are skipped; types must match or be promotable
    (int->long->float->double, string<->bytes); enums may add symbols; unions resolve branch by branch.
    """
    rn: dict[str, Any] = {}
    wn: dict[str, Any] = {}
    _collect(new.raw, rn, NAMESPACE)
    _collect(old.raw, wn, NAMESPACE)
    return _resolution_errors(new.raw, old.raw, rn, wn, new.name)
