"""die_with_parent: a child gets SIGTERM when the process (or the thread) that started it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamrl import parent_death
from streamrl.parent_death import die_with_parent, unsupported_reason
from tests.support.processes import wait_until

PY = sys.executable
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# a child that writes its pid once its handler is in place, and "SIGTERM" into `<file>.signal` when it gets it
CHILD = (
    "import os, pathlib, signal, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "def on_term(*_):\n"
    "    out.with_suffix('.signal').write_text('SIGTERM')\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "out.write_text(str(os.getpid()))\n"
    "time.sleep(60)\n"
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@linux_only
def test_the_child_of_a_killed_parent_gets_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "child.pid"
    parent_script = (
        "import subprocess, sys, time\n"
        "from streamrl.parent_death import die_with_parent\n"
        f"subprocess.Popen([sys.executable, '-c', {CHILD!r}, {str(out)!r}], start_new_session=True,\n"
        "                 preexec_fn=die_with_parent())\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([PY, "-c", parent_script])
    child = None
    try:
        wait_until(lambda: out.exists() and out.read_text().strip() != "")
        child = int(out.read_text())
        parent.kill()  # no stop of its own runs
        parent.wait()
        wait_until(lambda: not _alive(child))
        assert out.with_suffix(".signal").read_text() == "SIGTERM"  # a graceful stop, not a kill
    finally:
        parent.kill()
        parent.wait()
        if child is not None:
            _kill(child)


@linux_only
def test_the_signal_follows_the_thread_that_started_the_child(tmp_path: Path) -> None:
    """Why a supervisor starts every child from its one long-lived thread."""
    import threading

    out = tmp_path / "child.pid"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(subprocess.Popen([PY, "-c", CHILD, str(out)], preexec_fn=die_with_parent()))
        wait_until(lambda: out.exists() and out.read_text().strip() != "")  # its handler is in place

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()  # this process lives on; the thread that started the child does not
    try:
        procs[0].wait(20)
        assert out.with_suffix(".signal").read_text() == "SIGTERM"
    finally:
        procs[0].kill()
        procs[0].wait()


@linux_only
def test_a_parent_gone_before_the_child_asked_means_no_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: 1)  # the child's parent is not the one recorded: as if it had died
        preexec = die_with_parent()
    proc = subprocess.Popen([PY, "-c", "print('ran')"], preexec_fn=preexec, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM and out == b""


def test_without_prctl_it_is_a_no_op_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    parent_death._libc.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert die_with_parent() is None
        assert unsupported_reason() == "darwin has no prctl(PR_SET_PDEATHSIG)"
    finally:
        parent_death._libc.cache_clear()
        monkeypatch.undo()
    if sys.platform.startswith("linux"):
        assert unsupported_reason() is None and callable(die_with_parent())
