"""Content digests (``sha256:<hex>``) for checkpoint directories and claim-check payloads, the URIs
that name those files between stages, and the one rule for adopting a checkpoint
(:func:`verify_checkpoint_dir`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from streamrl.schemas.errors import CheckpointError

_CHUNK = 1 << 20  # bytes read per step


def local_path(uri: str) -> Path:
    """The local path a file URI names: a plain path (absolute or relative), ``file:///abs/path`` or
    ``file://localhost/abs/path`` (percent-encoded). The form of ``CheckpointEvent.uri`` and
    ``ClaimCheck.uri``: every stage that reads one must see the same filesystem.

    Raises:
        ValueError: another scheme, or a ``file://`` URI that names another host (message says which).
    """
    parsed = urlparse(uri)
    if not parsed.scheme:
        return Path(uri)
    if parsed.scheme != "file":
        raise ValueError(f"URI scheme {parsed.scheme!r} unsupported (local paths and file:// only)")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file:// URI names host {parsed.netloc!r}; only local files are supported")
    return Path(unquote(parsed.path))


def digest_bytes(data: bytes) -> str:
    """``"sha256:<64 hex>"`` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_file(path: str | os.PathLike[str]) -> str:
    """``"sha256:<64 hex>"`` of one file's bytes (e.g. a claim-check payload).

    Raises:
        FileNotFoundError / IsADirectoryError: `path` is not a readable file.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def digest_dir(path: str | os.PathLike[str], *, exclude: Callable[[str], bool] | None = None) -> str:
    """Stable digest of a directory tree: ``"sha256:<64 hex>"``.

    Covers every regular file below `path` (symlinks to files are followed; directories, empty ones
    included, only through the files in them), in order of their relative POSIX path sorted by UTF-8
    bytes. For each file the hash takes ``len(relpath)`` (8 bytes, big-endian), the relpath (UTF-8),
    ``size`` (8 bytes, big-endian) and the file bytes, so no two different trees share an input stream.
    Independent of mtimes, permissions, absolute location and filesystem listing order. ``exclude``
    (optional) is given each file's relative POSIX path; the files it returns True for are left out.

    Raises:
        NotADirectoryError: `path` does not exist or is not a directory (message names the path).
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"digest_dir: {root} is not a directory")
    files: list[tuple[bytes, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_file() and (exclude is None or not exclude(rel)):
                files.append((rel.encode("utf-8"), full))
    files.sort(key=lambda item: item[0])
    h = hashlib.sha256()
    for rel, full in files:
        h.update(len(rel).to_bytes(8, "big"))
        h.update(rel)
        h.update(full.stat().st_size.to_bytes(8, "big"))
        with open(full, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def verify_checkpoint_dir(uri: str, digest: str, what: str = "checkpoint") -> Path:
    """The rule before a checkpoint may move a policy version anywhere: its directory exists and its
    :func:`digest_dir` equals the digest the ``CheckpointEvent`` carries.

    The trainer digests what it wrote (from disk) before it publishes; the inference server and the
    sampler apply this rule to every event they act on, so a missing, tampered or foreign checkpoint
    moves nothing.

    Args:
        uri: the event's ``uri`` (local path or ``file://``).
        digest: the event's ``digest`` (``sha256:<hex>``).
        what: names the checkpoint in messages (``checkpoint v12``).

    Returns:
        The directory.

    Raises:
        CheckpointError: ``reason="uri"`` (unsupported URI), ``"missing"`` (not a directory here) or
            ``"digest"`` (its content differs).
    """
    try:
        path = local_path(uri)
    except ValueError as exc:
        raise CheckpointError(f"{what}: uri {uri!r}: {exc}", "uri") from exc
    if not path.is_dir():
        raise CheckpointError(f"{what}: {path} is not a directory here", "missing")
    actual = digest_dir(path)
    if actual != digest:
        raise CheckpointError(f"{what}: digest of {path} is {actual}, the event says {digest}", "digest")
    return path
