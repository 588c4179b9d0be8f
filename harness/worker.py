"""Measuring in a worker process with a hard deadline, the way asv isolates benchmarks.

One long-lived worker imports torch once and measures configuration after
configuration; a configuration that outlives its deadline is killed with the worker,
which is started anew for the next one. The parent never blocks on a call it cannot
stop, and a crash of the worker (a segfault, out of memory) costs one row, not the sweep.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable
from typing import Any


class WorkerDied(RuntimeError):
    """The worker exited without answering (a crash, or killed from outside)."""


def _serve(conn, make: Callable[[], Callable[[Any], Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C ends
    handle = make()
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        conn.send(handle(task))


class Worker:
    """Runs ``make()(task)`` in a child process; ``run(task, timeout)`` returns its answer,
    or None when the deadline passed (the child is then killed)."""

    def __init__(self, make: Callable[[], Callable[[Any], Any]]):
        self.make = make
        self.proc: mp.process.BaseProcess | None = None
        self.conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # a clean interpreter: no forked torch state
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, self.make), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            self.kill()
            raise WorkerDied("the measuring worker did not start within 300 s")

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
        if self.proc is not None:
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
