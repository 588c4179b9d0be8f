"""Measuring in a worker process with a hard deadline, the way asv isolates benchmarks.

One long-lived worker imports torch once and measures configuration after
configuration; a configuration that outlives its deadline is killed with the worker,
which is started anew for the next one. The parent never blocks on a call it cannot
stop, and a crash of the worker (a segfault, out of memory) costs one row, not the sweep.

A worker is forked from a fork server that imported torch and the harness once and ran
no op (a start costs milliseconds, not the 2-3 s of importing torch anew), or, with
``fresh``, spawned as a new interpreter: where a process's own code layout and
allocations are what the trials sample (the intervals over processes of ``sweep
--processes`` and ``compare --run``). The fork server takes the parent's environment as
it was when it started; each worker is given the parent's current one.

The worker dies with its parent: the kernel kills it when the process that started it
dies (Linux's parent-death signal; the fork server ends with the parent), and a
watchdog thread does where that is not available. While it lives it holds a lock file
in the run's folder, so a resumed run can wait until no orphan of an earlier one shares
the machine (:func:`harness.store.wait_free`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import store

PR_SET_PDEATHSIG = 1


class WorkerDied(RuntimeError):
    """The worker exited without answering (a crash, or killed from outside)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (the pid was reused): treated as alive
        return True
    return True


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies: prctl on Linux (fired when the process
    that forked this one dies: the parent, or the fork server that ends with it), and a
    watchdog thread that polls both everywhere (the signal cannot be missed either way)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError, TypeError):
        pass
    starter = os.getppid()  # the parent, or the fork server
    if not _alive(parent) or starter == 1:  # died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == starter and _alive(parent):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _serve(
    conn, make: Callable[[], Callable[[Any], Any]], parent: int, lock_path: str | None, environ: dict[str, str]
) -> None:
    _die_with_parent(parent)
    if os.environ != environ:  # the fork server's environment is the parent's as it was at its start
        os.environ.clear()
        os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C ends
    if lock_path is not None and store.hold(Path(lock_path), "measuring worker") is None:
        os._exit(3)  # the worker before this one still holds it: it is being reaped
    try:
        handle = make()
        conn.send("ready")
        while True:
            task = conn.recv()
            if task is None:
                return
            conn.send(handle(task))
    except (EOFError, OSError):  # the parent is gone: nobody to answer
        os._exit(0)


# What the fork server imports once (no op runs there: no thread pool, no allocation to inherit)
PRELOAD = ["torch", "harness.measure.call", "harness.models", "harness.registry"]


def _fork_server():
    """The fork-server context, its imports set before it first starts."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class Worker:
    """Runs ``make()(task)`` in a child process; ``run(task, timeout)`` returns its answer,
    or None when the deadline passed (the child is then killed). ``lock_path``: a file
    the child holds while it lives; ``fresh``: each child a new interpreter (see the
    module docstring), else forked from the fork server."""

    def __init__(self, make: Callable[[], Callable[[Any], Any]], lock_path: Path | None = None, fresh: bool = False):
        self.make = make
        self.lock_path = None if lock_path is None else str(lock_path)
        self.fresh = fresh
        self.proc: mp.process.BaseProcess | None = None
        self.conn = None
        self.starts = 0  # how many processes were started: what one kept is gone with it

    def _start(self) -> None:
        self.starts += 1
        ctx = mp.get_context("spawn") if self.fresh else _fork_server()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve,
            args=(child, self.make, os.getpid(), self.lock_path, dict(os.environ)),
            daemon=True,
            name="flowbench-worker",
        )
        try:
            self.proc.start()
        except Exception as e:  # spawn's own checks (a script without a __main__ guard)
            self.proc = self.conn = None
            raise WorkerDied(f"the measuring worker could not start: {e}".splitlines()[0]) from e
        child.close()
        try:
            ready = self.conn.poll(300) and self.conn.recv() == "ready"
        except (EOFError, OSError):  # it died while starting
            ready = False
        if not ready:
            self.proc.join(1)  # one that died has its exit code once reaped
            code = self.proc.exitcode
            self.kill()
            raise WorkerDied(f"the measuring worker did not start within 300 s (exit code {code})")

    def run(self, task: Any, timeout: float) -> Any | None:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(task)
        if not self.conn.poll(timeout):
            self.kill()
            return None
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.exitcode if self.proc else None
            self.kill()
            raise WorkerDied(f"the measuring worker died (exit code {code})") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.pid is not None:  # None: it never started
            self.proc.kill()
            self.proc.join()
        self.proc = self.conn = None

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(5)
            except (BrokenPipeError, OSError):
                pass
        self.kill()
