"""Supervised child processes: one process group each, logs in files, clean stop, nothing left behind.

Every child is started with ``start_new_session=True`` so it leads its own process group (and a
terminal's Ctrl-C reaches only the supervisor, which then stops the children in order). Stopping
sends SIGTERM to the whole group, waits, then SIGKILLs the group; a group is gone only when no
process of it is left (checked with ``killpg(pgid, 0)``), so grandchildren are covered too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamrl.errors import StreamRLError

log = logging.getLogger(__name__)


class ChildFailed(StreamRLError):
    """A supervised child exited when it should not have; the message has the tail of its log."""

    def __init__(self, name: str, returncode: int, log_path: Path, tail: str) -> None:
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail
        super().__init__(f"{name} exited with code {returncode} (log: {log_path}); last lines:\n{tail}")


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child.

    Attributes:
        name: unique short name (``inference``, ``worker-0``); the log is ``<log_dir>/<name>.log``.
        argv: the command line.
        may_exit: exiting with code 0 is a normal end (publish, a sampler that finished its epochs,
            a trainer at ``max_steps``); any non-zero exit is always a failure.
        env: extra environment variables (added to the supervisor's environment).
    """

    name: str
    argv: Sequence[str]
    may_exit: bool = False
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Child:
    """A started child: its spec, process and log file."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def returncode(self) -> int | None:
        """The exit code once it exited (reaped), else None."""
        return self.proc.poll()


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ("(empty log)" / "(no log)" when there are none)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    out = text.splitlines()[-lines:]
    return "\n".join(out) if out else "(empty log)"


def group_alive(pgid: int) -> bool:
    """True while any process of process group ``pgid`` exists (zombies of our own children excluded
    once reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Starts children, watches them, and stops them all.

    Args:
        log_dir: directory of the children's logs (created).
        base_env: environment of every child (default: this process's environment).
        stop_timeout_s: seconds between SIGTERM and SIGKILL of a child's process group.
        tail_lines: log lines quoted by :class:`ChildFailed`.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        base_env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 20.0,
        tail_lines: int = 40,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stop_timeout_s = stop_timeout_s
        self.tail_lines = tail_lines
        self.children: dict[str, Child] = {}
        self.finished: dict[str, int] = {}
        """Children that exited normally (``may_exit`` and code 0): name → code."""

    def start(self, spec: ChildSpec) -> Child:
        """Start ``spec`` in its own session; stdout and stderr go to ``<log_dir>/<name>.log``.

        Raises:
            ValueError: a child of that name was already started.
            StreamRLError: the executable cannot be started (message names the command).
        """
        if spec.name in self.children:
            raise ValueError(f"child {spec.name!r} already started")
        log_path = self.log_dir / f"{spec.name}.log"
        env = {**self.base_env, **spec.env}
        with log_path.open("ab") as out:
            out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(spec.argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(spec.argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StreamRLError(f"cannot start {spec.name} ({' '.join(spec.argv)}): {exc}") from exc
        child = Child(spec, proc, log_path, time.monotonic())
        self.children[spec.name] = child
        log.info("started %s (pid %d): %s", spec.name, proc.pid, " ".join(spec.argv))
        return child

    def running(self) -> list[str]:
        """Names of children still running."""
        return [n for n, c in self.children.items() if c.returncode() is None]

    def check(self) -> None:
        """Look at every child once: record normal exits, raise on an abnormal one.

        Raises:
            ChildFailed: a child exited non-zero, or exited 0 without ``may_exit`` (first one found).
        """
        for name, child in self.children.items():
            code = child.returncode()
            if code is None or name in self.finished:
                continue
            if code == 0 and child.spec.may_exit:
                self.finished[name] = code
                log.info("%s finished", name)
                continue
            raise ChildFailed(name, code, child.log_path, tail(child.log_path, self.tail_lines))

    def wait(self, name: str, timeout_s: float) -> int:
        """Wait for a child to exit and return its code.

        Raises:
            ChildFailed: it exited non-zero.
            TimeoutError: it still runs after ``timeout_s``.
        """
        child = self.children[name]
        try:
            code = child.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(
                f"{name} still running after {timeout_s:.0f} s (log: {child.log_path})"
            ) from exc
        if code != 0:
            raise ChildFailed(name, code, child.log_path, tail(child.log_path, self.tail_lines))
        self.finished[name] = code
        return code

    def stop_all(self, order: Sequence[str] | None = None) -> dict[str, int | None]:
        """Stop every child, one at a time in ``order`` (default: reverse start order): SIGTERM its
        process group, wait up to ``stop_timeout_s``, then SIGKILL the group. One at a time, so a
        stage still finishing its work (a worker's last rollouts) still has the stages it calls.

        Returns:
            name → exit code (negative = killed by that signal; None = could not be reaped).
        """
        names = list(order) if order is not None else list(reversed(self.children))
        names += [n for n in reversed(self.children) if n not in names]
        codes: dict[str, int | None] = {}
        for name in names:
            child = self.children[name]
            if self._alive(child):
                self._signal(child, signal.SIGTERM)
                deadline = time.monotonic() + self.stop_timeout_s
                while time.monotonic() < deadline and self._alive(child):
                    time.sleep(0.05)
                if self._alive(child):
                    log.warning(
                        "%s ignored SIGTERM for %.0f s; killing its process group", name, self.stop_timeout_s
                    )
                    self._signal(child, signal.SIGKILL)
                    kill_deadline = time.monotonic() + 10.0
                    while self._alive(child) and time.monotonic() < kill_deadline:
                        time.sleep(0.05)
            codes[name] = child.returncode()
        return codes

    def leftovers(self) -> list[str]:
        """Children whose process group still has a live process (should be empty after stop_all)."""
        return [n for n, c in self.children.items() if self._alive(c)]

    @staticmethod
    def _alive(child: Child) -> bool:
        child.proc.poll()  # reap the leader if it exited
        return group_alive(child.pid)

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass
