import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Two pytest workers share the machine's cores: one intra-op thread each, here and in
# every subprocess (an OpenMP thread spinning for a core another process holds makes
# a NAF sample 30x slower on a loaded machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` in a fresh process, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb(model: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Adds Gaussian noise to every parameter, so tests see non-trivial weights (biases
    and scales move off their constant inits too).

    The noise is relative to each tensor's own spread (at least 0.1): absolute noise
    larger than a layer's init scale turns hypernetwork outputs into shifts that grow
    with |x| and compound over layers, pushing the mass and the roots out of floating
    range - a property of that random draw, not of the flow.
    """
    with torch.no_grad():
        for p in model.parameters():
            spread = max(float(p.std()) if p.numel() > 1 else 0.0, 0.1)
            p.add_(scale * spread * torch.randn_like(p))
    return model


class Forked:
    """``python -m harness`` started as a forked child of tests/forker.py (a process that
    imported the harness once): ``start`` gives its pid (also its process group's),
    ``poll`` its exit code or None, ``wait`` waits for it."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "forker.py")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, *args: str, stdout: Path | None = None, stderr: Path | None = None, sigint: bool = False) -> int:
        files = dict(stdout=str(stdout or os.devnull), stderr=str(stderr or os.devnull))
        return self._ask(do="start", argv=list(args), sigint=sigint, **files)["pid"]

    def poll(self, pid: int) -> int | None:
        return self._ask(do="poll", pid=pid)["code"]

    def wait(self, pid: int, timeout: float = 120) -> int:
        deadline = time.time() + timeout
        while (code := self.poll(pid)) is None:
            if time.time() > deadline:
                raise TimeoutError(f"harness run {pid} did not end within {timeout} s")
            time.sleep(0.02)
        return code

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="session")
def forked():
    runner = Forked()
    yield runner
    runner.close()


# Longest modules first: the workers take whole modules (--dist loadscope) in this order
# (--no-loadscope-reorder), so the last module to start is a short one and no worker
# idles while another runs a long module alone. The seconds are the last recorded run's
# (`make test-timed` writes them); a module not yet recorded goes first.
SECONDS = ROOT / "tests" / "seconds.json"


def pytest_addoption(parser):
    parser.addoption("--record-seconds", action="store_true", help=f"write each module's seconds to {SECONDS.name}")


def pytest_collection_modifyitems(config, items):
    recorded = json.loads(SECONDS.read_text()) if SECONDS.exists() else {}
    first = max(recorded.values(), default=0.0) + 1.0
    items.sort(key=lambda item: -recorded.get(item.nodeid.split("::")[0], first))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not config.getoption("--record-seconds") or exitstatus != 0 or hasattr(config, "workerinput"):
        return
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                module = report.nodeid.split("::")[0]
                seconds[module] = seconds.get(module, 0.0) + report.duration
    ordered = dict(sorted(((m, round(s, 1)) for m, s in seconds.items()), key=lambda kv: -kv[1]))
    SECONDS.write_text(json.dumps(ordered, indent=1) + "\n")
