"""Processes for the tests: a real streams (Faust) worker as a child process; a child a test interrupts
(:func:`sigint_default`); polling until a condition holds (:func:`wait_until`).

Several test folders run the aggregator beside other stages (its own tests, the admission no-stall
test); this is the one way they start it and wait until it holds its partitions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_MARKER = "STREAMS-READY"
"""What ``streamrl.streams`` logs once it holds its partitions (``streams/app.py``)."""


class StreamsWorker:
    """``python -m streamrl.streams -c <config>`` as a child process, its output in a log file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config, self.log_path = config, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> StreamsWorker:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("STREAMRL_BOOTSTRAP_SERVERS", "STREAMRL_TOPIC_PREFIX")
        }
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamrl.streams", "-c", str(self.config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if READY_MARKER in text:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"streams worker exited with {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"streams worker not ready after {timeout_s} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def sigint_default() -> None:
    """``preexec_fn`` for a child a test will interrupt as a terminal's Ctrl-C would (SIGINT): SIGINT
    back to its default disposition and unblocked in the child.

    A suite started as a background job of a non-interactive shell (``make test &``) runs with SIGINT
    ignored (bash does that to such jobs), an ignored signal stays ignored across ``exec``, and Python
    then installs no ``KeyboardInterrupt`` handler: the child would never see the test's SIGINT (a CI
    run started that way failed both tests that send one, their children still running 30 s and 60 s
    later; the xdist worker's ``SigIgn`` had SIGINT).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def wait_until(cond: Callable[[], object], timeout_s: float = 20.0, what: str = "the condition") -> None:
    """Poll ``cond()`` every 50 ms until it is true.

    Raises:
        AssertionError: still false after ``timeout_s`` seconds (the message names ``what``).
    """
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout_s:g} s"
        time.sleep(0.05)
