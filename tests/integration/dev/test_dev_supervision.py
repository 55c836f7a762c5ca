"""``streamrl dev`` as a process: a dying child ends the run with its log tail; SIGTERM stops everything.

Both leave no process behind (checked by scanning /proc for the run's config path).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _dev(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "dev", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout_s: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"streamrl dev still running after {timeout_s} s:\n{out[-5000:]}")
    return out


@pytest.mark.timeout(300)
def test_a_dying_child_stops_the_run_with_its_log_tail(
    dev_config, processes_mentioning, tmp_path: Path
) -> None:
    config, env = dev_config(worker={"agent": "no_such_package.agent:solve"})
    out = _finish(_dev(config, env), 240)
    run_dir = tmp_path / "runs" / "r"
    assert "worker-0 exited with code" in out, out[-5000:]
    assert "no_such_package" in out  # the tail of the worker's log is shown
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"].startswith("failed: worker-0 exited")
    assert processes_mentioning(str(run_dir / "config.yaml")) == []


@pytest.mark.timeout(300)
def test_sigterm_stops_every_child_and_writes_the_summary(
    dev_config, processes_mentioning, tmp_path: Path
) -> None:
    config, env = dev_config()
    proc = _dev(config, env)
    run_dir = tmp_path / "runs" / "r"
    deadline = time.monotonic() + 200
    # every child started: the sampler (started last) has a log and 5+ processes run the run's config
    while (
        not (run_dir / "logs" / "sampler.log").exists()
        or len(processes_mentioning(str(run_dir / "config.yaml"))) < 5
    ):
        assert proc.poll() is None, proc.communicate()[0][-5000:]
        assert time.monotonic() < deadline, f"children did not start: {processes_mentioning(str(run_dir))}"
        time.sleep(0.5)  # polling the process table
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, 120)
    assert proc.returncode == 130, out[-5000:]
    assert "interrupted (SIGTERM)" in out
    assert json.loads((run_dir / "summary.json").read_text())["outcome"] == "interrupted (SIGTERM)"
    assert processes_mentioning(str(run_dir / "config.yaml")) == []
