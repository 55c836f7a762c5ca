"""The schema catalog: every `.avsc` under `schemas/avsc/<RecordName>/v<N>.avsc`, parsed once.

Each record's history is kept (v1, v2, ...); the highest version is the reader ("latest") schema. Every
version is known by its CRC-64-AVRO fingerprint of the Parsing Canonical Form, so single-object-encoded
bytes written by any known version can be resolved to the latest one.

Formula source: Avro 1.11 specification, "Schema Fingerprints" (CRC-64-AVRO; fastavro computes it) and
"Single object encoding" (``C3 01`` + 8-byte little-endian fingerprint + body). Evolution rules (every
version BACKWARD compatible with the previous one) are checked in the tests with Apache Avro's own
``avro.compatibility`` checker (the ``avro`` package, dev extra), not at runtime.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

AVSC_DIR = Path(__file__).parent / "avsc"
NAMESPACE = "io.streamrl"
SOE_MAGIC = b"\xc3\x01"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


def schema_fingerprint(canonical: str) -> int:
    """CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, computed by fastavro.

    Args:
        canonical: the Parsing Canonical Form (``fastavro.schema.to_parsing_canonical_form``).
    Returns:
        The fingerprint as an unsigned 64-bit int, 0 <= fp < 2**64. fastavro returns the 8 bytes as hex
        in little-endian order, the order single-object encoding writes them.
    """
    return int.from_bytes(bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO")), "little")


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
        fingerprint=schema_fingerprint(canonical),
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
