"""Supervisor: process groups, failure reports with the log tail, clean stop with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrl.dev.supervisor import ChildFailed, ChildSpec, RestartPolicy, Supervisor, group_alive, tail

PY = sys.executable


def _wait_file(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written")


def test_child_that_dies_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs", stop_timeout_s=2)
    sup.start(ChildSpec("ok", [PY, "-c", "import time; time.sleep(30)"]))
    sup.start(
        ChildSpec("bad", [PY, "-c", "print('line one'); print('boom: bad input'); raise SystemExit(3)"])
    )
    sup.children["bad"].proc.wait(10)
    with pytest.raises(ChildFailed) as info:
        sup.check()
    assert info.value.name == "bad" and info.value.returncode == 3
    assert "boom: bad input" in str(info.value)
    assert info.value.log_path == tmp_path / "logs" / "bad.log"
    sup.stop_all()
    assert sup.leftovers() == []


def test_may_exit_child_finishing_is_normal_but_nonzero_is_not(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, stop_timeout_s=2)
    sup.start(ChildSpec("once", [PY, "-c", "pass"], may_exit=True))
    sup.children["once"].proc.wait(10)
    sup.check()
    assert sup.finished == {"once": 0}
    sup.start(ChildSpec("service", [PY, "-c", "pass"]))  # exit 0 without may_exit: a failure
    sup.children["service"].proc.wait(10)
    with pytest.raises(ChildFailed, match="service exited with code 0"):
        sup.check()


def test_stop_all_kills_grandchildren_and_sigterm_ignorers(tmp_path: Path) -> None:
    """A child that ignores SIGTERM and has started a grandchild: both are gone after stop_all."""
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    sup = Supervisor(tmp_path / "logs", stop_timeout_s=1.0)
    child = sup.start(ChildSpec("stubborn", [PY, "-c", script]))
    sup.start(ChildSpec("polite", [PY, "-c", "import time; time.sleep(60)"]))
    grandchild = int(_wait_file(pidfile))
    assert os.getpgid(grandchild) == child.pid  # own process group, led by the child
    t0 = time.monotonic()
    codes = sup.stop_all(["polite", "stubborn"])
    assert time.monotonic() - t0 < 8
    assert codes["polite"] == -15 and codes["stubborn"] == -9
    assert sup.leftovers() == []
    assert not group_alive(child.pid)
    with pytest.raises(ProcessLookupError):
        os.kill(grandchild, 0)


STOP_ORDER_CHILD = """
import os, signal, sys, time
name, ready, out = sys.argv[1:4]

