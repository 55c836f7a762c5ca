"""Which ``CheckpointEvent``s may move the sampler's policy version: only checkpoints that exist and verify.

The sampler's version stamps every sample it admits (``Sample.policy_version``), schedules
validation and, with the event's ``consumed_rollouts``, sets how much work is in flight. An event
that names a missing, tampered or foreign checkpoint (the inference server refuses to load it) must
move none of that, or the sampler runs ahead of a policy nobody serves and its admission counts
rollouts no trainer consumed. So the sampler applies the rule every stage applies,
:func:`streamrl.schemas.verify_checkpoint_dir` (the directory exists here and its digest matches),
before it adopts an event. The trainer digests what it wrote before it publishes; the inference
server verifies before it loads.

Hashing a large checkpoint takes seconds, so live events are verified on one background thread, in
arrival order, while the sampler keeps polling; during recovery they are verified in place. A
checkpoint already verified (same uri and digest: a trainer re-publishing after a restart) is not
hashed again. With ``sampler.verify_checkpoints: false`` (the sampler cannot see the checkpoint
directory) events are adopted as they come: the trainer's own check is then the only one.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from streamrl.schemas import CheckpointError, CheckpointEvent, verify_checkpoint_dir

__all__ = ["CheckpointGate", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """One event and whether it may be adopted.

    Attributes:
        event: the decoded ``CheckpointEvent``.
        msg: the Kafka message it came in (for the dead letter of a refused one).
        error: why it may not be adopted (its ``reason`` labels the metric), or None.
    """

    event: CheckpointEvent
    msg: Any
    error: CheckpointError | None


class CheckpointGate:
    """Verifies checkpoints before the sampler adopts their version.

    Args:
        verify: apply :func:`~streamrl.schemas.verify_checkpoint_dir` (else every event passes).
    """

    def __init__(self, verify: bool) -> None:
        self.verify = verify
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[CheckpointEvent, Any, Future[CheckpointError | None]]] = deque()
        self._verified: set[tuple[str, str]] = set()

    def check(self, event: CheckpointEvent) -> CheckpointError | None:
        """Verify now (on this thread); returns why the event may not be adopted, or None."""
        if not self.verify or (event.uri, event.digest) in self._verified:
            return None
        try:
            verify_checkpoint_dir(event.uri, event.digest, f"checkpoint v{event.version}")
        except CheckpointError as exc:
            return exc
        except OSError as exc:  # unreadable file inside the directory
            return CheckpointError(f"checkpoint v{event.version}: cannot read {event.uri}: {exc}", "missing")
        self._verified.add((event.uri, event.digest))
        return None

    def submit(self, event: CheckpointEvent, msg: Any) -> None:
        """Queue a live event for verification; :meth:`ready` hands it back in arrival order."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamrl-checkpoint-verify")
        self._pending.append((event, msg, self._pool.submit(self.check, event)))

    def ready(self) -> list[Verdict]:
        """Events verified so far, in arrival order (stops at the first still being hashed)."""
        out = []
        while self._pending and self._pending[0][2].done():
            event, msg, fut = self._pending.popleft()
            out.append(Verdict(event, msg, fut.result()))
        return out

    @property
    def busy(self) -> bool:
        """Whether events are still being verified."""
        return bool(self._pending)

    def close(self) -> None:
        """Stop the verification thread (events still queued are dropped: replayed on restart)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
