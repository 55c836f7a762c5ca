"""The stop of a ``streamrl dev`` run that was killed, done by a small process that outlives it.

A ``dev`` that dies abruptly (SIGKILL, an abort inside a C library) runs none of its stop. On Linux
its children get SIGTERM from the kernel (:mod:`streamrl.parent_death`), but that is all: nothing
then kills a child that does not stop, nor the rest of a child's process group, nor stops the
broker ``dev`` started, which must go *after* its clients (a broker stopped at the same moment as
the stages left the sampler waiting in its consumer's close: 57 s once, over 120 s another time).

So ``dev`` starts this process first (:class:`Reaper`), in its own session, its stdin a pipe from
``dev``, and writes on it what it starts, one JSON object a line: each child's process group (again
at each restart), the broker's pid. When the pipe closes without a last ``{"done": true}`` (``dev``
died), the reaper does ``dev``'s stop: SIGTERM every process group, SIGKILL those with a process
left after ``stop_timeout_s``, then the broker: SIGTERM, SIGKILL after ``broker_timeout_s``, its
pid and owner files removed, a private broker's data directory deleted. The pipe closes however
``dev`` died, whichever of its threads started what, on any platform (its write end is ``dev``'s
alone: pipes are not inherited by the processes ``dev`` starts).

The reaper's own module imports the standard library only, so it starts at once beside a run that
starts many heavy Python processes. It reports what it did in its log (``logs/reaper.log``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the reaper process itself imports the standard library only
    from streamrl.broker import LocalKafka

log = logging.getLogger(__name__)


class Reaper:
    """The ``dev`` side: starts the reaper process and tells it what to stop.

    Args:
        log_path: the reaper's log (created with its folder).
        stop_timeout_s: seconds between SIGTERM and SIGKILL of the children's process groups.
        broker_timeout_s: seconds between SIGTERM and SIGKILL of the broker.

    A reaper that cannot be started or has died is reported once (a warning) and then ignored:
    the run goes on without it.
    """

    def __init__(self, log_path: Path, *, stop_timeout_s: float, broker_timeout_s: float = 30.0) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "streamrl.dev.reaper", "--parent", str(os.getpid()),
            "--stop-timeout-s", str(stop_timeout_s), "--broker-timeout-s", str(broker_timeout_s),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            with log_path.open("ab") as out:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C or a kill of dev's group spares it
                )
        except OSError as exc:
            log.warning("cannot start the reaper (%s): a killed dev would leave its children running", exc)

    def group(self, name: str, pgid: int) -> None:
        """Child ``name`` leads process group ``pgid`` (a restarted child's new group replaces its old)."""
        self._send({"group": name, "pgid": pgid})

    def broker(self, pid: int, *, files: Sequence[Path] = (), delete: Path | None = None) -> None:
        """The broker ``dev`` started runs as ``pid``; after stopping it, remove ``files`` (its pid
        and owner files) and delete ``delete`` (a private broker's data directory)."""
        self._send(
            {"broker": pid, "files": [str(f) for f in files], "delete": str(delete) if delete else None}
        )

    def broker_spawned(self, local: LocalKafka, *, private: bool) -> Callable[[int], None]:
        """``on_spawn`` for :meth:`streamrl.broker.LocalKafka.start`: :meth:`broker` with ``local``'s
        pid and owner files, and its data directory when it is a run's ``private`` broker."""
        return lambda pid: self.broker(
            pid, files=(local.pid_file, local.owner_file), delete=local.data_dir if private else None
        )

    def close(self, timeout_s: float = 5.0) -> None:
        """Everything is stopped: the reaper exits without doing anything (waited up to ``timeout_s``)."""
        if self.proc is None:
            return
        self._send({"done": True})
        proc, self.proc = self.proc, None
        if proc is None:  # it had died: _send reported it and let it go
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _send(self, message: dict[str, Any]) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:  # it died (BrokenPipeError): the run goes on without it
            log.warning("the reaper (pid %d) is gone (%s): a killed dev would leave its children running",
                        self.proc.pid, exc)  # fmt: skip
            self.proc = None


@dataclass
class Orders:
    """What the reaper was told: the process groups, the broker, whether ``dev`` finished its stop."""

    groups: dict[str, int] = field(default_factory=dict)
    broker: int | None = None
    broker_files: list[str] = field(default_factory=list)
    broker_delete: str | None = None
    done: bool = False

    def read(self, line: str) -> None:
        """Take one message (a line that is not one is ignored: a half-written last line)."""
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if "group" in msg:
            self.groups[str(msg["group"])] = int(msg["pgid"])
        if "broker" in msg:
            self.broker = int(msg["broker"])
            self.broker_files = [str(f) for f in msg.get("files") or []]
            self.broker_delete = msg.get("delete")
        if msg.get("done"):
            self.done = True


def _live_groups(pgids: Iterable[int]) -> set[int]:
    """Those of ``pgids`` with a live process: zombies do not count (an orphan's parent, init, may
    be slow to reap it, or not reap it at all in a container)."""
    wanted = set(pgids)
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc (macOS): whether a process of the group exists
        return {g for g in wanted if _exists(lambda g=g: os.killpg(g, 0))}
    live = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) in wanted and state != "Z":
            live.add(int(pgrp))
    return live


