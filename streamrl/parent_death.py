"""Child processes that end with the process that started them (Linux: ``PR_SET_PDEATHSIG``).

A child started in its own session (``start_new_session=True``, so a terminal's Ctrl-C reaches only
its parent, which then stops it in order) is stopped by nobody when that parent dies abruptly: a
SIGKILL, or an abort inside a C library (librdkafka asserting) runs none of the parent's stop code,
and the child runs on as an orphan. :func:`die_with_parent` gives :class:`subprocess.Popen` a
``preexec_fn`` that asks the kernel to send the child SIGTERM when its parent dies: the same signal
the parent's own stop sends, so a stage stops gracefully (Faust leaves its consumer group, the Kafka
broker shuts down cleanly).

Why the kernel's parent-death signal rather than:

- a pipe each child inherits and watches for end-of-file: it needs a watcher in every child, and the
  Kafka broker (a JVM) has none;
- the children polling ``os.getppid()``: the same, and a delay of up to the polling period.

The kernel's signal needs nothing in the child, works for any executable (it survives ``exec``, but
for a set-user-ID or set-group-ID program), and comes at once.

What to know:

- The signal comes when the *thread* that started the child ends, not when the process does:
  start such children from a thread that lives as long as they should (``streamrl dev`` starts
  and restarts every child from the thread that runs it), never from a short-lived thread or a
  thread pool's.
- Only the child gets it; the child's own children (its process group) are its to stop, as when
  the parent stops it.
- ``preexec_fn`` runs Python code in the forked child before ``exec``, which the Python docs warn
  may deadlock when the parent has threads (a lock another thread held at the fork is never
  released in the child). What runs there takes no lock: three C library calls resolved in the
  parent beforehand (``signal``, ``prctl``, ``getppid``: no import, no logging, no allocation
  that could wait on another thread), which is how Ray starts its workers.
- A parent that died between the fork and the ``prctl`` sends nothing: the child checks its parent
  after the ``prctl`` and, if it is already another process, exits before ``exec``.
- Linux only: elsewhere (macOS has no ``prctl``; its ``kqueue`` process events would need code in
  every child) :func:`die_with_parent` returns None, :func:`unsupported_reason` says why, and a
  child outlives a killed parent as before.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent dies (``<linux/prctl.h>``)."""


@functools.cache
def _libc() -> tuple[Any, Any, Any] | str:
    """``(signal, prctl, getppid)`` of the C library, or why there are none."""
    if not sys.platform.startswith("linux"):
        return f"{sys.platform} has no prctl(PR_SET_PDEATHSIG)"
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library this Python runs on
        c_signal, prctl, getppid = libc.signal, libc.prctl, libc.getppid
    except (OSError, AttributeError) as exc:
        return f"cannot find prctl in the C library: {exc}"
    c_signal.argtypes, c_signal.restype = [ctypes.c_int, ctypes.c_void_p], ctypes.c_void_p
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    getppid.argtypes, getppid.restype = [], ctypes.c_int
    return c_signal, prctl, getppid


def unsupported_reason() -> str | None:
    """Why :func:`die_with_parent` gives nothing on this platform (None: it works here)."""
    found = _libc()
    return found if isinstance(found, str) else None


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``sig`` when the thread calling
    this (and then ``Popen``) ends, this process's death included (see the module docstring).

    Call it in the thread that starts the child, right before ``Popen`` (it records this process's
    pid, which the child compares with its parent's).

    Returns:
        The function, or None where the platform has no ``prctl`` (:func:`unsupported_reason`):
        ``Popen(preexec_fn=None)`` starts the child as it would without it.
    """
    found = _libc()
    if isinstance(found, str):
        return None
    c_signal, prctl, getppid = found
    parent = os.getpid()
    signum = int(sig)

    def preexec() -> None:
        # in the forked child, before exec: C calls only (no lock another thread may have held)
        c_signal(signum, None)  # SIG_DFL: the parent's handler would swallow a signal before the exec
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)  # fails only for an invalid signal number
        if getppid() != parent:  # the parent died before the prctl: no signal will come
            os._exit(128 + signum)

    return preexec
