"""The sampler's snapshot record (topic ``sampler_state``, compacted, key ``sampler_id``).

Only the envelope is a contract: which sampler, which settings, which offsets the state covers.
``state`` is zlib-compressed JSON whose layout the sampler owns (``streamrl.producers.snapshot``),
as ``OptimizerState.state`` is the optimizer's.
"""

from __future__ import annotations

import re

from pydantic import Field

from streamrl.schemas.records import Int32, Int64, TopRecord, UtcDatetime, _digest, _non_negative, utc_now

_OFFSET_KEY = re.compile(r"^.+\[(0|[1-9][0-9]*)\]$")


def offset_key(topic: str, partition: int) -> str:
    """``topic[partition]``: the key of one partition in a snapshot's offset maps."""
    return f"{topic}[{partition}]"


def parse_offset_key(key: str) -> tuple[str, int]:
    """``topic[partition]`` -> ``(topic, partition)``.

    Raises:
        ValueError: ``key`` is not ``<topic>[<partition>]``.
    """
    if not _OFFSET_KEY.match(key):
        raise ValueError(f"offset key {key!r} is not <topic>[<partition>]")
    topic, _, rest = key.rpartition("[")
    return topic, int(rest[:-1])


class SamplerSnapshot(TopRecord):
    """The sampler's state at one moment and the offsets it covers (``schemas/avsc/SamplerSnapshot``).

    Invariants: ``seq`` >= 1, ``groups`` >= 0, ``settings_digest`` is ``sha256:<64 hex>``, every
    offset key is ``<topic>[<partition>]`` and every offset >= 0.
    """

    schema_version: Int32 = 1
    sampler_id: str
    seq: Int64
    settings_digest: str
    emitted_offsets: dict[str, Int64]
    input_offsets: dict[str, Int64]
    groups: Int32
    state: bytes
    created_at: UtcDatetime = Field(default_factory=utc_now)

    def check_invariants(self, scan: bool = True) -> None:
        super().check_invariants(scan)
        _non_negative(self, "groups")
        if self.seq < 1:
            raise ValueError(f"SamplerSnapshot.seq must be >= 1, got {self.seq}")
        _digest(self, "settings_digest")
        for field, offsets in (
            ("emitted_offsets", self.emitted_offsets),
            ("input_offsets", self.input_offsets),
        ):
            for key, offset in offsets.items():
                try:
                    parse_offset_key(key)
                except ValueError as exc:
                    raise ValueError(f"SamplerSnapshot.{field}: {exc}") from None
                if offset < 0:
                    raise ValueError(f"SamplerSnapshot.{field}[{key!r}] must be >= 0, got {offset}")
