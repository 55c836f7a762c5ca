"""Compact memory of decided rollouts: one marker per (partition, group), not one state per rollout.

The join keeps a full state per ``rollout_id`` only while the rollout is open, or finished but with
work left (a forward or an input offset not yet committed: a replay must be recognised and its
forward re-sent). After that, all it must remember is *that* the rollout finished, so a late
duplicate (a re-issued or redelivered attempt that completes after the first one, a trajectory
re-sent after a worker restart) is dropped and counted instead of joined again. That fact is one
short member id in the marker of the rollout's group::

    key   "__streamrl_done__/<partition>/<group_id>"
    value {"p": partition, "ts": latest decision, seconds, "r": "member ids, sorted, newline-separated"}

A member id is :func:`member_id`: ``"/<k>"`` for the sampler's ``<group_id>/<k>`` rollout ids (a
few bytes), the whole rollout id otherwise. A marker is forgotten when no member of its group was
decided for ``streams.dedup_retention_s`` (event time). The group stage stores its members the same
way (:mod:`streamrl.streams.groups`), packed into one string (:func:`pack_members`: one object, not
one per member). Measured with ``tracemalloc`` (8-rollout groups, uuid task ids, values as the JSON
changelog decodes them): a finished rollout's full join state held ~1.9 KB; its share of a marker
is ~50 B.
"""

from __future__ import annotations

from typing import Any

DONE_KEY_PREFIX = "__streamrl_done__/"


def member_id(group_id: str, rollout_id: str) -> str:
    """Short form of ``rollout_id`` within its group: ``"/<k>"`` for ``"<group_id>/<k>"``, else the id.

    (A rollout id that itself starts with ``/`` and equals another member's short form would collide;
    the sampler writes ``<group_id>/<k>``, which cannot.)
    """
    if rollout_id.startswith(group_id) and rollout_id[len(group_id) : len(group_id) + 1] == "/":
        return rollout_id[len(group_id) :]
    return rollout_id


def pack_members(members: list[str] | set[str]) -> str:
    """Member ids as one string: sorted, newline-separated (a rollout id holds no newline)."""
    return "\n".join(sorted(members))


def unpack_members(packed: str | list[str]) -> list[str]:
    """The member ids of :func:`pack_members` (a list, as earlier releases stored it, is returned as is)."""
    if isinstance(packed, list):
        return packed
    return packed.split("\n") if packed else []


def done_key(partition: int, group_id: str) -> str:
    """Join-table key of the decided marker of ``group_id`` on join partition ``partition``."""
    return f"{DONE_KEY_PREFIX}{partition}/{group_id}"


def is_done_key(key: str) -> bool:
    """True for a decided marker's key (the join table's other keys are rollout ids)."""
    return key.startswith(DONE_KEY_PREFIX)


def is_decided(marker: dict[str, Any] | None, group_id: str, rollout_id: str) -> bool:
    """True if ``marker`` (the value at :func:`done_key`, or None) records ``rollout_id`` as decided."""
    return marker is not None and member_id(group_id, rollout_id) in unpack_members(marker["r"])


def add_decided(
    marker: dict[str, Any] | None, partition: int, group_id: str, rollout_id: str, ts: float
) -> dict[str, Any]:
    """A new marker with ``rollout_id`` recorded as decided at ``ts`` (seconds); idempotent."""
    members = set(unpack_members(marker["r"])) if marker is not None else set()
    members.add(member_id(group_id, rollout_id))
    latest = max(ts, marker["ts"]) if marker is not None else ts
    return {"p": partition, "ts": latest, "r": pack_members(members)}


def marker_expired(marker: dict[str, Any], tick_ts: float, retention_s: float) -> bool:
    """True when the group's latest decision is more than ``retention_s`` before ``tick_ts`` (seconds)."""
    return tick_ts - float(marker["ts"]) > retention_s
