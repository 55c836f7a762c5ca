"""The progress display of ``streamrl dev``: one rich panel (live) or one status line (plain)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from streamrl.dev.stats import RunStats

#: Terminal columns from which the live panel puts its three tables side by side.
WIDE_COLUMNS = 120


def _common_prefix(names: Sequence[str]) -> str:
    """The longest string every name starts with (character by character)."""
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i]


def status_line(stats: RunStats, elapsed_s: float) -> str:
    """One line: elapsed time, policy version, rollouts, rollouts/s, last rewards, total lag."""
    train = stats.train_means()
    val = stats.val_means()
    tr = f"{train[max(train)]:.3f}@v{max(train)}" if train else "-"
    va = f"{val[max(val)]:.3f}@v{max(val)}" if val else "-"
    lag = sum(stats.lag.values())
    return (
        f"[{elapsed_s:6.0f} s] version {stats.version}  rollouts {stats.trajectories} "
        f"({stats.rollouts_per_s():.1f}/s)  train reward {tr}  val reward {va}  "
        f"served v{max(stats.served_versions, default=0)}  lag {lag}  dlq {stats.dlq}"
    )


def render(
    stats: RunStats,
    *,
    run_id: str,
    elapsed_s: float,
    children: Mapping[str, str],
    max_steps: int | None,
    rows: int = 8,
    width: int | None = None,
) -> RenderableType:
    """The live panel: headline figures, reward per version (train/val, distinct val answers),
    lag per (consumer group, topic), and the state of every child process.

    Args:
        stats: the run's aggregates (read under the monitor's lock).
        run_id: shown in the title.
        elapsed_s: seconds since the run started.
        children: child name → state text (``running``, ``finished``, ``exit 1``).
        max_steps: the stop version, shown as ``version / max_steps``.
        rows: most recent versions shown in the reward table.
        width: the terminal's columns; under ``WIDE_COLUMNS`` (an 80-column terminal) the headline
            figures take two rows and the lag table goes under the others, so every column fits.
    """
    narrow = width is not None and width < WIDE_COLUMNS
    target = f"/{max_steps}" if max_steps else ""
    figures = [
        f"[bold]policy version[/] {stats.version}{target}",
        f"[bold]rollouts[/] {stats.trajectories} ({stats.rollouts_per_s():.1f}/s)",
        f"[bold]samples[/] {stats.samples}",
        f"[bold]served by[/] v{max(stats.served_versions, default=0)}",
        f"[bold]batches[/] {stats.batches}",
        f"[bold]dlq[/] {stats.dlq}",
    ]
    head = Table.grid(padding=(0, 3))
    for i in range(0, len(figures), 3 if narrow else len(figures)):
        head.add_row(*figures[i : i + (3 if narrow else len(figures))])

    rewards = Table(
        "version", "train reward", "val reward", "val answers", title="reward mean per policy version"
    )
    train = stats.train_means()
    versions = sorted(set(train) | set(stats.val))[-rows:]
    for v in versions:
        val = stats.val.get(v)
        if val is None:
            vtxt, atxt = "", ""
        else:
            mark = "" if stats.val_complete(v) else f" ({val.count}/{stats.val_expected})"
            vtxt = f"{val.mean:.3f}{mark}"
            atxt = str(len(stats.answers(v)))
        rewards.add_row(str(v), f"{train[v]:.3f}" if v in train else "", vtxt, atxt)

    # the run's prefix (``streamrl.<run_id>``) is on every name: said once in the title
    names = [name for key in stats.lag for name in key]
    common = _common_prefix(names) if len(names) > 1 else ""
    while common and not all(n[len(common) : len(common) + 1] in (".", "-") for n in names):
        common = common[:-1]  # back to where every name goes on with a separator
    short = (lambda name: name[len(common) + 1 :]) if common else (lambda name: name)
    title = "lag (records behind end offsets)" + (f" of {common}" if common else "")
    lag = Table("consumer group", "topic", "lag", title=title)
    for (group, topic), n in sorted(stats.lag.items()):
        lag.add_row(short(group), short(topic), str(n))

    procs = Table("process", "state", title="processes")
    for name, state in children.items():
        clean = state in ("finished", "exited 0", "stopped")  # dev's own stop (SIGTERM) is clean
        color = "green" if state.startswith("running") else ("cyan" if clean else "red")
        procs.add_row(name, f"[{color}]{state}[/]")

    body = Table.grid(padding=(0, 2))
    if narrow:
        body.add_row(rewards, procs)
        body = Group(body, lag)
    else:
        body.add_row(rewards, lag, procs)
    return Panel(Group(head, body), title=f"streamrl dev — {run_id} — {elapsed_s:.0f} s", expand=False)