def running(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False

def on_sigterm(*_):
    pids = {f: int(open(os.path.join(ready, f)).read()) for f in os.listdir(ready) if "." not in f}
    others = sorted(f for f, pid in pids.items() if f != name and running(pid))
    with open(out, "a") as f:
        f.write(name + ":" + ",".join(others) + "\\n")
    raise SystemExit(0)

signal.signal(signal.SIGTERM, on_sigterm)
with open(os.path.join(ready, name + ".tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(ready, name + ".tmp"), os.path.join(ready, name))  # ready: handler installed
time.sleep(60)
"""


def test_stop_order_is_sequential(tmp_path: Path) -> None:
    """Children are stopped one at a time in the given order: when a child gets SIGTERM, the ones
    stopped before it are gone and the later ones still run."""
    out, ready = tmp_path / "order.txt", tmp_path / "ready"
    ready.mkdir()
    sup = Supervisor(tmp_path / "logs", stop_timeout_s=5)
    for name in ("a", "b", "c"):
        sup.start(ChildSpec(name, [PY, "-c", STOP_ORDER_CHILD, name, str(ready), str(out)]))
    for name in ("a", "b", "c"):
        _wait_file(ready / name)  # its SIGTERM handler is installed
    codes = sup.stop_all(["c", "a", "b"])
    assert codes == {"c": 0, "a": 0, "b": 0}
    # each line: the child, then the other children still running when it got SIGTERM
    assert out.read_text().split() == ["c:a,b", "a:b", "b:"]


def test_start_rejects_duplicates_and_missing_executables(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    sup.start(ChildSpec("x", [PY, "-c", "pass"], may_exit=True))
    with pytest.raises(ValueError, match="already started"):
        sup.start(ChildSpec("x", [PY, "-c", "pass"]))
    with pytest.raises(Exception, match="cannot start y"):
        sup.start(ChildSpec("y", [str(tmp_path / "no-such-binary")]))
    sup.stop_all()


def test_tail_of_missing_and_empty_logs(tmp_path: Path) -> None:
    assert tail(tmp_path / "nope.log") == "(no log)"
    (tmp_path / "e.log").write_text("")
    assert tail(tmp_path / "e.log") == "(empty log)"
    (tmp_path / "l.log").write_text("".join(f"{i}\n" for i in range(100)))
    assert tail(tmp_path / "l.log", 3) == "97\n98\n99"


def _check_until(sup: Supervisor, cond, timeout_s: float = 20.0) -> None:
    """Run the supervisor's watch (``check``) until ``cond()``, as ``streamrl dev``'s loop does."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        sup.check()
        time.sleep(0.02)


def test_a_dead_child_is_restarted_with_backoff_and_reported(tmp_path: Path) -> None:
    """A child killed (SIGKILL) is started again in its place after the back-off, its log keeps
    growing with a marker line, and the restart is reported with the tail of its log."""
    events = []
    policy = RestartPolicy(max_restarts=3, window_s=60, backoff_s=0.2, backoff_max_s=1)
    sup = Supervisor(tmp_path / "logs", stop_timeout_s=2, restart=policy, on_restart=events.append)
    script = "import os, time; print('alive', os.getpid(), flush=True); time.sleep(60)"
    first = sup.start(ChildSpec("worker-0", [PY, "-c", script]))
    log_path = tmp_path / "logs" / "worker-0.log"

    def lives() -> list[str]:
        return [line for line in log_path.read_text().splitlines() if line.startswith("alive ")]

    _check_until(sup, lambda: len(lives()) == 1)
    os.kill(first.pid, 9)
    first.proc.wait(10)
    t0 = time.monotonic()
    _check_until(sup, lambda: sup.children["worker-0"].pid != first.pid)
    assert time.monotonic() - t0 >= 0.15  # the back-off
    assert [(e.name, e.returncode, e.restarts) for e in events] == [("worker-0", -9, 1)]
    assert sup.restart_count("worker-0") == 1 and sup.children["worker-0"].returncode() is None
    _check_until(sup, lambda: len(lives()) == 2)  # the new process wrote to the same log
    assert lives()[1] == f"alive {sup.children['worker-0'].pid}"
    assert " restart 1 $ " in log_path.read_text()
    sup.stop_all()
    assert sup.leftovers() == []


def test_a_child_that_keeps_dying_fails_the_run_and_one_shot_children_are_not_restarted(
    tmp_path: Path,
) -> None:
    policy = RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.05, backoff_max_s=0.1)
    sup = Supervisor(tmp_path / "logs", stop_timeout_s=2, restart=policy)
    sup.start(ChildSpec("bad", [PY, "-c", "print('boom: no such agent'); raise SystemExit(3)"]))
    with pytest.raises(ChildFailed) as info:
        _check_until(sup, lambda: False)
    assert info.value.restarts == 2 and info.value.returncode == 3
    assert "after 2 restart(s)" in str(info.value) and "boom: no such agent" in str(info.value)
    lines = (tmp_path / "logs" / "bad.log").read_text().splitlines()
    assert lines.count("boom: no such agent") == 3  # the first run and 2 restarts
    sup = Supervisor(tmp_path / "logs2", stop_timeout_s=2, restart=policy)
    sup.start(ChildSpec("publish", [PY, "-c", "raise SystemExit(1)"], may_exit=True, restart=False))
    sup.children["publish"].proc.wait(10)
    with pytest.raises(ChildFailed, match="publish exited with code 1"):
        sup.check()


def test_no_restart_once_stopping(tmp_path: Path) -> None:
    policy = RestartPolicy(max_restarts=5, backoff_s=0.05)
    sup = Supervisor(tmp_path / "logs", stop_timeout_s=2, restart=policy)
    child = sup.start(ChildSpec("w", [PY, "-c", "raise SystemExit(1)"]))
    child.proc.wait(10)
    sup.check()  # a restart is now pending
    assert sup.children["w"].restart_at is not None
    sup.stop_all()
    time.sleep(0.1)  # past the back-off: a restart would be due now
    sup.check()
    assert sup.children["w"].pid == child.pid and sup.leftovers() == []


def test_restart_policy_back_off_doubles_up_to_its_bound() -> None:
    p = RestartPolicy(backoff_s=1.0, backoff_max_s=30.0)
    assert [p.delay_s(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_of_a_killed_supervisor_get_sigterm(tmp_path: Path) -> None:
    """A supervisor killed before it could stop anything (SIGKILL, a C-library abort): the kernel
    sends each child the SIGTERM the stop would have."""
    out, ready = tmp_path / "stopped.txt", tmp_path / "ready"
    ready.mkdir()
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from streamrl.dev.supervisor import ChildSpec, Supervisor\n"
        "sup = Supervisor(Path(sys.argv[1]))\n"
        "for name in ('a', 'b'):\n"
        "    sup.start(ChildSpec(name, [sys.executable, '-c', sys.argv[2], name, sys.argv[3], sys.argv[4]]))\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [PY, "-c", script, str(tmp_path / "logs"), STOP_ORDER_CHILD, str(ready), str(out)]
    )
    pids = []
    try:
        pids = [int(_wait_file(ready / name)) for name in ("a", "b")]  # SIGTERM handlers installed
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 20
        while any(group_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "children of the killed supervisor still run"
            time.sleep(0.05)
        assert sorted(line.split(":")[0] for line in out.read_text().split()) == ["a", "b"]
    finally:
        owner.kill()
        owner.wait()
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_stop_all_skips_names_never_started(tmp_path: Path) -> None:
    """streamrl optimize names "inference" in its order, which a failed or inference-less start never
    started: a KeyError there stopped nothing and hid the start's own error."""
    sup = Supervisor(tmp_path, stop_timeout_s=2)
    sup.start(ChildSpec("worker-0", [PY, "-c", "import time; time.sleep(30)"]))
    sup.start(ChildSpec("other", [PY, "-c", "import time; time.sleep(30)"]))
    assert sup.stop_all(["worker-0", "inference"]) == {"worker-0": -15, "other": -15}
    assert sup.leftovers() == []