def _exists(probe: Callable[[], None]) -> bool:
    """Whether ``probe`` (a signal 0) finds its process."""
    try:
        probe()
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_broker(pid: int) -> bool:
    """Whether ``pid`` is still a live Kafka broker (not a reused pid, not a zombie)."""
    try:
        if b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone, or no /proc (macOS): whether it exists
        return not Path("/proc").is_dir() and _exists(lambda: os.kill(pid, 0))


def _wait(alive: Callable[[], object], timeout_s: float) -> bool:
    """Poll ``alive()`` until it is false or ``timeout_s`` passed; True when it became false."""
    deadline = time.monotonic() + timeout_s
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop(orders: Orders, stop_timeout_s: float, broker_timeout_s: float) -> None:
    """``dev``'s stop: every process group (SIGTERM, SIGKILL after ``stop_timeout_s``), then the broker
    (SIGTERM, SIGKILL after ``broker_timeout_s``) and its files."""
    live = _live_groups(orders.groups.values())
    groups = {name: pgid for name, pgid in orders.groups.items() if pgid in live}
    for name, pgid in groups.items():
        log.info("stopping %s (process group %d)", name, pgid)
        _signal_group(pgid, signal.SIGTERM)
    if not _wait(lambda: _live_groups(groups.values()), stop_timeout_s):
        left = _live_groups(groups.values())
        names = [n for n, g in groups.items() if g in left]
        log.warning("still running %.0f s after SIGTERM, killing: %s", stop_timeout_s, ", ".join(names))
        for pgid in left:
            _signal_group(pgid, signal.SIGKILL)
        _wait(lambda: _live_groups(left), 10.0)
    pid = orders.broker
    if pid is None:
        return
    if _is_broker(pid):
        log.info("stopping the broker (pid %d)", pid)
        _kill(pid, signal.SIGTERM)
        if not _wait(lambda: _is_broker(pid), broker_timeout_s):
            log.warning("the broker ignored SIGTERM for %.0f s; killing it", broker_timeout_s)
            _kill(pid, signal.SIGKILL)
            _wait(lambda: _is_broker(pid), 10.0)
    for f in orders.broker_files:
        Path(f).unlink(missing_ok=True)
    if orders.broker_delete:
        shutil.rmtree(orders.broker_delete, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Read orders on stdin until it closes; then, unless told ``done``, stop what they name."""
    parser = argparse.ArgumentParser(prog="python -m streamrl.dev.reaper", description=__doc__.split("\n")[0])
    parser.add_argument("--parent", type=int, required=True, help="pid of the dev process (for the log)")
    parser.add_argument("--stop-timeout-s", type=float, required=True)
    parser.add_argument("--broker-timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s reaper: %(message)s")
    orders = Orders()
    for line in sys.stdin:
        orders.read(line)
    if orders.done:
        return 0
    log.warning("dev (pid %d) ended without stopping what it started: stopping it", args.parent)
    stop(orders, args.stop_timeout_s, args.broker_timeout_s)
    log.info("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
