"""The sweep: tidy rows, resume, budgets, errors and the command line."""

import json
from pathlib import Path

import pytest
import torch

from harness import measurer, sweep
from harness.__main__ import main
from harness.grid import Config
from harness.measure import call
from harness.store import read_table
from harness.table import COLUMNS

from .conftest import cli as _cli

ROOT = Path(__file__).resolve().parents[1]


def small(**overrides) -> Config:
    base = dict(
        models=("maf", "bnaf"), dims=(2, 4), ops=("log_prob", "sample"), batches=(16,), device="cpu", budget_s=5.0
    )
    base["min_run_time"] = 0.01
    return Config(**{**base, **overrides})


@pytest.mark.slow
def test_sweep_writes_a_tidy_table_and_metadata(tmp_path):
    rows = sweep.run(small(ops=("log_prob", "sample", "train_step")), tmp_path, progress=False)
    table = read_table(tmp_path / "results.csv")
    assert list(table[0]) == COLUMNS
    # models x dims x (log_prob, sample with the default and with the reference solver, train_step)
    assert len(table) == len(rows) == 2 * 2 * 4
    assert {(r["model"], r["dim"], r["op"], r["solver"]) for r in table} == {
        (m, str(d), o, s)
        for m, slow in (("maf", ("sequential", "incremental")), ("bnaf", ("bisection", "newton")))
        for d in (2, 4)
        for o, solvers in (("log_prob", ("direct",)), ("sample", slow), ("train_step", ("direct",)))
        for s in solvers
    }
    for r in table:
        assert r["status"] == "ok", r
        assert float(r["median_s"]) > 0 and float(r["iqr_s"]) >= 0 and int(r["runs"]) >= 3
        assert int(r["params_effective"]) < int(r["params_stored"])
        assert int(r["flops"]) > 0 and int(r["peak_mem_bytes"]) > 0 and r["flops_method"] == "torch-dispatch"
        assert r["kind"] in ("parallel", "sequential", "iterative") and r["device"] == "cpu"
        if r["op"] == "sample":  # the solver's counters, and the deviation from the reference
            assert int(r["evaluations"]) >= int(r["dim"]) and int(r["iterations"]) >= 1
            assert float(r["evaluations_per_dim"]) >= 1
            if r["solver"] in ("incremental", "newton"):
                assert 0 <= float(r["max_rel_dev"]) < 1e-3
        else:
            assert r["evaluations"] == r["max_rel_dev"] == ""
    meta = json.loads((tmp_path / "meta.json").read_text())
    for key in ("torch", "cpu", "gpu", "threads", "harness_version", "commit", "date"):
        assert key in meta
    assert meta["roofline"]["cpu"]["gemm_gflops"] > 0
    for key in ("cpu_flags", "load_start", "load_end", "allocator", "dirty", "gpu_driver"):
        assert key in meta, key


@pytest.mark.slow
@pytest.mark.parametrize(
    "solvers, expected",
    [
        (["fixed-point"], {"maf": {"fixed-point"}, "bnaf": {"fixed-point"}}),
        (
            ["all"],
            {"maf": {"sequential", "incremental", "fixed-point"}, "bnaf": {"bisection", "newton", "fixed-point"}},
        ),
        (["incremental"], {"maf": {"incremental"}, "bnaf": set()}),
    ],
)
def test_solvers_pick_each_family_s_own(tmp_path, solvers, expected):
    config = small(dims=(3,), solvers=solvers, ops=("sample",), flops=False, memory=False, roofline=False)
    rows = sweep.run(config, tmp_path, progress=False)
    assert {m: {r["solver"] for r in rows if r["model"] == m} for m in ("maf", "bnaf")} == expected
    assert all(r["status"] == "ok" for r in rows)


@pytest.mark.slow
def test_unknown_solver_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown solver 'gauss'; allowed: default, reference, all, sequential"):
        sweep.run(small(solvers=["gauss"]), tmp_path, progress=False)
    with pytest.raises(ValueError, match="solver 'newton' belongs to no model of this sweep"):
        sweep.run(small(models=("maf",), solvers=["newton"]), tmp_path, progress=False)


