"""Sweeps as submitit jobs (the local executor): the merged table against a direct run,
a parent killed mid-run and resumed, and a report across machines."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import grid, sweep
from harness.__main__ import main
from harness.cluster import Cluster, run
from harness.table import FINISHED, JOBS, KEY, MACHINES, META, RESULTS, Col, key_of

pytest.importorskip("submitit")

ROOT = Path(__file__).parents[1]
ARGS = ["--dims", "2,3", "--ops", "log_prob", "--batch", "8", "--budget", "5", "--device", "cpu"]
ARGS += ["--no-flops", "--no-memory", "--no-roofline", "--no-progress"]


def config(models=("maf", "made")) -> grid.Config:
    dims, ops = (2, 3), ("log_prob",)  # a job per model: two jobs
    return grid.Config(
        models=models,
        dims=dims,
        ops=ops,
        batches=(8,),
        device="cpu",
        budget_s=5.0,
        flops=False,
        memory=False,
        roofline=False,
    )


def rows_of(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    out = tmp_path_factory.mktemp("direct")
    sweep.run(config(), out, progress=False)
    return {key_of(r) for r in rows_of(out / RESULTS)}


def test_jobs_hold_whole_series_and_every_solver_of_a_problem():
    jobs = sweep.jobs(config())
    assert [name for name, _ in jobs] == ["cpu-maf-log-prob-b8", "cpu-made-log-prob-b8"]
    ((name, sample),) = sweep.jobs(dataclasses.replace(config(models=("maf",)), ops=("sample",)))
    assert name == "cpu-maf-sample-b8" and sample.solvers == config().solvers  # every solver of the problem
    for _, job in jobs:
        assert job.dims == (2, 3) and len(job.models) == len(job.ops) == len(job.batches) == 1


@pytest.mark.slow
def test_local_jobs_merge_into_exactly_the_direct_runs_configurations(tmp_path, direct):
    out = tmp_path / "jobs"
    assert (
        main(["sweep", "--models", "maf,made", *ARGS, "--executor", "local", "--max-parallel", "2", "--out", str(out)])
        == 0
    )
    merged = rows_of(out / RESULTS)
    keys = [key_of(r) for r in merged]
    assert len(keys) == len(set(keys)) and set(keys) == direct  # once each, the same configurations
    machines = {r[Col.MACHINE] for r in merged}
    assert len(machines) == 1 and all(machines) and "cores" in next(iter(machines))
    [machine_dir] = (out / MACHINES).iterdir()
    assert len(list((machine_dir / JOBS).iterdir())) == 2
    assert len(rows_of(machine_dir / RESULTS)) == len(merged)
    assert main(["sweep", "--models", "maf,made", *ARGS, "--executor", "local", "--out", str(out)]) == 2  # refused


@pytest.mark.slow
def test_a_killed_parent_resumes_collecting_finished_jobs(tmp_path, direct):
    out = tmp_path / "jobs"
    cmd = [sys.executable, "-m", "harness", "sweep", "--models", "maf,made", *ARGS, "--executor", "local"]
    cmd += ["--max-parallel", "1"]  # one job at a time: the kill comes after the first
    parent = subprocess.Popen([*cmd, "--out", str(out)], cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / MACHINES).glob(f"*/{JOBS}/*/{FINISHED}")):
        time.sleep(0.05)
    os.kill(parent.pid, signal.SIGKILL)  # the parent dies with jobs left to run
    parent.wait()
    finished_before = {p.parent.name for p in (out / MACHINES).glob(f"*/{JOBS}/*/{FINISHED}")}
    assert len(finished_before) == 1
    rows = run(sweep.TRACK, config(), out, Cluster(executor="local", max_parallel=1), resume=True, progress=False)
    keys = [tuple(str(r[k]) for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)) and set(keys) == direct
    assert len({p.parent.name for p in (out / MACHINES).glob(f"*/{JOBS}/*/{FINISHED}")}) == 2


def test_bad_cluster_settings_name_the_value():
    with pytest.raises(ValueError, match="unknown executor 'pbs'; allowed: local, slurm"):
        Cluster(executor="pbs").validate()
    with pytest.raises(ValueError, match="max-parallel must be an int >= 1, got 0"):
        Cluster(max_parallel=0).validate()
    with pytest.raises(ValueError, match="--slurm-partition needs --executor slurm"):
        Cluster(partition="gpu").validate()


@pytest.mark.slow
def test_a_report_over_two_machines_puts_them_side_by_side(tmp_path):
    cpu = tmp_path / "cpu"
    cfg = grid.Config(models=("maf",), dims=(2, 4), ops=("log_prob",), batches=(1024,), device="cpu")
    cfg.flops = cfg.memory = cfg.roofline = False
    cfg.min_run_time, cfg.isolate = 0.02, False
    sweep.run(cfg, cpu, progress=False)
    # the committed GPU folder's MAF log_prob rows, with its meta.json (the whole folder only costs plots)
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    shutil.copy(ROOT / "reports" / "gpu" / META, gpu / META)
    committed = rows_of(ROOT / "reports" / "gpu" / RESULTS)
    with (gpu / RESULTS).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(committed[0]))
        w.writeheader()
        w.writerows(r for r in committed if r[Col.MODEL] == "maf" and r[Col.OP] == "log_prob")
    assert main(["report", str(gpu), str(cpu), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "REPORT.md").read_text()
    section = report.split("## Machines side by side", 1)[1].split("\n## ", 1)[0]
    machine = rows_of(cpu / RESULTS)[0][Col.MACHINE]
    assert "NVIDIA H100 80GB HBM3 ms" in section and f"{machine} ms" in section
    assert "| maf     | 2   | 1024" in section and (tmp_path / "rep" / "machines_log_prob.png").is_file()


def test_slurm_settings_map_to_submitits_parameters(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    from harness.cluster import _executor

    if shutil.which("srun") is None:
        with pytest.raises(ValueError, match="needs a Slurm cluster"):
            _executor(tmp_path, Cluster(executor="slurm"), "cpu", 1, "sweep")
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as on a node with srun

    cluster = Cluster(executor="slurm", partition="gpu", gpus_per_job=1, cpus_per_job=8, max_parallel=4, job_minutes=90)
    executor = _executor(tmp_path, cluster, "cpu", 2, "sweep")
    params = executor._executor.parameters
    assert params["partition"] == "gpu" and params["array_parallelism"] == 4 and params["exclusive"] is True
    assert params["gpus_per_node"] == 1 and params["cpus_per_task"] == 8 and params["time"] == 90


@pytest.mark.slow
def test_a_fit_runs_as_jobs_and_merges_into_a_folder_the_report_reads(tmp_path):
    from harness.table import DENSITIES, FIT

    out = tmp_path / "fit"
    args = [
        "fit",
        "--models",
        "made,maf",
        "--data",
        "eight_gaussians",
        "--seeds",
        "0",
        "--steps",
        "20",
        "--no-progress",
    ]
    assert main([*args, "--executor", "local", "--max-parallel", "2", "--out", str(out)]) == 0
    rows = rows_of(out / FIT)
    assert sorted((r[Col.MODEL], r[Col.DATA]) for r in rows) == [
        ("made", "eight_gaussians"),
        ("maf", "eight_gaussians"),
    ]
    assert all(r[Col.STATUS] == "ok" and r[Col.MACHINE] for r in rows)
    assert all((out / r[Col.CHECKPOINT]).is_file() for r in rows)
    assert (out / DENSITIES / "truth__eight_gaussians.npy").is_file()
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "## Quality" in (tmp_path / "rep" / "REPORT.md").read_text()
