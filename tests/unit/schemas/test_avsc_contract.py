"""The pydantic models and the `.avsc` files must not drift apart; the catalog loads only sound files."""

from __future__ import annotations

import json
import typing
from datetime import datetime
from enum import Enum
from pathlib import Path
from types import UnionType

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streamrl.schemas import TOP_RECORDS, TOPIC_RECORDS
from streamrl.schemas.avro import build_catalog, catalog, load_schema_file
from streamrl.schemas.records import INT32_MAX

PRIMITIVE = {str: "string", bool: "boolean", bytes: "bytes"}


def _is_int32(info_or_metadata: list) -> bool:
    return any(getattr(m, "le", None) == INT32_MAX for m in info_or_metadata)


def expected_avro(annotation, metadata: list, in_list: bool = False):
    """The Avro type a model annotation must have (conventions in schemas/records.py)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        extra_meta = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        return expected_avro(base, metadata + extra_meta, in_list)
    if origin is typing.Union or origin is UnionType:
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return ["null", expected_avro(inner, metadata)]
    if origin is list:
        (item,) = typing.get_args(annotation)
        return {"type": "array", "items": expected_avro(item, [], in_list=True)}
    if origin is dict:
        key, value = typing.get_args(annotation)
        assert key is str
        return {"type": "map", "values": expected_avro(value, [])}
    if annotation is int:
        return "int" if in_list or _is_int32(metadata) else "long"
    if annotation is float:
        return "float" if in_list else "double"
    if annotation is datetime:
        return {"type": "long", "logicalType": "timestamp-millis"}
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return {"type": "enum", "name": annotation.__name__, "symbols": [m.value for m in annotation]}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"type": "record", "name": annotation.__name__, "model": annotation}
    return PRIMITIVE[annotation]


def compare(model: type[BaseModel], schema: dict, path: str) -> list[str]:
    """Differences between a model and a record schema (names, types, nullability, defaults)."""
    errors = []
    fields = {f["name"]: f for f in schema["fields"]}
    if list(fields) != list(model.model_fields):
        errors.append(
            f"{path}: field names/order differ: avsc {list(fields)} vs model {list(model.model_fields)}"
        )
    for name, info in model.model_fields.items():
        if name not in fields:
            continue
        errors += compare_type(
            expected_avro(info.annotation, info.metadata), fields[name]["type"], f"{path}.{name}"
        )
        errors += compare_default(info, fields[name], f"{path}.{name}")
        if not fields[name].get("doc"):
            errors.append(f"{path}.{name}: no doc in the .avsc")
    return errors


def compare_type(expected, actual, path: str) -> list[str]:
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != 2 or actual[0] != "null":
            return [f"{path}: expected a ['null', X] union (nullable, default null), got {actual}"]
        return compare_type(expected[1], actual[1], path)
    if isinstance(expected, str):
        return [] if actual == expected else [f"{path}: expected {expected}, got {actual}"]
    if isinstance(actual, str) or actual.get("type") != expected["type"]:
        return [f"{path}: expected {expected['type']}, got {actual}"]
    kind = expected["type"]
    if kind == "array":
        return compare_type(expected["items"], actual["items"], f"{path}[]")
    if kind == "map":
        return compare_type(expected["values"], actual["values"], f"{path}{{}}")
    if kind == "enum":
        ok = actual["name"] == expected["name"] and actual["symbols"] == expected["symbols"]
        return [] if ok else [f"{path}: enum {actual['name']} {actual['symbols']} != model {expected}"]
    if kind == "record":
        if actual["name"] != expected["name"]:
            return [f"{path}: record {actual['name']} != model {expected['name']}"]
        return compare(expected["model"], actual, path)
    if actual.get("logicalType") != expected.get("logicalType"):
        return [f"{path}: logicalType {actual.get('logicalType')} != {expected.get('logicalType')}"]
    return []


def compare_default(info: FieldInfo, field: dict, path: str) -> list[str]:
    if info.default_factory is not None:
        # Only two producer conveniences are allowed: a timestamp defaulting to now (no Avro default) and an
        # empty container (Avro default [] or {}).
        produced = info.default_factory()
        if isinstance(produced, datetime):
            return [] if "default" not in field else [f"{path}: timestamp factory but avsc has a default"]
        return (
            []
            if field.get("default") == produced
            else [f"{path}: factory gives {produced!r}, avsc default {field.get('default')!r}"]
        )
    if info.default is PydanticUndefined:
        return (
            []
            if "default" not in field
            else [f"{path}: avsc default {field['default']!r} but model field is required"]
        )
    if "default" not in field:
        return [f"{path}: model default {info.default!r} but no avsc default"]
    return (
        []
        if field["default"] == info.default
        else [f"{path}: model default {info.default!r} != avsc {field['default']!r}"]
    )


@pytest.mark.parametrize("model", TOP_RECORDS, ids=lambda m: m.__name__)
def test_model_matches_latest_avsc(model):
    latest = catalog().latest(model.__name__)
    assert compare(model, latest.raw, model.__name__) == []
    assert latest.raw["namespace"] == "io.streamrl" and latest.raw.get("doc")
    assert model.SCHEMA_VERSION == latest.version == latest.raw["fields"][0]["default"]
    assert model.model_fields["schema_version"].default == latest.version


def test_every_record_has_a_schema_and_topic():
    assert set(catalog().history) == {m.__name__ for m in TOP_RECORDS}
    assert set(TOPIC_RECORDS.values()) == set(TOP_RECORDS)
    for _name, versions in catalog().history.items():
        for info in versions:
            assert info.raw["fields"][0]["name"] == "schema_version", info.path
            assert info.raw["fields"][0]["default"] == info.version, f"{info.path}: schema_version default"


def test_drift_is_detected():
    """The comparison itself can fail: a changed type, a missing default, a renamed field."""
    from streamrl.schemas import Task

    raw = json.loads(json.dumps(catalog().latest("Task").raw))
    raw["fields"][1]["type"] = "bytes"
    raw["fields"][4]["default"] = "x"
    del raw["fields"][4]["default"]
    raw["fields"][3]["name"] = "body"
    errors = compare(Task, raw, "Task")
    assert any("task_id: expected string, got bytes" in e for e in errors)
    assert any("source: model default None but no avsc default" in e for e in errors)
    assert any("field names/order differ" in e for e in errors)


def _write(root: Path, name: str, version: int, schema: dict) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / f"v{version}.avsc").write_text(json.dumps(schema))


def test_catalog_rejects_bad_layouts(tmp_path):
    record = {
        "type": "record",
        "name": "A",
        "namespace": "io.streamrl",
        "fields": [{"name": "x", "type": "int"}],
    }
    _write(tmp_path / "gap", "A", 1, record)
    _write(tmp_path / "gap", "A", 3, record | {"fields": [{"name": "y", "type": "int"}]})
    with pytest.raises(ValueError, match="without gaps"):
        build_catalog(tmp_path / "gap")
    _write(tmp_path / "name", "B", 1, record)
    with pytest.raises(ValueError, match="expected a record named 'B'"):
        build_catalog(tmp_path / "name")
    _write(
        tmp_path / "bad", "A", 1, {"type": "record", "name": "A", "fields": [{"name": "x", "type": "nope"}]}
    )
    with pytest.raises(ValueError, match="invalid Avro schema"):
        build_catalog(tmp_path / "bad")
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / "A").mkdir()
    (tmp_path / "file" / "A" / "latest.avsc").write_text("{}")
    with pytest.raises(ValueError, match=r"named v<N>\.avsc"):
        load_schema_file(tmp_path / "file" / "A" / "latest.avsc")
