"""The sweep: tidy rows, resume, budgets, errors and the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness import sweep
from harness.__main__ import main
from harness.sweep import COLUMNS, Config, read_rows

ROOT = Path(__file__).resolve().parents[1]


def small(**overrides) -> Config:
    base = dict(models=("maf", "bnaf"), dims=(2, 4), batches=(16,), device="cpu", budget_s=5.0, min_run_time=0.01)
    return Config(**{**base, **overrides})


def test_sweep_writes_a_tidy_table_and_metadata(tmp_path):
    rows = sweep.run(small(), tmp_path, progress=False)
    table = read_rows(tmp_path / "results.csv")
    assert list(table[0]) == COLUMNS
    assert len(table) == len(rows) == 2 * 2 * 2  # models x dims x ops
    assert {(r["model"], r["dim"], r["op"]) for r in table} == {
        (m, str(d), o) for m in ("maf", "bnaf") for d in (2, 4) for o in ("log_prob", "sample")
    }
    for r in table:
        assert r["status"] == "ok", r
        assert float(r["median_s"]) > 0 and float(r["iqr_s"]) >= 0 and int(r["runs"]) >= 3
        assert int(r["params_effective"]) < int(r["params_stored"])
        assert int(r["flops"]) > 0 and int(r["peak_mem_bytes"]) > 0
        assert r["kind"] in ("parallel", "sequential", "iterative") and r["device"] == "cpu"
    meta = json.loads((tmp_path / "meta.json").read_text())
    for key in ("torch", "cpu", "gpu", "threads", "harness_version", "commit", "date"):
        assert key in meta


def test_tiny_budget_skips_with_a_reason(tmp_path):
    rows = sweep.run(small(budget_s=1e-6, flops=False, memory=False), tmp_path, progress=False)
    assert rows and all(r["status"] == "skipped" for r in rows)
    assert all("budget" in r["reason"] for r in rows)
    larger = [r for r in rows if r["dim"] == 4]
    assert all("already at d=2" in r["reason"] for r in larger), "no time is spent above a skipped d"


def test_oom_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    def boom(model, op, device, batch, config, estimate):
        if model.dim == 2 and op == "sample":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if model.dim == 4 and op == "log_prob":
            raise RuntimeError("something else broke")
        return dict(status="ok", reason="", median_s=1e-3, iqr_s=0.0, runs=3)

    monkeypatch.setattr(sweep, "measure", boom)
    rows = sweep.run(small(models=("maf",)), tmp_path, progress=False)
    status = {(r["dim"], r["op"]): (r["status"], r["reason"]) for r in rows}
    assert status[(2, "sample")][0] == "oom"
    assert status[(4, "sample")] == ("skipped", "over budget already at d=2")
    assert status[(4, "log_prob")] == ("error", "RuntimeError: something else broke")
    assert len(read_rows(tmp_path / "results.csv")) == 4


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    args = ["sweep", "--models", "made,maf", "--dims", "2,4,8", "--batch", "8", "--budget", "5",
            "--device", "cpu", "--no-flops", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    results = tmp_path / "results.csv"
    proc = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_rows(results)
    assert 2 <= len(partial) < 12, "killed mid-way, finished rows kept"
    done = _cli(*args, "--resume")
    assert done.returncode == 0, done.stderr
    rows = read_rows(results)
    keys = [sweep.key_of(r) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 3 * 2
    assert rows[: len(partial)] == partial, "resumed rows are kept as they were"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "maf,flowx"], "unknown model 'flowx'; allowed: made, maf, iaf, naf, bnaf"),
        (["--dims", "0,2"], "dims must be ints >= 1"),
        (["--dims", "two"], "dims must be comma-separated ints"),
        (["--ops", "train"], "unknown op 'train'; allowed: log_prob, sample"),
        (["--device", "tpu"], "unknown device 'tpu'; allowed: auto, cpu, cuda"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        code = main(["sweep", "--out", str(tmp_path), *args])
        raise SystemExit(code)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_absent_device_exits_2(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "device 'cuda' is not available here; present: cpu" in capsys.readouterr().err


def test_quick_cli_prints_a_summary(tmp_path):
    out = _cli("sweep", "--quick", "--device", "cpu", "--models", "iaf", "--no-progress", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "| model" in out.stdout and "rows measured" in out.stdout
    assert (tmp_path / "results.csv").exists() and (tmp_path / "meta.json").exists()


def test_budget_estimate_follows_the_local_slope():
    from harness.sweep import estimate_seconds

    assert estimate_seconds([], 16, "parallel") is None
    assert estimate_seconds([(8, 1.0)], 16, "parallel") == pytest.approx(2.0)
    assert estimate_seconds([(8, 1.0)], 16, "sequential") == pytest.approx(4.0)
    # slope 0.26 is raised to 1; slope 4 is capped at 2.5
    assert estimate_seconds([(8, 1.0), (16, 1.2)], 32, "iterative") == pytest.approx(2.4)
    assert estimate_seconds([(8, 1.0), (16, 16.0)], 32, "iterative") == pytest.approx(16 * 2**2.5)


def test_flops_are_left_blank_with_a_reason_for_slow_calls(tmp_path):
    rows = sweep.run(small(models=("maf",), dims=(2,), flops_max_s=1e-9), tmp_path, progress=False)
    assert all(r["status"] == "ok" and "flops" not in r for r in rows)
    assert all(r["reason"].startswith("flops not counted: one call took") for r in rows)
