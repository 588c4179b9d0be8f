"""Bytes beside FLOPs, the roofline the report reads them against, and compiling as an
axis (backends): what is counted, what is bounded, and what a compiled row may claim."""

import json
import math

import pandas as pd
import pytest
import torch

from harness.grid import GRID, Config, backends_for, essential, grid
from harness.measure.counting import count_work, touched_bytes
from harness.report.load import load_sources
from harness.report.sections import compilation, work
from harness.report.tables import main_rows
from harness.table import COLUMNS

from .test_report import runs_around


def test_bytes_are_what_each_op_reads_and_writes_and_views_move_none():
    x, y = torch.randn(1000), torch.randn(1000)
    assert count_work(lambda: x + y, "cpu", memory=False).moved == 3 * 4000
    a, b = torch.randn(30, 20), torch.randn(20, 10)
    assert count_work(lambda: a @ b, "cpu", memory=False).moved == 4 * (600 + 200 + 300)
    assert count_work(lambda: a.t().reshape(-1)[:5], "cpu", memory=False).moved == 4 * 600 + 4 * 600  # one copy
    assert count_work(lambda: a.view(600), "cpu", memory=False).moved == 0
    # a broadcast operand is read once, not once per use
    assert touched_bytes(torch.randn(10).expand(50, 10)) == 40


def test_the_numba_loop_only_where_a_kernel_exists_and_default_picks_it():
    assert backends_for("maf", "incremental", "sample", "cpu", ["default"]) == ["numba"]
    assert backends_for("maf", "incremental", "sample", "cuda", ["default"]) == ["eager"]
    assert backends_for("maf", "direct", "log_prob", "cpu", ["eager", "numba", "compile"]) == ["eager", "compile"]
    assert backends_for("maf", "incremental", "train_step", "cpu", ["numba"]) == []
    assert backends_for("bnaf", "newton", "sample", "cpu", ["default"]) == ["numba"]
    assert backends_for("naf", "bisection", "sample", "cpu", ["default", "eager"]) == ["numba", "eager"]
    assert backends_for("bnaf", "fixed-point", "sample", "cpu", ["default", "numba"]) == ["eager"]  # no kernel
    entries = grid(Config(models=("maf",), dims=(8,), ops=("sample",), solvers=("default",), device="cpu"))
    assert [dict(zip(GRID, e))["backend"] for e in entries] == ["numba"]
    assert essential("maf", "incremental", 8, 1024, "sample", "numba")
    assert not essential("maf", "incremental", 8, 1024, "sample", "eager")
    with pytest.raises(ValueError, match="unknown backend 'jit'; allowed: default, eager, numba, compile"):
        Config(backends=("jit",)).validate()


def _rows(path, rows, roofline):
    path.mkdir(parents=True)
    base = dict(device="cpu", batch=1000, kind="parallel", status="ok", threads=1, dtype="float32", source="sweep")
    base.update(commit="abc", library="ours", iqr_s=1e-6, runs=5, round_group="g", params_stored=1)
    base.update(params_effective=1, peak_mem_bytes=2**20, family="")
    pd.DataFrame([dict(base, **r) for r in rows], columns=COLUMNS).to_csv(path / "results.csv", index=False)
    (path / "meta.json").write_text(json.dumps({"commit": "abc", "roofline": {"cpu": roofline}}))
    return path


