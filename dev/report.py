"""End-of-run outputs: ``summary.json``, ``reward.png`` (reward mean per policy version) and a text summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as indented JSON (atomically: temp file, then rename); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def plot_rewards(path: Path, train: dict[int, float], val: dict[int, float], *, title: str = "") -> Path:
    """Plot the mean reward per policy version (train: rollouts sampled at that version; val: greedy
    validation of that version) to a PNG with matplotlib's Agg backend.

    Args:
        path: output ``.png`` file.
        train, val: policy version → mean reward (either may be empty; an empty plot says so).
        title: figure title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        if train:
            xs = sorted(train)
            ax.plot(xs, [train[x] for x in xs], "-", color="tab:blue", alpha=0.8, label="train (sampled)")
        if val:
            xs = sorted(val)
            ax.plot(xs, [val[x] for x in xs], "o-", color="tab:orange", label="val (greedy, held out)")
        if not train and not val:
            ax.text(0.5, 0.5, "no rewards recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("policy version (trainer step)")
        ax.set_ylabel("mean reward")
        ax.set_title(title or "reward per policy version")
        ax.grid(True, alpha=0.3)
        if train or val:
            ax.legend(loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _clip(answer: str, chars: int = 40) -> str:
    """An answer cut to ``chars`` characters (``…`` marks the cut): the summary line stays readable
    for long free-text answers (summary.json keeps them whole)."""
    return answer if len(answer) <= chars else answer[: chars - 1] + "…"


def _top(summary: dict[str, Any], distinct: int | None, shown: int = 5) -> str:
    """The ``shown`` most common answers (``'7'×40, '9'×12``), then ``+N more`` for the others."""
    answers = summary.get("top_answers_last", [])
    text = ", ".join(f"{_clip(a)!r}×{n}" for a, n in answers[:shown])
    more = (distinct if distinct is not None else len(answers)) - min(shown, len(answers))
    return f"{text}, +{more} more" if more > 0 else text


def format_summary(summary: dict[str, Any], run_dir: Path | None = None, outcome: str = "") -> str:
    """A few human lines about the run (printed at the end of ``streamrl dev``)."""

    def f(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = []
    if outcome:
        lines.append(f"run {outcome}")
    status = summary.get("status") or {}
    ended = ", ".join(
        f"{n} {'interrupted by the stop' if k == 'interrupted' else k}" for k, n in sorted(status.items())
    )
    lines.append(
        f"policy versions: {summary.get('versions')}   rollouts: {summary.get('rollouts')}"
        f"{f' ({ended})' if ended else ''}   wall: {summary.get('wall_s')} s   dlq: {summary.get('dlq')}"
    )
    if summary.get("reward_first") is not None:
        lines.append(
            f"val reward: {f(summary['reward_first'])} at version {summary.get('version_first')} → "
            f"{f(summary['reward_last'])} at version {summary.get('version_last')} "
            f"({summary.get('val_tasks')} held-out tasks)"
        )
        distinct = summary.get("distinct_answers_last")
        lines.append(
            f"distinct greedy val answers at the last version: {distinct}  [{_top(summary, distinct)}]"
        )
    else:
        lines.append("val reward: no complete validation")
    reached = summary.get("val_target_reached")
    if reached:
        lines.append(
            f"val reward reached {reached['target']} at version {reached['version']} "
            f"({f(reached['val'])}), {reached['wall_s']} s after the start"
        )
    training = (summary.get("cpu") or {}).get("training")
    if training and training.get("cpu_ms_per_rollout"):
        per = training["cpu_ms_per_rollout"]
        parts = ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if k != "total"
        )
        spv = training.get("s_per_version")
        lines.append(f"training: {spv} s per policy version; CPU per rollout {per['total']:.1f} ms ({parts})")
    groups = summary.get("group_outcomes") or {}
    if groups:
        dropped = {k.removeprefix("dropped:"): n for k, n in groups.items() if k != "batched"}
        lines.append(
            f"groups: {groups.get('batched', 0)} batched, {sum(dropped.values())} dropped"
            + (f" ({', '.join(f'{k} {n}' for k, n in sorted(dropped.items()))})" if dropped else "")
        )
        if not groups.get("batched") and dropped.get("zero_variance"):
            lines.append(
                "nothing was trained: every rollout of each group got the same reward, so no group "
                "had an advantage to learn from (streams.filter_zero_variance drops them); a task "
                "the policy sometimes solves, or a reward with partial credit, gives it a signal"
            )
    dead = summary.get("dead_letters") or {}
    if dead:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(dead.items(), key=lambda kv: -kv[1]))
        lines.append(f"dead letters: {kinds}; the last: {(summary.get('dead_letter_reasons') or ['?'])[-1]}")
    missing = summary.get("missing_trajectories")
    if missing:
        lines.append(
            f"samples without a trajectory: {missing} (emitted but not finished when the run stopped: "
            "queued for a worker, or cut short)"
        )
    if run_dir is not None:
        lines.append(f"run directory: {run_dir}  (summary.json, reward.png, logs/)")
    return "\n".join(lines)
