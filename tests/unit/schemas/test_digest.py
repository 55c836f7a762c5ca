"""digest_dir: stable over a tree's relative paths and bytes, sensitive to every change."""

from __future__ import annotations

import hashlib
import os

import pytest

from streamrl.schemas import digest_bytes, digest_dir, digest_file


def _tree(root, files: dict[str, bytes]):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


FILES = {
    "config.json": b'{"vocab_size": 64}',
    "model.safetensors": os.urandom(3000),
    "sub/tokenizer.json": b"{}",
}


def test_matches_the_documented_formula(tmp_path):
    _tree(tmp_path, FILES)
    h = hashlib.sha256()
    for rel in sorted(FILES):
        h.update(len(rel).to_bytes(8, "big") + rel.encode() + len(FILES[rel]).to_bytes(8, "big") + FILES[rel])
    assert digest_dir(tmp_path) == "sha256:" + h.hexdigest()


def test_independent_of_location_order_and_mtime(tmp_path):
    a = digest_dir(_tree(tmp_path / "a", FILES))
    _tree(tmp_path / "b", dict(reversed(FILES.items())))
    os.utime(tmp_path / "b" / "config.json", (1, 1))
    (tmp_path / "b" / "empty-dir").mkdir()
    assert a == digest_dir(tmp_path / "b") == digest_dir(str(tmp_path / "a"))
    assert a.startswith("sha256:") and len(a) == 7 + 64


@pytest.mark.parametrize(
    "change",
    [
        {"config.json": b'{"vocab_size": 65}'},  # content
        {"extra.txt": b""},  # an added empty file
        {"sub/tokenizer.json": None, "tokenizer.json": b"{}"},  # moved
        {"config.json": None, "config.jso": b'n{"vocab_size": 64}'},  # same concatenated bytes, other split
    ],
)
def test_sensitive_to_every_change(tmp_path, change):
    before = digest_dir(_tree(tmp_path / "x", FILES))
    files = {k: v for k, v in {**FILES, **change}.items() if v is not None}
    assert digest_dir(_tree(tmp_path / "y", files)) != before


def test_files_bytes_and_errors(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"abc")
    assert (
        digest_file(tmp_path / "f.bin")
        == digest_bytes(b"abc")
        == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    )
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        digest_dir(tmp_path / "f.bin")
    with pytest.raises(NotADirectoryError, match="missing"):
        digest_dir(tmp_path / "missing")


def test_digest_dir_can_leave_files_out(tmp_path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.safetensors").write_text("w")
    (tmp_path / "state.safetensors").write_text("s")
    only_state = digest_dir(tmp_path, exclude=lambda rel: rel.startswith("model/"))
    assert only_state != digest_dir(tmp_path)
    (tmp_path / "model" / "w.safetensors").write_text("changed")
    assert digest_dir(tmp_path, exclude=lambda rel: rel.startswith("model/")) == only_state
