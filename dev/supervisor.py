"""Supervised child processes: one process group each, logs in files, restarts, clean stop, nothing left behind.

Every child is started with ``start_new_session=True`` so it leads its own process group (and a
terminal's Ctrl-C reaches only the supervisor, which then stops the children in order). Stopping
sends SIGTERM to the whole group, waits, then SIGKILLs the group; a group is gone only when no
process of it is left (checked with ``killpg(pgid, 0)``), so grandchildren are covered too.

A supervisor that dies without stopping them (SIGKILL, an abort inside a C library) would leave
them running, in sessions of their own; so on Linux every child also gets SIGTERM from the kernel
when the supervisor dies (:func:`streamrl.parent_death.die_with_parent`: the signal the stop sends,
so it stops as gracefully; its own children are its to stop). The signal follows the *thread* that
started the child: call :meth:`Supervisor.start` and :meth:`Supervisor.check` (which restarts) from
the one thread that owns the supervisor for its whole life, as ``streamrl dev`` does. A
:class:`~streamrl.dev.reaper.Reaper` given to the supervisor is told each child's process group, and
does the rest of the stop when the supervisor's process dies: SIGTERM to the whole group, SIGKILL
after its own ``stop_timeout_s`` (on macOS too).

A child that dies (exits non-zero, or exits at all without ``may_exit``) is restarted with a
:class:`RestartPolicy`, as Kubernetes restarts a pod's container (``restartPolicy: Always`` with its
crash-loop back-off): after ``backoff_s``, doubling with each restart in the window, at most
``backoff_max_s``; its log keeps growing in the same file, with a marker line per restart. Only a
child that died more than ``max_restarts`` times within ``window_s`` fails the run
(:class:`ChildFailed`, with the tail of its log). The pipeline is built to survive a dead stage (every
stage resumes from Kafka), so one death is reported, not fatal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamrl.dev.reaper import Reaper
from streamrl.errors import StreamRLError
from streamrl.parent_death import die_with_parent

log = logging.getLogger(__name__)


class ChildFailed(StreamRLError):
    """A supervised child exited when it should not have (and, with a restart policy, kept dying);
    the message has the tail of its log."""

    def __init__(self, name: str, returncode: int, log_path: Path, tail: str, restarts: int = 0) -> None:
        self.name = name
        self.returncode = returncode
        self.log_path = log_path
        self.tail = tail
        self.restarts = restarts
        again = f", after {restarts} restart(s)" if restarts else ""
        super().__init__(
            f"{name} exited with code {returncode}{again} (log: {log_path}); last lines:\n{tail}"
        )


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is started again.

    Attributes:
        max_restarts: restarts allowed within ``window_s``; one more death fails the run (0 = the
            first death does).
        window_s: the sliding window the restarts are counted in, in seconds.
        backoff_s: delay before a restart, doubled for each earlier restart in the window, in seconds.
        backoff_max_s: the longest delay, in seconds.
    """

    max_restarts: int = 5
    window_s: float = 600.0
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0

    def delay_s(self, recent: int) -> float:
        """Delay of the next restart after ``recent`` restarts within the window."""
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** min(recent, 30))


