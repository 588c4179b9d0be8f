"""asv: the results reader on a checked-in fixture, and a real asv run read back."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.asv_results import read

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "asv_results"


def test_reader_flattens_parameters_in_product_order():
    df = read(FIXTURE)
    t = df[(df["benchmark"] == "bench_time.LogProb.time_log_prob") & (df["commit"].str.startswith("aaaa"))]
    assert list(zip(t["model"], t["dim"], t["device"])) == [
        (m, d, dev) for m in ("maf", "bnaf") for d in (2, 8) for dev in ("cpu", "cuda")
    ]
    row = t[(t["model"] == "maf") & (t["dim"] == 8) & (t["device"] == "cpu")].iloc[0]
    assert row["value"] == 0.0030 and row["unit"] == "seconds" and row["status"] == "ok"
    assert row["op"] == "log_prob" and row["median_s"] == 0.0030
    assert row["params"] == "model=maf, dim=8, device=cpu"
    assert row["machine"] == "ci-box" and row["env"] == "virtualenv-py3.11-torch2.13.0"


def test_reader_marks_skipped_and_failed():
    df = read(FIXTURE)
    t = df[df["benchmark"] == "bench_time.LogProb.time_log_prob"]
    assert set(t[t["device"] == "cuda"]["status"]) == {"skipped"}  # NaN
    failed = t[t["status"] == "error"]  # null
    assert len(failed) == 1 and failed.iloc[0]["commit"].startswith("bbbb")
    assert failed.iloc[0][["model", "dim", "device"]].tolist() == ["bnaf", 8, "cpu"]


def test_reader_keeps_track_results_and_units():
    df = read(FIXTURE)
    p = df[df["benchmark"] == "bench_size.Params.track_params_stored"]
    assert len(p) == 8 and set(p["unit"]) == {"parameters"} and set(p["status"]) == {"ok"}
    assert p[(p["model"] == "bnaf") & (p["dim"] == 8)]["value"].tolist() == [8405.0, 8405.0]


def test_reader_rejects_a_folder_without_benchmarks_json(tmp_path):
    with pytest.raises(ValueError, match="no benchmarks.json"):
        read(tmp_path)


def test_asv_conf_installs_the_project_without_deps():
    text = "\n".join(
        line for line in (ROOT / "asv.conf.json").read_text().splitlines() if not line.strip().startswith("//")
    )
    conf = json.loads(text)
    assert conf["environment_type"] == "virtualenv" and conf["benchmark_dir"] == "benchmarks"
    assert conf["matrix"]["req"]["torch"] == ["2.13.0"]
    assert all("--no-deps" in c for c in conf["install_command"] + conf["build_command"])
    assert not any("--force-reinstall" in c for c in conf["install_command"])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_asv_runs_for_real_and_reads_back(tmp_path):
    """asv run --python=same on one small benchmark, one parameter combination skipped."""
    asv = [sys.executable, "-m", "asv"]
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}  # asv keeps its machine file in ~
    results = tmp_path / "results"
    conf = tmp_path / "asv.conf.json"
    text = "\n".join(
        line for line in (ROOT / "asv.conf.json").read_text().splitlines() if not line.strip().startswith("//")
    )
    data = json.loads(text)
    data.update(
        repo=str(ROOT),
        benchmark_dir=str(ROOT / "benchmarks"),
        results_dir=str(results),
        html_dir=str(tmp_path / "html"),
        env_dir=str(tmp_path / "env"),
    )
    conf.write_text(json.dumps(data))
    subprocess.run(
        [*asv, "machine", "--yes", "--machine", "ci", "--config", str(conf)],
        env=env,
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if not commit:
        pytest.skip("not a git checkout")
    bench = [r"track_params_stored\('maf', 2\)", r"time_log_prob\('maf', 2, 'c"]
    run = subprocess.run(
        [
            *asv,
            "run",
            "--config",
            str(conf),
            "--python=same",
            "--quick",
            "--machine",
            "ci",
            "--set-commit-hash",
            commit,
            *[a for b in bench for a in ("--bench", b)],
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    df = read(results)
    ok = df[df["status"] == "ok"]
    params = ok[ok["benchmark"] == "bench_size.Params.track_params_stored"]
    assert params["value"].tolist() == [23060.0] and params["unit"].tolist() == ["parameters"]
    timed = ok[ok["benchmark"] == "bench_time.LogProb.time_log_prob"]
    assert len(timed) == 1 and timed.iloc[0]["unit"] == "seconds" and 0 < timed.iloc[0]["value"] < 1
    cuda = df[(df["benchmark"] == "bench_time.LogProb.time_log_prob") & (df["device"] == "cuda")]
    assert set(cuda["status"]) == {"skipped"}, "the CUDA parameter is skipped (or not selected) here"
    assert set(df["commit"]) == {commit}


def test_an_asv_folder_without_results_says_what_to_run(tmp_path):
    (tmp_path / "benchmarks.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no results; run `make asv-quick`.*--set-commit-hash"):
        read(tmp_path)
    with pytest.raises(ValueError, match=r"no benchmarks.json; run `make asv-quick`"):
        read(tmp_path / "missing")


def _asv_over_sweep(model: str, op: str) -> float:
    """asv's best of five --quick samples (each one call right after setup) over the
    sweep's best run, for the same configuration."""
    import time

    import torch

    from benchmarks import bench_time
    from harness import ops
    from harness.measure.call import Settings, measure
    from harness.models import build

    cls = getattr(bench_time, ops.OPS[op].asv_class)
    best = []
    for _ in range(5):
        bench = cls()
        bench.setup(model, 8, "cpu")
        start = time.perf_counter()
        getattr(bench, ops.OPS[op].asv)(model, 8, "cpu")
        best.append(time.perf_counter() - start)
    torch.manual_seed(0)
    flow = build(model, 8).eval()
    settings = Settings(threads=1, budget_s=30, min_run_time=0.1, flops=False, memory=False)
    solver = flow.solver if flow.cost[op] != "parallel" else "direct"
    backend = ops.default_backend(model, solver, op)  # what the asv benchmark's default model runs
    row, _ = measure(flow, op, "cpu", 256, settings, essential=True, backend=backend)
    return min(best) / min(float(t) for t in row["round_s"].split())


