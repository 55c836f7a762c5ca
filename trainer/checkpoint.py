"""Checkpoint directories: atomic write, digest, discovery of the latest complete one, retention.

Layout under ``<checkpoint_dir>/<policy_name>/``::

    step-00000040/               one complete checkpoint (the rename is the commit point)
        model/                   Hugging Face format (safetensors; adapter only for LoRA) -> the event's uri
        trainer_state.safetensors optimizer, scheduler, RNG, step, offsets (backend-specific; safetensors
                                 with a JSON header, never pickle: trainer/state_file.py)
        verl_state/              the verl backend's own checkpoint (optimizer shards)
        meta.json                version, digest of model/, state_digest of the rest, kind, last batch
                                 id/offset, offsets, lineage
        PUBLISHED                written after the CheckpointEvent was acknowledged by the broker
    .tmp-step-00000042-<hex>/    a write in progress (deleted on start: never trusted)

A checkpoint is written into a temp dir, every file and directory fsynced, then renamed into place
and the parent fsynced; so ``step-*`` with a ``meta.json`` is complete or absent, never partial.
Before resuming from one, the trainer checks both digests (:meth:`CheckpointManager.latest_valid`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrl.errors import CheckpointError
from streamrl.schemas import digest_dir

log = logging.getLogger(__name__)

META_FILE = "meta.json"
PUBLISHED_FILE = "PUBLISHED"
MODEL_DIR = "model"
#: The trainer state (trainer/state_file.py's format).
STATE_FILE = "trainer_state.safetensors"
#: The trainer state written by StreamRL before that format (pickle); never loaded.
LEGACY_STATE_FILE = "trainer_state.pt"
#: Tokenizer/generation files copied from the base model so a checkpoint is servable on its own.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk."""

    version: int
    path: Path
    meta: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        """The Hugging Face directory (the ``uri`` of the CheckpointEvent)."""
        return self.path / MODEL_DIR

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of ``model_dir`` (``schemas.digest_dir``), as recorded at write time."""
        return str(self.meta["digest"])

    @property
    def published(self) -> bool:
        """True once its CheckpointEvent was acknowledged."""
        return (self.path / PUBLISHED_FILE).is_file()


def state_digest(ckpt_dir: Path) -> str:
    """``sha256:<hex>`` of every file of a checkpoint directory outside ``model/`` except ``meta.json``
    and ``PUBLISHED`` (the trainer state, VERL's ``verl_state/``), by ``schemas.digest_dir``'s scheme.

    Raises:
        NotADirectoryError: ``ckpt_dir`` is not a directory.
    """
    return digest_dir(
        ckpt_dir, exclude=lambda rel: rel.split("/", 1)[0] in (MODEL_DIR, META_FILE, PUBLISHED_FILE)
    )


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files first, then directories bottom-up)."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


class CheckpointManager:
    """Writes, finds and prunes the checkpoints of one policy.

    Args:
        root: ``trainer.checkpoint_dir``.
        policy_name: sub-directory (the policy's name).
        keep_last: complete checkpoints kept by :meth:`prune`.
    """

    def __init__(self, root: Path, policy_name: str, keep_last: int) -> None:
        self.dir = Path(root) / policy_name
        self.keep_last = keep_last
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def step_name(version: int) -> str:
        """``step-00000042``."""
        return f"step-{version:08d}"

    def clean_temp(self) -> int:
        """Delete interrupted writes (``.tmp-*``). Returns how many were removed."""
        n = 0
        for p in self.dir.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
        return n

    def write(
        self,
        version: int,
        save_model: Callable[[Path], None],
        save_state: Callable[[Path], None],
        meta: dict[str, Any],
        base_model_dir: Path | None = None,
    ) -> CheckpointInfo:
        """Write checkpoint ``version`` atomically.

        Args:
            version: trainer step.
            save_model: writes the Hugging Face files into the given (new, empty) directory.
            save_state: writes the trainer state to the given file path.
            meta: JSON-serialisable fields added to ``meta.json`` (offsets, lineage, metrics, kind ...).
            base_model_dir: tokenizer/generation files are copied from here into ``model/``.

        Returns:
            The complete checkpoint (``meta["digest"]`` = ``digest_dir(model/)``).

        Raises:
            CheckpointError: the write failed (the temp dir is removed; nothing partial is left).
        """
        tmp = self.dir / f".tmp-{self.step_name(version)}-{uuid.uuid4().hex[:8]}"
        final = self.dir / self.step_name(version)
        try:
            tmp.mkdir(parents=True)
            model_dir = tmp / MODEL_DIR
            model_dir.mkdir()
            save_model(model_dir)
            if base_model_dir is not None:
                for name in TOKENIZER_FILES:
                    src = Path(base_model_dir) / name
                    if src.is_file() and not (model_dir / name).exists():
                        shutil.copy2(src, model_dir / name)
            save_state(tmp / STATE_FILE)
            full_meta = {
                **meta,
                "version": version,
                "digest": digest_dir(model_dir),
                "state_digest": state_digest(tmp),
            }
            (tmp / META_FILE).write_text(json.dumps(full_meta, indent=1, sort_keys=True))
            fsync_tree(tmp)
            if final.exists():  # a version re-trained after a restart that lost its publication: replace it
                trash = self.dir / f".tmp-replaced-{self.step_name(version)}-{uuid.uuid4().hex[:8]}"
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
            _fsync_path(self.dir)
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"writing checkpoint {final}: {exc}", "write") from exc
        return CheckpointInfo(version=version, path=final, meta=full_meta)

    def list_complete(self) -> list[CheckpointInfo]:
        """Complete checkpoints (``step-*`` with a readable ``meta.json``), oldest first."""
        out = []
        for p in self.dir.glob("step-*"):
            meta_path = p / META_FILE
            if not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text())
                out.append(CheckpointInfo(version=int(meta["version"]), path=p, meta=meta))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring checkpoint %s: unreadable %s: %s", p, META_FILE, exc)
        return sorted(out, key=lambda c: c.version)

    def latest_valid(self) -> CheckpointInfo | None:
        """The newest complete checkpoint whose ``model/`` and trainer state still match the digests
        recorded in its ``meta.json`` (``digest``, ``state_digest``), checked before anything is loaded.

        A checkpoint whose digest no longer matches (disk corruption, a hand edit, tampering) is skipped
        with an error log and the next older one is tried. Checkpoints written before ``state_digest``
        existed have only the model checked (their state is the old pickle file, which the backends
        refuse to load).
        """
        for ckpt in reversed(self.list_complete()):
            try:
                actual = digest_dir(ckpt.model_dir)
            except NotADirectoryError:
                log.warning("checkpoint %s has no %s/; skipped", ckpt.path, MODEL_DIR)
                continue
            if actual != ckpt.digest:
                log.error("checkpoint %s: digest %s != recorded %s; skipped", ckpt.path, actual, ckpt.digest)
                continue
            recorded = ckpt.meta.get("state_digest")
            if recorded is not None and (actual := state_digest(ckpt.path)) != recorded:
                log.error(
                    "checkpoint %s: trainer state digest %s != recorded %s; skipped",
                    ckpt.path,
                    actual,
                    recorded,
                )
                continue
            return ckpt
        return None

    @staticmethod
    def mark_published(ckpt: CheckpointInfo) -> None:
        """Record (durably) that the checkpoint's event was acknowledged."""
        marker = ckpt.path / PUBLISHED_FILE
        marker.write_text("")
        _fsync_path(marker)
        _fsync_path(ckpt.path)

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep_last`` complete checkpoints (unpublished ones are kept).

        Returns:
            The deleted directories.
        """
        complete = self.list_complete()
        doomed = [c for c in complete[: max(0, len(complete) - self.keep_last)] if c.published]
        for c in doomed:
            shutil.rmtree(c.path, ignore_errors=True)
        return [c.path for c in doomed]
