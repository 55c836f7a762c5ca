"""Guards a candidate prompt passes before any rollout is spent on it.

A candidate is rejected, with the reason, when it is empty, longer than the limit, not a valid
``str.format`` template, has a different placeholder set than the seed (a lost ``{question}`` would
make every rollout fail or answer blind; an added one would raise in the agent), or is a duplicate
of a prompt the run has already seen (whitespace-insensitive; evaluating it again would only repeat
a score).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamrl.resources import ResourceError, placeholders

__all__ = ["Verdict", "check_candidate", "normalize"]

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The text with runs of whitespace collapsed and the ends stripped (duplicate detection)."""
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class Verdict:
    """``ok`` or the reason of a rejection."""

    ok: bool
    reason: str | None = None


def check_candidate(
    text: str, seed_placeholders: frozenset[str], seen: dict[str, str], *, max_chars: int
) -> Verdict:
    """Whether ``text`` may be evaluated.

    Args:
        text: the candidate template.
        seed_placeholders: the seed template's placeholder names (the set every candidate keeps).
        seen: normalized text -> version of every prompt the run has seen (seed, parents, candidates).
        max_chars: longest accepted template, in characters.
    """
    if not text.strip():
        return Verdict(False, "empty prompt")
    if len(text) > max_chars:
        return Verdict(False, f"{len(text)} characters, over the limit of {max_chars}")
    try:
        names = placeholders(text)
    except ResourceError as exc:
        return Verdict(False, str(exc))
    if names != seed_placeholders:
        lost = sorted(seed_placeholders - names)
        added = sorted(names - seed_placeholders)
        parts = []
        if lost:
            parts.append("lost " + ", ".join("{" + n + "}" for n in lost))
        if added:
            parts.append("added " + ", ".join("{" + n + "}" for n in added))
        return Verdict(False, "placeholders changed: " + "; ".join(parts))
    dup = seen.get(normalize(text))
    if dup is not None:
        return Verdict(False, f"duplicate of version {dup}")
    return Verdict(True)
