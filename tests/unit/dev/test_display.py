"""The progress display renders every figure it promises (policy version, rollouts/s, rewards, lag)."""

from __future__ import annotations

from rich.console import Console

from streamrl.dev.display import render, status_line
from streamrl.dev.stats import RunStats
from streamrl.schemas import Split
from tests.support import records as ex


def _stats() -> RunStats:
    s = RunStats(clock=lambda: 50.0)
    s.on_task(ex.task(1).model_copy(update={"task_id": "v0", "split": Split.val}))
    s.on_trajectory(ex.trajectory(0).model_copy(update={"policy_version": 3, "reward": 0.25}))
    s.lag = {("workers", "samples"): 7, ("streams", "trajectories"): 2}
    return s


def test_live_panel_shows_the_figures() -> None:
    console = Console(record=True, width=160)
    console.print(
        render(
            _stats(),
            run_id="r1",
            elapsed_s=12.0,
            children={"trainer": "running", "worker-0": "exit 1"},
            max_steps=9,
        )
    )
    text = console.export_text()
    for needle in ("policy version", "0/9", "rollouts", "0.250", "workers", "samples", "7", "exit 1", "r1"):
        assert needle in text, needle


def test_live_panel_fits_80_columns() -> None:
    """No name cut to "…" in an 80-column terminal; the run's prefix is said once, in the lag title."""
    stats = _stats()
    run = "streamrl.20261203-222155-ab12"
    stats.lag = {(f"{run}-workers", f"{run}.samples"): 7, (f"{run}.streams", f"{run}.trajectories"): 2}
    children = {n: "running" for n in ("inference", "trainer", "streams", "worker-0", "sampler")}
    console = Console(record=True, width=80)
    console.print(render(stats, run_id="r1", elapsed_s=12.0, children=children, max_steps=100, width=80))
    text = console.export_text()
    assert "…" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80
    for needle in ("policy version 0/100", "answers", "workers", "samples", "trajectories", run, "sampler"):
        assert needle in text, (needle, text)


def test_status_line() -> None:
    line = status_line(_stats(), 12.0)
    assert (
        "version 0" in line and "train reward 0.250@v3" in line and "lag 9" in line and "val reward -" in line
    )
