"""``streamrl dev`` as a process: a killed child is restarted and the run completes; a child that
keeps dying ends the run with its log tail; Ctrl-C (SIGINT) or SIGTERM at any moment, the broker's
start included, stops everything; a SIGKILL of dev itself (no stop of its own) still takes its
children and the broker it started with it.

None leaves a process behind (checked by scanning /proc for the run's config path and the broker's
data directory).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from streamrl.dev.supervisor import group_alive
from tests.support.chaos import dev_children, finish_dev, start_dev

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_a_child_that_keeps_dying_stops_the_run_with_its_log_tail(
    dev_config, processes_mentioning, tmp_path: Path
) -> None:
    config, env = dev_config(
        # imports (dev's preflight passes: an unimportable agent stops dev before anything starts)
        # but raises when the worker instantiates it
        worker={"agent": "tests.support.dying_agent:Dies"},
        dev={"restart": {"max_restarts": 2, "backoff_s": 0.2}},
    )
    out = finish_dev(start_dev(config, env), 480)  # start-up alone took ~4 min at load ~13
    run_dir = tmp_path / "runs" / "r"
    assert out.count("worker-0 exited with code 1; restarting it") == 2, out[-5000:]
    assert "worker-0 exited with code 1, after 2 restart(s)" in out
    assert "dying_agent: this agent cannot start" in out  # the tail of the worker's log is shown
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"] == "failed: worker-0 exited with code 1 (restarted 2 time(s), it kept dying)"
    assert summary["restarts"] == {"worker-0": 2}
    assert processes_mentioning(str(run_dir / "config.yaml")) == []


@pytest.mark.timeout(800)
def test_a_killed_worker_is_restarted_and_the_run_completes(
    dev_config, processes_mentioning, tmp_path: Path
) -> None:
    config, env = dev_config(dev={"max_steps": 4, "restart": {"backoff_s": 0.5}})
    proc = start_dev(config, env)
    run_dir = tmp_path / "runs" / "r"
    deadline = time.monotonic() + 420
    # mid-run: a checkpoint is written (old ones are pruned, so any step), so samples flow through the worker
    while not list((run_dir / "checkpoints").glob("*/step-*")):
        assert proc.poll() is None, proc.communicate()[0][-5000:]
        assert time.monotonic() < deadline, "no checkpoint within 420 s"
        time.sleep(0.5)  # polling the run directory
    # its --worker-id, in this run's processes (other tests' dev runs have run id "r" too)
    [worker] = [p for p in processes_mentioning("r-worker-0") if str(run_dir / "config.yaml") in p]
    os.kill(int(worker.split(":")[0]), signal.SIGKILL)
    out = finish_dev(proc, 360)
    assert proc.returncode == 0, out[-5000:]
    assert "worker-0 exited with code -9; restarting it in 0 s (restart 1)" in out, out[-5000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    # dev stops the run once it sees a version >= max_steps; a fast trainer may be a few versions past it
    reached = re.match(r"completed: policy version (\d+) reached \(max_steps 4\)", summary["outcome"])
    assert reached and int(reached.group(1)) >= 4, out[-5000:]
    assert summary["restarts"] == {"worker-0": 1}, out[-5000:]
    assert processes_mentioning(str(run_dir / "config.yaml")) == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("moment", ["broker", "inference"])
def test_ctrl_c_during_start_up_leaves_nothing_behind(
    dev_config, processes_mentioning, tmp_path: Path, moment: str
) -> None:
    """SIGINT (a terminal's Ctrl-C) while the broker starts, or while the inference server loads."""
    from tests.support.kafka import free_port

    broker_dir = tmp_path / "kafka"
    sections: dict = {}
    if moment == "broker":  # dev starts its own broker
        sections["kafka"] = {"local": {"port": free_port(), "controller_port": free_port(), "heap": "256m"}}
        sections["dev"] = {"broker_data_dir": str(broker_dir)}
    config, env = dev_config(**sections)
    if moment == "broker":
        env.pop("STREAMRL_BOOTSTRAP_SERVERS")
    proc = start_dev(config, env)
    run_dir = tmp_path / "runs" / "r"
    marker = broker_dir / "broker.pid" if moment == "broker" else run_dir / "logs" / "inference.log"
    deadline = time.monotonic() + 200
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0][-5000:]
        assert time.monotonic() < deadline, f"{marker} not written within 200 s"
        time.sleep(0.05)  # polling the file system for the moment to interrupt
    proc.send_signal(signal.SIGINT)
    out = finish_dev(proc, 120)
    assert proc.returncode == 130, out[-5000:]
    assert "interrupted (SIGINT)" in out
    assert processes_mentioning(str(run_dir / "config.yaml")) == []
    assert processes_mentioning(str(broker_dir)) == []


