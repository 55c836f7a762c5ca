"""The results of a run: ``best_prompt.txt``, ``history.json``, ``summary.json`` and ``val_score.png``.

- ``best_prompt.txt``: the best template (on the whole val set), exactly as published.
- ``history.json``: per round, the leader and its whole-val score, the best so far, every prompt
  evaluated that round with its score, accepted/rejected counts and rollouts published so far;
  plus every candidate (version, round, parents, source) and every rejection with its reason.
- ``summary.json``: ``score_first`` (the seed on the whole val set), ``score_best``, ``best_version``,
  ``rounds``, ``rollouts`` (samples published, re-issues included), ``wall_s`` (first start to end),
  ``candidates``, ``rejected``, ``val_tasks``, the outcome.
- ``val_score.png``: the leader's and the best whole-val score per round.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from streamrl.optimizer.state import RunState


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are for everyone who can read the run
    os.replace(tmp, path)
    return path


def summary(st: RunState, val_tasks: int, bad_records: int) -> dict[str, Any]:
    """The figures of ``summary.json``."""
    first = st.history[0]["leader_score"] if st.history else None
    end = st.finished_at if st.finished_at is not None else None
    return {
        "run_id": st.run_id,
        "algorithm": st.algorithm,
        "resource_name": st.resource_name,
        "outcome": st.outcome,
        "score_first": first,
        "score_best": st.best["score"] if st.best else None,
        "best_version": st.best["version"] if st.best else None,
        "best_round": st.best["round"] if st.best else None,
        "seed_version": st.seed_version,
        "rounds": max((h["round"] for h in st.history), default=0),
        "rollouts": st.rollouts,
        "wall_s": round(end - st.started_at, 1) if end is not None else None,
        "candidates": len(st.candidates) - 1,  # the seed is not a candidate
        "rejected": len(st.rejected),
        "val_tasks": val_tasks,
        "bad_records": bad_records,
    }


def history(st: RunState) -> dict[str, Any]:
    """The content of ``history.json``."""
    return {
        "rounds": st.history,
        "candidates": st.candidates,
        "rejected": st.rejected,
        "best": st.best,
    }


def plot(path: Path, st: RunState, title: str) -> Path:
    """The leader's and the best whole-val score per round (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        rounds = [h["round"] for h in st.history]
        if rounds:
            ax.plot(rounds, [h["leader_score"] for h in st.history], "o-", label="round's leader (val)")
            ax.plot(rounds, [h["best_score"] for h in st.history], "s--", label="best so far (val)")
            ax.set_xticks(rounds)
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "no round finished", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("round (0 = the seed prompt)")
        ax.set_ylabel("val score (mean reward, failures 0)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def write_results(
    out_dir: Path, st: RunState, best_text: str | None, val_tasks: int, bad_records: int
) -> dict[str, Any]:
    """Write the four files into ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if best_text is not None:
        _write(out_dir / "best_prompt.txt", best_text)
    _write(out_dir / "history.json", json.dumps(history(st), indent=1, sort_keys=False) + "\n")
    data = summary(st, val_tasks, bad_records)
    _write(out_dir / "summary.json", json.dumps(data, indent=2) + "\n")
    plot(out_dir / "val_score.png", st, f"streamrl optimize {st.run_id} ({st.algorithm})")
    return data
