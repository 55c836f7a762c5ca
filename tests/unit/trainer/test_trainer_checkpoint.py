"""Checkpoint directories: atomic, digested, discoverable, pruned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrl.errors import CheckpointError
from streamrl.schemas import digest_dir
from streamrl.trainer.checkpoint import STATE_FILE, CheckpointManager, state_digest


def _write(mgr: CheckpointManager, version: int, content: str = "w") -> None:
    mgr.write(
        version,
        lambda d: (d / "model.safetensors").write_text(f"{content}{version}"),
        lambda p: p.write_text("state"),
        {"offsets": {"0": version}, "trained_batch_ids": [f"b{i}" for i in range(version)]},
    )


def test_write_is_complete_and_digested(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, "pol", keep_last=3)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "tokenizer.json").write_text("{}")
    info = mgr.write(
        7,
        lambda d: (d / "model.safetensors").write_text("x"),
        lambda p: p.write_text("s"),
        {"k": 1},
        base_model_dir=tmp_path / "base",
    )
    assert info.path == tmp_path / "pol" / "step-00000007"
    assert sorted(p.name for p in info.model_dir.iterdir()) == ["model.safetensors", "tokenizer.json"]
    meta = json.loads((info.path / "meta.json").read_text())
    assert meta["version"] == 7 and meta["k"] == 1 and meta["digest"] == digest_dir(info.model_dir)
    assert meta["state_digest"] == state_digest(info.path) and (info.path / STATE_FILE).read_text() == "s"
    assert not info.published
    mgr.mark_published(info)
    assert mgr.list_complete()[0].published
    assert not list((tmp_path / "pol").glob(".tmp-*"))


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, "pol", keep_last=3)

    def boom(_: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(CheckpointError, match="step-00000003: disk full"):
        mgr.write(3, lambda d: (d / "m").write_text("x"), boom, {})
    assert list((tmp_path / "pol").iterdir()) == []


def test_latest_valid_skips_interrupted_and_corrupted(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, "pol", keep_last=5)
    _write(mgr, 2)
    _write(mgr, 4)
    (tmp_path / "pol" / ".tmp-step-00000006-abcd" / "model").mkdir(parents=True)  # an interrupted write
    (tmp_path / "pol" / "step-00000008").mkdir()  # no meta.json: not complete
    assert mgr.latest_valid().version == 4  # type: ignore[union-attr]
    (tmp_path / "pol" / "step-00000004" / "model" / "model.safetensors").write_text("corrupt")
    assert mgr.latest_valid().version == 2  # type: ignore[union-attr]
    assert mgr.clean_temp() == 1


def test_latest_valid_checks_the_trainer_state_digest_before_any_load(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, "pol", keep_last=5)
    _write(mgr, 2)
    _write(mgr, 4)
    (tmp_path / "pol" / "step-00000004" / STATE_FILE).write_text("tampered")
    assert mgr.latest_valid().version == 2  # type: ignore[union-attr]
    (tmp_path / "pol" / "step-00000002" / "verl_state").mkdir()  # a file the write did not record
    (tmp_path / "pol" / "step-00000002" / "verl_state" / "optim.pt").write_text("planted")
    assert mgr.latest_valid() is None
    meta = tmp_path / "pol" / "step-00000004" / "meta.json"  # written before state_digest: model only
    meta.write_text(
        json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "state_digest"})
    )
    assert mgr.latest_valid().version == 4  # type: ignore[union-attr]


def test_prune_keeps_last_k_and_unpublished(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, "pol", keep_last=2)
    for v in (1, 2, 3, 4):
        _write(mgr, v)
    for c in mgr.list_complete():
        if c.version != 1:
            mgr.mark_published(c)
    removed = mgr.prune()
    assert [p.name for p in removed] == ["step-00000002"]
    assert [c.version for c in mgr.list_complete()] == [1, 3, 4]


def test_rewriting_a_version_replaces_it(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path, "pol", keep_last=2)
    _write(mgr, 2, "old")
    _write(mgr, 2, "new")
    (only,) = mgr.list_complete()
    assert (only.model_dir / "model.safetensors").read_text() == "new2"