def test_each_op_is_read_against_its_own_sweeps_ceilings(tmp_path):
    common = dict(model="maf", dim=8, solver="direct", backend="eager", median_s=1e-3, round_s=runs_around(1e-3))
    low = dict(common, op="log_prob", flops=1e6, bytes_moved=1e6)  # 1 FLOP/B: memory-bound at 50 GB/s
    high = dict(common, op="train_step", flops=5e7, bytes_moved=1e6)  # 50 FLOP/B: compute-bound at 100
    rates = {"gemm_gflops": 100.0, "cache_gbps": 50.0, "copy_gbps": 10.0}
    a = _rows(tmp_path / "a", [low, high], rates)
    b = _rows(tmp_path / "b", [dict(low, model="iaf")], dict(rates, cache_gbps=5.0))
    src = load_sources([a, b])
    roof = work.roofline(src.rows, src).set_index(["model", "op"])
    # 1 GFLOP/s achieved; bounds min(100, 50 x 1) and min(100, 100 x 50)
    assert roof.loc[("maf", "log_prob"), "bound_gflops"] == pytest.approx(50)
    assert roof.loc[("maf", "log_prob"), "percent_of_bound"] == pytest.approx(2)
    assert roof.loc[("maf", "log_prob"), "limit"] == "memory (cache)"
    assert roof.loc[("maf", "train_step"), "percent_of_bound"] == pytest.approx(50)
    assert roof.loc[("maf", "train_step"), "limit"] == "compute"
    assert roof.loc[("iaf", "log_prob"), "bound_gflops"] == pytest.approx(5)  # its own sweep's rate
    lines = "\n".join(work.render(src, tmp_path))
    assert "![roofline](roofline_cpu_b1000.png)" in lines and (tmp_path / "roofline_cpu_b1000.png").is_file()


def test_a_sweep_without_bytes_gets_its_table_and_no_roofline_figure(tmp_path):
    """A folder from before bytes were counted (or with --no-flops) still has its rates."""
    row = dict(model="maf", dim=8, op="log_prob", solver="direct", backend="eager", median_s=1e-3, flops=1e6)
    src = load_sources([_rows(tmp_path / "old", [dict(row, round_s=runs_around(1e-3))], {"gemm_gflops": 100.0})])
    lines = "\n".join(work.render(src, tmp_path))
    assert "## Size and work on cpu" in lines and "![roofline]" not in lines
    assert not list(tmp_path.glob("roofline_*.png"))


def test_compiling_pays_only_past_its_interval_and_counts_calls_to_pay(tmp_path):
    common = dict(model="naf", dim=16, op="log_prob", solver="direct", flops=1e6, bytes_moved=1e6)
    rows = [
        dict(common, backend="eager", median_s=0.03, round_s=runs_around(0.03)),
        dict(common, backend="compile", median_s=0.02, round_s=runs_around(0.02), compile_s=5.0),
        dict(common, dim=64, backend="eager", median_s=0.1, round_s=runs_around(0.1)),
        dict(common, dim=64, backend="compile", median_s=0.1, round_s=runs_around(0.1), compile_s=9.0),
    ]
    src = load_sources([_rows(tmp_path / "s", rows, {"gemm_gflops": 100.0})])
    found = compilation.comparisons(src)
    verdicts = {int(c["dim"]): said for _, c, _, said in found}
    assert verdicts == {16: "pays", 64: "no clear difference"}
    assert compilation.pays_after(0.03, 0.02, 5.0) == 500
    assert math.isinf(compilation.pays_after(0.1, 0.1, 9.0))
    table = compilation.table(found)
    assert list(table["pays after (calls)"]) == ["500", ""]
    (finding,) = compilation.findings(src)
    assert "faster than eager in 1 of 2 configurations" in finding.text and "500 calls" in finding.text
    # the default rows of the time tables are each configuration's default backend only
    assert set(main_rows(src.rows)["backend"]) == {"eager"}


@pytest.mark.slow
def test_a_compiled_measurement_records_its_compile_seconds_apart(monkeypatch):
    """The bookkeeping of a compiled measurement: its compile seconds apart, the graphs
    counted until they settle, the eager ops of the same call counted. Dynamo captures
    the graphs with its eager backend here: inductor's C++ builds (~20 s of a fresh
    machine's first compile) are measured by make compile, not in the suite."""
    import torch

    from harness.measure.call import Settings, measure
    from harness.models import build

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **keywords: real(fn, backend="eager", **keywords))

    flow = build("made", 2).eval()
    row, _ = measure(flow, "log_prob", "cpu", 64, Settings(budget_s=5, min_run_time=0.05), backend="compile")
    assert row["status"] == "ok" and row["compile_s"] >= 0 and row["median_s"] > 0
    assert row["flops"] > 0 and row["bytes_moved"] > 0  # the eager ops of the same call, counted