@pytest.mark.slow
@pytest.mark.parametrize("op", ["log_prob", "sample", "train_step"])
def test_an_asv_sample_is_a_warm_call_within_2x_of_the_sweep(op):
    """asv --quick times one call right after setup: setup's warm-up makes that a steady
    call, within 2x of the sweep's time for the same configuration. A shared machine
    can put a burst into either side's best, so each gets three tries (a compile inside
    the timed call measured 200x: no retry hides that; a benchmark that skipped the op,
    below 0.01x). The lower bound is loose: a loaded machine stretches the sweep's rounds
    of a 0.3 s train_step more than asv's single calls (measured 0.39-0.44x then)."""
    for model in ("maf", "iaf", "bnaf"):
        ratios = []
        for _ in range(3):
            ratios.append(_asv_over_sweep(model, op))
            if 0.25 <= ratios[-1] <= 2:
                break
        assert 0.25 <= ratios[-1] <= 2, (model, op, ratios)


@pytest.mark.slow
def test_a_fresh_process_first_asv_sample_is_not_a_compile():
    """The case asv --quick got wrong: IAF's log_prob (the numba loop) in a fresh process,
    one call timed right after setup, within 2x of a steady call of the same process."""
    code = (
        "import time\n"
        "from benchmarks.bench_time import LogProb\n"
        "b = LogProb(); b.setup('iaf', 8, 'cpu')\n"
        "t = time.perf_counter(); b.time_log_prob('iaf', 8, 'cpu'); first = time.perf_counter() - t\n"
        "steady = []\n"
        "for _ in range(5):\n"
        "    t = time.perf_counter(); b.time_log_prob('iaf', 8, 'cpu'); steady.append(time.perf_counter() - t)\n"
        "print(first / sorted(steady)[2])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ratios = []
    for _ in range(3):  # a burst on a shared machine can stretch one sub-ms call; a compile stretches every try
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        ratios.append(float(out.stdout.split()[-1]))
        if ratios[-1] < 2:
            break
    assert ratios[-1] < 2, ratios
