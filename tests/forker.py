"""Runs ``python -m harness ARGS`` as forked children of one process that imported
torch and the harness once (the fault tests start a command many times and kill it:
each start costs milliseconds here, 2-3 s as a new interpreter).

A child is what a fresh ``python -m harness`` would be after its imports: its own
session (so a test can kill it and its workers with ``killpg``), its output in the
files named, Python's SIGINT handler where asked (as from a terminal). No op runs here
before a fork: no thread pool or allocation is inherited.

Protocol, one JSON object a line on stdin, one answer a line on stdout:
``{"do": "start", "argv": [...], "stdout": PATH, "stderr": PATH, "sigint": bool}`` ->
``{"pid": N}``; ``{"do": "poll", "pid": N}`` -> ``{"code": exit code or null}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402, F401  (the imports every start would make)

from harness import measurer, store, sweep  # noqa: E402, F401
from harness.__main__ import main  # noqa: E402


def _child(request: dict) -> None:
    os.setsid()
    # Python's own handler (KeyboardInterrupt), as an interpreter started from a terminal has
    signal.signal(signal.SIGINT, signal.default_int_handler if request.get("sigint") else signal.SIG_IGN)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    code = 1
    try:
        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        if request["do"] == "start":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            answer = {"pid": pid}
        else:
            done, status = os.waitpid(request["pid"], os.WNOHANG)
            answer = {"code": os.waitstatus_to_exitcode(status) if done else None}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