@pytest.mark.slow
def test_tiny_budget_skips_with_a_reason(tmp_path):
    config = small(budget_s=1e-6, flops=False, memory=False, roofline=False, solvers=["reference"], ops=("sample",))
    rows = sweep.run(config, tmp_path, progress=False)  # reference solvers: the budget applies
    assert rows and all(r["status"] == "skipped" for r in rows)
    assert all("budget" in r["reason"] for r in rows)
    larger = [r for r in rows if r["dim"] == 4]
    assert all("already at d=2" in r["reason"] for r in larger), "no time is spent above a skipped d"
    # skipped after its checked call: that call's seconds are a column (where the curve goes on)
    called = [r for r in rows if r["dim"] == 2]
    assert called and all(float(r["one_call_s"]) > 0 and "one call took" in r["reason"] for r in called)
    assert all(r.get("one_call_s") in (None, "") for r in larger)


@pytest.mark.slow
def test_oom_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real = measurer.prepare

    def boom(model, op, *args, **kwargs):
        if model.dim == 2 and op == "sample":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if model.dim == 4 and op == "log_prob":
            raise RuntimeError("something else broke")
        return real(model, op, *args, **kwargs)

    monkeypatch.setattr(measurer, "prepare", boom)
    rows = sweep.run(small(models=("maf",), solvers=["default"], isolate=False), tmp_path, progress=False)
    status = {(r["dim"], r["op"]): (r["status"], r["reason"]) for r in rows}
    assert status[(2, "sample")][0] == "oom"
    assert status[(4, "sample")] == ("skipped", "oom already at d=2")
    assert status[(4, "log_prob")] == ("error", "RuntimeError: something else broke")
    assert len(read_table(tmp_path / "results.csv")) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "maf,flowx"], "unknown model 'flowx'; allowed: made, maf, iaf, naf, bnaf"),
        (["--dims", "0,2"], "dims must be ints >= 1"),
        (["--dims", "two"], "dims must be comma-separated ints"),
        (["--ops", "train"], "unknown op 'train'; allowed: log_prob, sample"),
        (["--device", "tpu"], "unknown device 'tpu'; allowed: auto, cpu, cuda"),
        (["--models", ""], "expected a comma list of names, got ''"),
        (["--ops", ","], "expected a comma list of names, got ','"),
        (["--budget", "nan"], "expected a finite number of seconds > 0, got 'nan'"),
        (["--threads", "100000"], "threads must be an int in 1.."),
        (["--dims", "1000000000"], "dim must be an int in 1..65536, got 1000000000"),
        (["--solvers", "gauss"], "unknown solver 'gauss'"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        code = main(["sweep", "--out", str(tmp_path), *args])
        raise SystemExit(code)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_absent_device_exits_2(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "device 'cuda' is not available here; present: cpu" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_cli_prints_a_summary_and_processes_keep_every_round(tmp_path):
    args = ["sweep", "--quick", "--device", "cpu", "--models", "maf,iaf", "--dims", "2", "--solvers", "default"]
    out = _cli(*args, "--rounds", "3", "--processes", "2", "--no-progress", "--no-roofline", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "| model" in out.stdout and "rows measured" in out.stdout and (tmp_path / "meta.json").exists()
    import csv

    rows = [r for r in csv.DictReader(open(tmp_path / "results.csv")) if r["status"] == "ok"]
    assert len(rows) == 4 and all(len(r["round_s"].split()) == 6 and r["runs"] == "6" for r in rows)
    assert len({r["round_group"] for r in rows}) == 1  # paired across both processes, round by round
    assert all(r["flops"] for r in rows)  # counted once, in the first process


def test_budget_estimate_follows_the_counted_work():
    from harness.grid import estimate_seconds

    assert estimate_seconds([], 16) is None
    assert estimate_seconds([(8, 1.0, None)], 16) == pytest.approx(2.0)
    # without FLOPs: the local slope of the times, 0.26 raised to 1, 4 capped at 2.5
    assert estimate_seconds([(8, 1.0, None), (16, 1.2, None)], 32) == pytest.approx(2.4)
    assert estimate_seconds([(8, 1.0, None), (16, 16.0, None)], 32) == pytest.approx(16 * 2**2.5)
    # with FLOPs: the work's own power law (here d^3), whatever the times did
    assert estimate_seconds([(8, 1.0, 1e6), (16, 1.1, 8e6)], 32) == pytest.approx(1.1 * 8)


@pytest.mark.slow
def test_flops_do_not_depend_on_load(tmp_path, monkeypatch):
    """The same configurations counted on a quiet and on a loaded machine (every timed
    call made 20x slower, on the same code path) give identical FLOPs and memory."""
    config = dict(isolate=False, solvers=["default"], budget_s=1e6)  # the budget skips nothing: counts compared
    quiet = sweep.run(small(**config), tmp_path / "quiet", progress=False)
    real_once, real_call = call.time_once, call.time_call

    def slow_once(fn, device):
        return 20 * real_once(fn, device)

    def slow_call(fn, device, **kwargs):
        t = real_call(fn, device, **kwargs)
        return type(t)(20 * t.median_s, 20 * t.iqr_s, t.runs, t.number_per_run, t.threads)

    monkeypatch.setattr(call, "time_once", slow_once)
    monkeypatch.setattr(call, "time_call", slow_call)
    loaded = sweep.run(small(**config), tmp_path / "loaded", progress=False)
    key = lambda r: (r["model"], r["dim"], r["op"], r["solver"])  # noqa: E731
    assert {key(r): (r["flops"], r["peak_mem_bytes"]) for r in quiet} == {
        key(r): (r["flops"], r["peak_mem_bytes"]) for r in loaded
    }
    assert all(r["flops"] > 0 for r in quiet)


def test_the_default_grid_is_measured_whatever_the_budget_and_nothing_else_is(tmp_path):
    """Parallel passes and default solvers of our models at the default dims and batch
    are never cut by the budget; reference solvers, other batches and other dims are."""
    config = small(
        dims=(2, 3), batches=(1024, 16), budget_s=1e-6, flops=False, memory=False, roofline=False, isolate=False
    )
    rows = sweep.run(config, tmp_path, progress=False)
    status = {(r["model"], r["dim"], r["op"], r["solver"], r["batch"]): r["status"] for r in rows}
    for (model, dim, op, solver, batch), st in status.items():
        essential = solver in ("direct", "incremental", "newton") and dim == 2 and batch == 1024
        assert st == ("ok" if essential else "skipped"), (model, dim, op, solver, batch, st)


@pytest.mark.slow
def test_counts_are_cached_per_configuration(tmp_path, monkeypatch):
    sweep.run(small(models=("maf",), dims=(2,), isolate=False), tmp_path, progress=False)
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert len(counts) == 3 and all(c["flops"] > 0 for c in counts.values())
    monkeypatch.setattr(call, "count_work", lambda *a, **k: pytest.fail("counted again"))
    rows = sweep.run(small(models=("maf",), dims=(2,), isolate=False), tmp_path, resume=True, progress=False)
    assert rows == []  # every configuration was there: resume measures nothing
    (tmp_path / "results.csv").write_bytes(b"".join((tmp_path / "results.csv").read_bytes().splitlines(True)[:1]))
    rows = sweep.run(small(models=("maf",), dims=(2,), isolate=False), tmp_path, resume=True, progress=False)
    assert sorted(r["flops"] for r in rows) == sorted(c["flops"] for c in counts.values())
    # --fresh moves the table aside and keeps the cache: counts of unchanged code still hold
    rows = sweep.run(small(models=("maf",), dims=(2,), isolate=False), tmp_path, fresh=True, progress=False)
    assert sorted(r["flops"] for r in rows) == sorted(c["flops"] for c in counts.values())
    (aside,) = (tmp_path / "previous").iterdir()
    assert (aside / "counts.json").exists() and (aside / "results.csv").exists()


def test_cli_help_lists_every_command_and_the_version(capsys):
    from harness import __version__
    from harness.cli import parser

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    commands = parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"models", "sweep", "report", "versus", "solvers", "check", "readme", "asv-table"}
    assert all(name in text for name in commands) and "`" not in text and "flowbench" in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"flowbench {__version__}"
    assert parser().parse_args(["asv-table"]).results_dir == ".asv/results"


def test_models_counts_passes_per_model(capsys):
    assert main(["models", "--dims", "4"]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "parallel: 1 pass " in rows["made"] and "sequential: 1 x d passes" in rows["made"]
    assert "parallel: 5 passes" in rows["maf"]
