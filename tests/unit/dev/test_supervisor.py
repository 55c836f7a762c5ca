"""Supervisor: process groups, failure reports with the log tail, clean stop with nothing left behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from streamrl.dev.supervisor import ChildFailed, ChildSpec, Supervisor, group_alive, tail

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
