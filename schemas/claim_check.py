"""The claim-check file of a ``TrainingBatch``: the one definition both streams (writer) and the trainer (reader) use.

A batch whose inline record would be too large for Kafka is written to a file and the record on
``batches`` carries a :class:`~streamrl.schemas.records.ClaimCheck` pointer instead of its rows.

File format:
    The bytes of the *inline* ``TrainingBatch`` (same ``batch_id``, ``rows`` set, ``claim_check``
    None), encoded with :class:`streamrl.schemas.serde.Serde` (Avro, single-object encoding or
    Confluent framing, whichever the writer's serde uses). Named ``<blob_dir>/<batch_id>.avro``,
    written atomically (temp file in the same directory, fsync, rename), so a reader never sees a
    partial file and a re-emitted batch rewrites identical bytes.

Pointer (``ClaimCheck``):
    ``uri`` = absolute ``file://`` URI of the file; ``digest`` = ``sha256:<hex>`` of its bytes
    (:func:`streamrl.schemas.digest.digest_bytes`); ``size_bytes`` = its length in bytes;
    ``num_rows`` = rows inside.

URI forms accepted (for ``uri`` and for the ``blob_dir`` setting): a local path (absolute or
relative to the working directory), ``file:///abs/path`` or ``file://localhost/abs/path``
(percent-encoded). Any other scheme or host raises :class:`ClaimCheckError`: both stages must see the
same filesystem (a shared volume in a deployment).

A reader verifies, in this order: the file is readable, its size equals ``size_bytes``, its digest
equals ``digest``, it decodes as an inline ``TrainingBatch`` with the pointer's ``batch_id``, and it
holds ``num_rows`` rows. Any failure is a :class:`ClaimCheckError` naming the URI and the cause.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from streamrl.schemas.digest import digest_bytes, local_path
from streamrl.schemas.errors import SchemaError, StreamRLError
from streamrl.schemas.records import ClaimCheck, TrainingBatch, TrainingRow

if TYPE_CHECKING:
    from streamrl.schemas.serde import Serde

__all__ = ["ClaimCheckError", "read_claim_check", "uri_path", "write_claim_check"]

#: File name suffix of a claim-check payload (``<batch_id>.avro``).
SUFFIX = ".avro"


class ClaimCheckError(StreamRLError):
    """A claim-check file cannot be written or read, or does not match its pointer.

    Attributes:
        uri: the pointer's URI (or the ``blob_dir`` setting) concerned.
        reason: what is wrong (unsupported URI, unreadable file, size/digest/row-count mismatch, bad payload).
    """

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"claim-check {uri}: {reason}")

    def __reduce__(self):  # keep pickling working with the two-argument init
        return (type(self), (self.uri, self.reason))


def uri_path(uri: str) -> Path:
    """The local path of a claim-check URI or of the ``streams.blob_dir`` setting (:func:`~streamrl.schemas.digest.local_path`).

    Raises:
        ClaimCheckError: a scheme other than ``file``, or a ``file://`` URI naming another host.
    """
    try:
        return local_path(uri)
    except ValueError as exc:
        raise ClaimCheckError(uri, str(exc)) from exc


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_claim_check(inline: TrainingBatch, data: bytes, blob_dir: str) -> ClaimCheck:
    """Write the encoded inline batch to ``<blob_dir>/<batch_id>.avro`` and return its pointer.

    Args:
        inline: the batch with ``rows`` set (its ``batch_id`` names the file; ``len(rows)`` is ``num_rows``).
        data: ``serde.encode(inline)``, the file's bytes.
        blob_dir: local path or ``file://`` URI of the directory (created if missing).

    Returns:
        The ``ClaimCheck`` (absolute ``file://`` URI, sha256 digest, size in bytes, row count).

    Raises:
        ClaimCheckError: ``inline`` has no rows, ``blob_dir`` is unsupported, or the file cannot be written.
    """
    if not inline.rows:
        raise ClaimCheckError(blob_dir, f"batch {inline.batch_id!r} has no inline rows to write")
    path = (uri_path(blob_dir) / f"{inline.batch_id}{SUFFIX}").resolve()
    try:
        _write_atomic(path, data)
    except OSError as exc:
        raise ClaimCheckError(path.as_uri(), f"cannot write: {exc.strerror or exc}") from exc
    return ClaimCheck(
        uri=path.as_uri(), digest=digest_bytes(data), size_bytes=len(data), num_rows=len(inline.rows)
    )


def read_claim_check(batch: TrainingBatch, serde: Serde) -> list[TrainingRow]:
    """The rows behind ``batch.claim_check``, every check of the module docstring passed.

    Args:
        batch: a record from ``batches`` whose ``claim_check`` is set.
        serde: decodes the payload (any serde reads both framings).

    Returns:
        The rows, ``len == claim_check.num_rows``.

    Raises:
        ClaimCheckError: no pointer, unsupported URI, unreadable file, size or digest mismatch,
            undecodable payload, a payload that is not the inline form of this batch, or a row count
            different from ``num_rows``.
    """
    cc = batch.claim_check
    if cc is None:
        raise ClaimCheckError("-", f"batch {batch.batch_id!r} has no claim_check")
    path = uri_path(cc.uri)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClaimCheckError(cc.uri, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) != cc.size_bytes:
        raise ClaimCheckError(cc.uri, f"size {len(data)} B != declared {cc.size_bytes} B")
    digest = digest_bytes(data)
    if digest != cc.digest:
        raise ClaimCheckError(cc.uri, f"digest {digest} != declared {cc.digest}")
    try:
        inner = serde.decode(data, TrainingBatch, topic="claim-check")
    except SchemaError as exc:
        raise ClaimCheckError(cc.uri, f"undecodable payload: {exc.reason}") from exc
    if inner.rows is None:
        raise ClaimCheckError(cc.uri, "payload holds another claim-check, not rows")
    if inner.batch_id != batch.batch_id:
        raise ClaimCheckError(cc.uri, f"payload is batch {inner.batch_id!r}, not {batch.batch_id!r}")
    if len(inner.rows) != cc.num_rows:
        raise ClaimCheckError(cc.uri, f"{len(inner.rows)} rows != declared num_rows {cc.num_rows}")
    return list(inner.rows)
