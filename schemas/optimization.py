"""Records of prompt optimization: versioned resources, and the optimizer's events and state.

Each mirrors ``schemas/avsc/<Name>/v<latest>.avsc`` under the conventions of
:mod:`streamrl.schemas.records` (same base classes, same checks, same drift test).

- :class:`Resource` (topic ``resources``, compacted, key ``name/version``): an immutable, versioned,
  named resource, a prompt template first. The version is derived from the content
  (:func:`~streamrl.schemas.records.resource_version`), so a version can never change meaning and a
  re-published record is the same record. Samples pin versions (``Sample.resources``).
- :class:`OptimizerEvent` (topic ``optimizer_events``, key ``run_id``): candidates, evaluations,
  scores, new bests, rounds.
- :class:`OptimizerState` (topic ``optimizer_state``, compacted, key ``run_id``): the run's state,
  for resuming it.
"""

from __future__ import annotations

import math
from enum import Enum

from pydantic import Field

from streamrl.schemas.records import (
    RESOURCE_VERSION_RE,
    Int32,
    Int64,
    TopRecord,
    UtcDatetime,
    _digest,
    _finite,
    _json_object,
    _non_negative,
    check_resource_ref,
    resource_digest,
    utc_now,
)


class ResourceKind(str, Enum):
    """What a Resource's content is (``Resource.kind``; a string on the wire, so a newer writer may
    add kinds, e.g. a tool description or a model config).

    - ``prompt_template``: a Python ``str.format`` template: ``{name}`` placeholders the agent fills
      with ``.format(...)``, ``{{`` and ``}}`` for literal braces.
    - ``text``: used as it is.
    """

    prompt_template = "prompt_template"
    text = "text"


class OptimizerEventKind(str, Enum):
    """What an OptimizerEvent reports (a string on the wire)."""

    started = "started"
    candidate = "candidate"
    evaluation = "evaluation"
    score = "score"
    best = "best"
    round = "round"
    finished = "finished"


class Resource(TopRecord):
    """One immutable version of a named resource (topic ``resources``, compacted, key
    ``<name>/<version>`` = :meth:`key`).

    The version is the content's: ``version == resource_version(kind, content)``, so a version never
    changes and publishing it again rewrites the same record. Invariants: a well-formed name and
    version; ``digest`` = :func:`resource_digest` of kind and content, ``version`` its head.
    """

    schema_version: Int32 = 1
    name: str
    version: str
    kind: str
    content: str
    digest: str
    parents: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    created_by: str | None = None
    created_at: UtcDatetime = Field(default_factory=utc_now)

    @classmethod
    def create(
        cls,
        name: str,
        content: str,
        kind: str = ResourceKind.prompt_template.value,
        *,
        parents: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        created_by: str | None = None,
    ) -> Resource:
        """The record of ``content`` under ``name``, with its digest and version computed.

        Raises:
            pydantic.ValidationError: a bad name, or a parent that is not a version.
        """
        digest = resource_digest(kind, content)
        return cls(
            name=name,
            version=digest[7:23],
            kind=kind,
            content=content,
            digest=digest,
            parents=list(parents or []),
            metadata=dict(metadata or {}),
            created_by=created_by,
        )

    def key(self) -> str:
        """The Kafka key: ``<name>/<version>``."""
        return f"{self.name}/{self.version}"

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        check_resource_ref(self.name, self.version, "Resource")
        _digest(self, "digest")
        if self.digest[7:23] != self.version:
            raise ValueError(
                f"Resource {self.name!r}: version {self.version!r} is not the head of its digest {self.digest!r}"
            )
        if scan and resource_digest(self.kind, self.content) != self.digest:
            raise ValueError(
                f"Resource {self.key()!r}: digest does not match kind and content (altered or truncated)"
            )
        for parent in self.parents:
            if not RESOURCE_VERSION_RE.match(parent):
                raise ValueError(f"Resource {self.key()!r}: parent {parent!r} is not a version")


class OptimizerEvent(TopRecord):
    """One step of a prompt-optimization run (topic ``optimizer_events``, key ``run_id``).

    Which optional fields are set depends on ``kind`` (an :class:`OptimizerEventKind` value; the
    ``.avsc`` documents each). Invariants: ``seq`` and ``round`` >= 0; a ``score`` event has a
    finite score in the counts it reports (``count = succeeded + failed + timed_out``) and one task
    reward per counted rollout.
    """

    schema_version: Int32 = 1
    run_id: str
    seq: Int64
    kind: str
    algorithm: str
    round: Int32
    resource_name: str | None = None
    resource_version: str | None = None
    parent_versions: list[str] = Field(default_factory=list)
    eval_id: str | None = None
    split: str | None = None
    task_ids: list[str] = Field(default_factory=list)
    status: str | None = None
    reason: str | None = None
    score: float | None = None
    count: Int32 | None = None
    succeeded: Int32 | None = None
    failed: Int32 | None = None
    timed_out: Int32 | None = None
    task_rewards: dict[str, float] = Field(default_factory=dict)
    deadline: UtcDatetime | None = None
    text: str | None = None
    created_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "seq", "round", "count", "succeeded", "failed", "timed_out")
        _finite(self, "score")
        if self.kind == OptimizerEventKind.score.value:
            where = f"OptimizerEvent {self.run_id!r}#{self.seq} (score of {self.eval_id!r})"
            if self.score is None or self.count is None:
                raise ValueError(f"{where}: a score event needs score and count")
            parts = (self.succeeded or 0) + (self.failed or 0) + (self.timed_out or 0)
            if self.count != parts:
                raise ValueError(f"{where}: count={self.count} != succeeded + failed + timed_out = {parts}")
            if len(self.task_rewards) != self.count:
                raise ValueError(
                    f"{where}: {len(self.task_rewards)} task rewards for count={self.count} rollouts"
                )
            if scan:
                for task_id, value in self.task_rewards.items():
                    if not math.isfinite(value):
                        raise ValueError(f"{where}: task_rewards[{task_id!r}] must be finite, got {value}")


class OptimizerState(TopRecord):
    """Where a prompt-optimization run stands (topic ``optimizer_state``, compacted, key ``run_id``).

    ``state`` is a JSON object whose layout the optimizer stage owns (``streamrl.optimizer.state``).
    Invariants: ``seq`` >= 0, ``state`` a JSON object.
    """

    schema_version: Int32 = 1
    run_id: str
    algorithm: str
    seq: Int64
    finished: bool = False
    state: str
    updated_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "seq")
        if scan:
            _json_object(self, "state")
