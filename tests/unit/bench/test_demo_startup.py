"""bench.demo's start-up breakdown from a run's summary, dev's output and the stages' logs (no run)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from bench.demo import startup_breakdown


def test_milestones_dev_starts_and_stage_ready_lines_in_time_order(tmp_path: Path) -> None:
    t0 = datetime(2026, 12, 3, 22, 0, 0).timestamp()  # local time, as the log lines are written
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "inference.log").write_text(
        "# 2026-12-03 22:00:09 $ python -m streamrl.cli inference\n"
        "2026-12-03 22:00:20,000 INFO streamrl.inference.reload: x read to its end: serving policy version 0\n"
        "2026-12-03 22:00:20,500 INFO streamrl.inference.run: inference (cpu) serving m at policy version 0 on http://h\n"
    )
    (logs / "streams.log").write_text("[2026-12-03 22:00:14,250] [1] [INFO] [^Worker]: Ready \n")
    (logs / "trainer.log").write_text(
        "2026-12-03 22:00:25,000 INFO trainer: consuming p.batches partitions [0]\n"
    )
    dev_log = tmp_path / "dev-output.log"
    dev_log.write_text(
        "2026-12-03 22:00:09,000 INFO streamrl.dev.supervisor: started inference (pid 7): python ...\n"
        "2026-12-03 22:00:09,100 INFO streamrl.dev.supervisor: started trainer (pid 8): python ...\n"
    )
    summary = {
        "started_unix": t0,
        "startup_s": {"broker_ready": 8.0, "sampler_started": 21.0},
        "val_wall_s": {"0": 30.5},
    }
    assert list(startup_breakdown(summary, tmp_path, dev_log).items()) == [
        ("broker_ready", 8.0),
        ("inference started", 9.0),
        ("trainer started", 9.1),
        ("streams ready", 14.2),
        ("inference ready", 20.5),
        ("sampler_started", 21.0),
        ("trainer ready", 25.0),
        ("v0 val complete", 30.5),
    ]


def test_a_run_without_started_unix_keeps_its_milestones_only(tmp_path: Path) -> None:
    summary = {"startup_s": {"broker_ready": 8.0}, "val_wall_s": {}}
    assert startup_breakdown(summary, tmp_path, tmp_path / "none.log") == {"broker_ready": 8.0}