@dataclass(frozen=True)
class Restart:
    """A death the supervisor answered with a restart (for reports)."""

    name: str
    returncode: int
    delay_s: float
    restarts: int
    tail: str


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child.

    Attributes:
        name: unique short name (``inference``, ``worker-0``); the log is ``<log_dir>/<name>.log``.
        argv: the command line.
        may_exit: exiting with code 0 is a normal end (publish, a sampler that finished its epochs,
            a trainer at ``max_steps``); any non-zero exit is always a failure.
        env: extra environment variables (added to the supervisor's environment).
        restart: restarted under the supervisor's :class:`RestartPolicy` when it dies; False for
            one-shot children whose failure must stop the run (publishing a dataset).
    """

    name: str
    argv: Sequence[str]
    may_exit: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    restart: bool = True


@dataclass
class Child:
    """A started child: its spec, process and log file."""

    spec: ChildSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    deaths: list[float] = field(default_factory=list)
    """``time.monotonic()`` of each death that was answered with a restart."""
    restart_at: float | None = None
    """When a pending restart is due (None: running, or not to be restarted)."""

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
        restart: how dead children are restarted; None = never (the first death fails the run).
        on_restart: called with each :class:`Restart` when a death is answered with one (reports).
        reaper: told each child's process group (:class:`~streamrl.dev.reaper.Reaper`), to stop
            them if this process dies without doing it.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        base_env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 20.0,
        tail_lines: int = 40,
        restart: RestartPolicy | None = None,
        on_restart: Callable[[Restart], None] | None = None,
        reaper: Reaper | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stop_timeout_s = stop_timeout_s
        self.tail_lines = tail_lines
        self.restart = restart
        self.on_restart = on_restart
        self.reaper = reaper
        self.children: dict[str, Child] = {}
        self.finished: dict[str, int] = {}
        """Children that exited normally (``may_exit`` and code 0): name → code."""
        self.restarts: list[Restart] = []
        """Every death answered with a restart, in order."""
        self._stopping = False

    def start(self, spec: ChildSpec) -> Child:
        """Start ``spec`` in its own session; stdout and stderr go to ``<log_dir>/<name>.log``. On
        Linux it gets SIGTERM when the calling thread ends (this process's death included): call it
        from the thread that owns the supervisor.

        Raises:
            ValueError: a child of that name was already started.
            StreamRLError: the executable cannot be started (message names the command).
        """
        if spec.name in self.children:
            raise ValueError(f"child {spec.name!r} already started")
        child = self._spawn(spec)
        self.children[spec.name] = child
        log.info("started %s (pid %d): %s", spec.name, child.pid, " ".join(spec.argv))
        return child

    def _spawn(self, spec: ChildSpec, note: str = "") -> Child:
        log_path = self.log_dir / f"{spec.name}.log"
        env = {**self.base_env, **spec.env}
        with log_path.open("ab") as out:
            out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}{note} $ {' '.join(spec.argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(spec.argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),  # SIGTERM if this process dies without stopping it
                )
            except OSError as exc:
                raise StreamRLError(f"cannot start {spec.name} ({' '.join(spec.argv)}): {exc}") from exc
        if self.reaper is not None:
            self.reaper.group(spec.name, proc.pid)
        return Child(spec, proc, log_path, time.monotonic())

    def running(self) -> list[str]:
        """Names of children still running."""
        return [n for n, c in self.children.items() if c.returncode() is None]

    def restart_count(self, name: str) -> int:
        """How often child ``name`` was restarted (all time)."""
        return len(self.children[name].deaths)

    def check(self) -> None:
        """Look at every child once: record normal exits, answer deaths with restarts (under the
        policy), start restarts that are due.

        Raises:
            ChildFailed: a child exited non-zero, or exited 0 without ``may_exit``, and may not be
                restarted (no policy, ``restart=False``, or more than ``max_restarts`` deaths within
                ``window_s``): the first one found.
        """
        now = time.monotonic()
        for name, child in list(self.children.items()):
            if child.restart_at is not None:
                if now >= child.restart_at and not self._stopping:
                    self._restart(child)
                continue
            code = child.returncode()
            if code is None or name in self.finished:
                continue
            if code == 0 and child.spec.may_exit:
                self.finished[name] = code
                log.info("%s finished", name)
                continue
            policy = self.restart
            recent = [t for t in child.deaths if now - t <= policy.window_s] if policy else []
            text = tail(child.log_path, self.tail_lines)
            if policy is None or not child.spec.restart or len(recent) >= policy.max_restarts:
                raise ChildFailed(name, code, child.log_path, text, len(child.deaths))
            delay = policy.delay_s(len(recent))
            child.deaths.append(now)
            child.restart_at = now + delay
            event = Restart(name, code, delay, len(child.deaths), text)
            self.restarts.append(event)
            if self.on_restart is not None:
                self.on_restart(event)  # the owner reports it (streamrl dev: on its console)
            else:
                log.warning(
                    "%s exited with code %d; restarting it in %.1f s (restart %d, %d of %d within %.0f s)",
                    name, code, delay, len(child.deaths), len(recent) + 1, policy.max_restarts, policy.window_s,
                )  # fmt: skip

    def _restart(self, child: Child) -> None:
        """Start a dead child again in its place (same name, same log file)."""
        if group_alive(child.pid):  # a grandchild of the dead one lingers: its group goes first
            self._signal(child, signal.SIGKILL)
        new = self._spawn(child.spec, note=f" restart {len(child.deaths)}")
        new.deaths = child.deaths
        self.children[child.spec.name] = new
        log.info("restarted %s (pid %d)", child.spec.name, new.pid)

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
        """Stop every child, one at a time in ``order`` (default: reverse start order; a name in it
        that was never started is skipped, a started child it lacks is stopped last): SIGTERM its
        process group, wait up to ``stop_timeout_s``, then SIGKILL the group. One at a time, so a
        stage still finishing its work (a worker's last rollouts) still has the stages it calls.

        Returns:
            name → exit code (negative = killed by that signal; None = could not be reaped).
        """
        self._stopping = True  # no restart from here on
        for child in self.children.values():
            child.restart_at = None
        names = (
            [n for n in order if n in self.children] if order is not None else list(reversed(self.children))
        )
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
