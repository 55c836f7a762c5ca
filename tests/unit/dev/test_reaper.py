"""Reaper: when dev's pipe closes without "done", it stops the process groups (SIGKILL after the
timeout, grandchildren included), then the broker, after them; told "done", it does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrl.dev.reaper import Orders, Reaper
from streamrl.dev.supervisor import ChildSpec, Supervisor, group_alive
from tests.support.processes import wait_until

PY = sys.executable

# ignores SIGTERM and starts a grandchild that does too (both need the SIGKILL); writes its pid when ready
STUBBORN = (
    "import pathlib, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'\n"
    "p = subprocess.Popen([sys.executable, '-c', code])\n"
    "pathlib.Path(sys.argv[1]).write_text(str(p.pid))\n"
    "time.sleep(60)\n"
)
# stands for the JVM ("kafka.Kafka" in its command line): on SIGTERM it writes whether a process of
# the stage's group still ran (a zombie, not yet reaped by this test, does not count), then exits
BROKER = (
    "import os, pathlib, signal, sys, time\n"
    "out, stage = pathlib.Path(sys.argv[2]), sys.argv[3]\n"
    "def running(stat):\n"
    "    try:\n"
    "        state, _, pgrp = stat.read_text().rsplit(')', 1)[1].split()[:3]\n"
    "    except OSError:\n"
    "        return False\n"
    "    return pgrp == stage and state != 'Z'\n"
    "def on_term(*_):\n"
    "    live = any(running(p / 'stat') for p in pathlib.Path('/proc').iterdir() if p.name.isdigit())\n"
    "    out.write_text('stage running' if live else 'stage gone')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "out.with_suffix('.ready').write_text('')\n"
    "time.sleep(60)\n"
)


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the stand-in broker reads /proc")
def test_a_closed_pipe_without_done_stops_the_groups_then_the_broker(tmp_path: Path) -> None:
    reaper = Reaper(tmp_path / "logs" / "reaper.log", stop_timeout_s=1.0)
    sup = Supervisor(tmp_path / "logs", reaper=reaper)
    grandchild_file, broker_out = tmp_path / "grandchild.pid", tmp_path / "broker.txt"
    stage = sup.start(ChildSpec("stage", [PY, "-c", STUBBORN, str(grandchild_file)]))
    broker = subprocess.Popen([PY, "-c", BROKER, "kafka.Kafka", str(broker_out), str(stage.pid)])
    pid_file, data_dir = tmp_path / "broker.pid", tmp_path / "kafka-data-r"
    pid_file.write_text(str(broker.pid))
    data_dir.mkdir()
    try:
        wait_until(lambda: grandchild_file.exists() and grandchild_file.read_text() != "")
        wait_until(lambda: broker_out.with_suffix(".ready").exists())
        reaper.broker(broker.pid, files=[pid_file], delete=data_dir)
        assert reaper.proc is not None and reaper.proc.stdin is not None
        reaper.proc.stdin.close()  # as the death of dev closes it: no "done"
        assert reaper.proc.wait(30) == 0
        assert stage.proc.wait(10) == -signal.SIGKILL  # it ignores SIGTERM
        wait_until(lambda: not group_alive(stage.pid))  # its grandchild too (reaped by init)
        assert broker.wait(10) == 0
        assert broker_out.read_text() == "stage gone"  # the broker only after its clients
        assert not pid_file.exists() and not data_dir.exists()
        log = (tmp_path / "logs" / "reaper.log").read_text()
        assert "ended without stopping what it started" in log and "killing: stage" in log, log
    finally:
        _kill(stage.pid)
        broker.kill()
        broker.wait()


def test_done_leaves_everything_running(tmp_path: Path) -> None:
    reaper = Reaper(tmp_path / "reaper.log", stop_timeout_s=1.0)
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        reaper.group("sleeper", sleeper.pid)
        proc = reaper.proc
        assert proc is not None
        reaper.close()
        assert proc.returncode == 0
        time.sleep(0.3)
        assert sleeper.poll() is None
        reaper.group("late", 1)  # after close: ignored, no error
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_broker_pid_that_is_no_broker_is_left_alone(tmp_path: Path) -> None:
    """The broker exited and its pid went to another process: not killed."""
    reaper = Reaper(tmp_path / "reaper.log", stop_timeout_s=1.0)
    other = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        reaper.broker(other.pid)
        assert reaper.proc is not None and reaper.proc.stdin is not None
        reaper.proc.stdin.close()
        assert reaper.proc.wait(20) == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_dead_reaper_is_reported_once_and_ignored(tmp_path: Path, caplog) -> None:
    reaper = Reaper(tmp_path / "reaper.log", stop_timeout_s=1.0)
    assert reaper.proc is not None
    reaper.proc.kill()
    reaper.proc.wait()
    reaper.group("a", 12345)
    reaper.group("b", 12346)
    reaper.close()
    [warning] = [r.message for r in caplog.records if "the reaper" in r.message]
    assert (
        warning.startswith("the reaper (pid") and "a killed dev would leave its children running" in warning
    )


def test_closing_a_reaper_that_died_since_the_last_order_ends_quietly(tmp_path: Path, caplog) -> None:
    """dev's normal end after its reaper was killed: the 'done' finds the pipe broken (a fresh-user
    trial's dev crashed there with AttributeError and wrote no summary)."""
    reaper = Reaper(tmp_path / "reaper.log", stop_timeout_s=1.0)
    assert reaper.proc is not None
    reaper.proc.kill()
    reaper.proc.wait()
    reaper.close()
    assert reaper.proc is None
    assert len([r for r in caplog.records if "the reaper" in r.message]) == 1


def test_orders_skip_what_is_not_a_message() -> None:
    orders = Orders()
    for line in [
        '{"group": "a", "pgid": 10}',
        '{"group": "a", "pgid": 11}',
        "[1]",
        '{"broker": 7, "fi',
        "\n",
    ]:
        orders.read(line)
    assert orders.groups == {"a": 11} and orders.broker is None and not orders.done
