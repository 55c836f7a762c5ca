"""Validation results: per policy version reward statistics of val-mode rollouts.

The table value per version is ``{"count", "sum", "sumsq", "min", "max", "rollouts": [ids]}``;
adding a rollout id twice changes nothing, so at-least-once input cannot double count. The view
(:func:`summary`) is what ``validation.json`` and the web endpoint show::

    {"<version>": {"count": n, "mean": m, "std": s, "min": a, "max": b}}
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def add_result(entry: dict[str, Any] | None, rollout_id: str, reward: float) -> dict[str, Any] | None:
    """The entry with one more val rollout, or None if ``rollout_id`` was already counted."""
    entry = entry or {"count": 0, "sum": 0.0, "sumsq": 0.0, "min": None, "max": None, "rollouts": []}
    if rollout_id in entry["rollouts"]:
        return None
    return {
        "count": entry["count"] + 1,
        "sum": entry["sum"] + reward,
        "sumsq": entry["sumsq"] + reward * reward,
        "min": reward if entry["min"] is None else min(entry["min"], reward),
        "max": reward if entry["max"] is None else max(entry["max"], reward),
        "rollouts": [*entry["rollouts"], rollout_id],
    }


def summary(items: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """``{version: {count, mean, std, min, max}}`` sorted by version (population std)."""
    out: dict[str, dict[str, float]] = {}
    for version, e in sorted(items, key=lambda kv: int(kv[0])):
        n = e["count"]
        if not n:
            continue
        mean = e["sum"] / n
        var = max(0.0, e["sumsq"] / n - mean * mean)
        out[str(version)] = {
            "count": n,
            "mean": mean,
            "std": math.sqrt(var),
            "min": e["min"],
            "max": e["max"],
        }
    return out


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