@pytest.mark.timeout(300)
def test_sigterm_stops_every_child_and_writes_the_summary(
    dev_config, processes_mentioning, tmp_path: Path
) -> None:
    config, env = dev_config()
    proc = start_dev(config, env)
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
    out = finish_dev(proc, 120)
    assert proc.returncode == 130, out[-5000:]
    assert "interrupted (SIGTERM)" in out
    assert json.loads((run_dir / "summary.json").read_text())["outcome"] == "interrupted (SIGTERM)"
    assert processes_mentioning(str(run_dir / "config.yaml")) == []


@pytest.mark.timeout(400)
@pytest.mark.parametrize("broker", ["started by dev", "reused"])
def test_a_killed_dev_leaves_no_process_behind(
    dev_config, processes_mentioning, tmp_path: Path, broker: str
) -> None:
    """SIGKILL of dev (as a C-library abort ends it: no stop of its own runs): every child, its
    process group, the reaper and the broker dev started go anyway; a broker dev found running stays."""
    from streamrl.broker import LocalKafka
    from streamrl.config.kafka import LocalBrokerSettings
    from tests.support.kafka import free_port

    local = {"port": free_port(), "controller_port": free_port(), "heap": "256m"}
    broker_dir = tmp_path / "kafka"
    config, env = dev_config(kafka={"local": local}, dev={"broker_data_dir": str(broker_dir)})
    env.pop("STREAMRL_BOOTSTRAP_SERVERS")  # dev uses the local broker: its own, or the one running
    kept = LocalKafka(LocalBrokerSettings(**local), data_dir=broker_dir) if broker == "reused" else None
    if kept is not None:
        kept.start(timeout_s=120)  # no owner: a broker meant to stay, which dev uses
    run_config = tmp_path / "runs" / "r" / "config.yaml"
    groups: set[int] = set()
    try:
        proc = start_dev(config, env)
        stages = {"inference", "trainer", "streams", "worker-0", "sampler"}
        deadline = time.monotonic() + 240
        while set(dev_children(run_config)) != stages:
            assert proc.poll() is None, proc.communicate()[0][-5000:]
            assert time.monotonic() < deadline, (
                f"children did not start: {processes_mentioning(str(run_config))}"
            )
            time.sleep(0.5)  # polling the process table
        groups = set(dev_children(run_config).values())  # each child leads its own process group
        assert processes_mentioning(str(broker_dir)), "no broker runs"
        proc.kill()
        out = proc.communicate()[0]
        killed_at = time.monotonic()

        def left() -> list[str]:
            return (
                processes_mentioning(str(run_config))
                + processes_mentioning(f"streamrl.dev.reaper --parent {proc.pid} ")
                + (processes_mentioning(str(broker_dir)) if kept is None else [])
                + [f"process group {g}" for g in sorted(groups) if group_alive(g)]
            )

        while left() and time.monotonic() - killed_at < 120:
            time.sleep(0.5)  # polling the process table
        assert left() == [], f"left running 120 s after dev was killed: {left()}"
        if kept is not None:
            assert "using the local Kafka broker already running" in out, out[-5000:]
            assert kept.answers()  # not dev's to stop
    finally:  # without the fix: the orphans must not outlive the test
        for g in groups:
            _killpg(g)
        if kept is not None:
            kept.stop()
        for line in processes_mentioning(str(broker_dir)):
            _kill(int(line.split(":")[0]))


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
