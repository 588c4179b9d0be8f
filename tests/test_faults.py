"""Never silently wrong, never a lost row: faults, interruptions and bad input."""

import csv
import functools
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from harness import store, sweep
from harness.__main__ import main
from harness.grid import Config
from harness.models import InversionError, build
from harness.table import COLUMNS, key_of

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--models",
    "made,maf",
    "--dims",
    "2,3,4,5",
    "--batch",
    "8",
    "--ops",
    "log_prob,sample",
    "--budget",
    "5",
    "--device",
    "cpu",
    "--no-flops",
    "--no-memory",
    "--no-roofline",
    "--no-progress",
]


def small(**overrides) -> Config:
    base = dict(
        models=("maf",),
        ops=("log_prob", "sample"),
        dims=(2, 3),
        batches=(8,),
        device="cpu",
        budget_s=5.0,
        min_run_time=0.01,
        flops=False,
        memory=False,
        roofline=False,
        isolate=False,
    )
    return Config(**{**base, **overrides})


def _lines(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


# ---- interruptions -----------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_and_repeats_nothing(tmp_path, forked):
    """5 kills mid-sweep, each followed by --resume: the final table holds exactly the
    configurations of an uninterrupted run, once each, every line whole. In-process
    (the parent alone writes the table); each start forked from one process that
    imported the harness, each kill of its whole process group."""
    ref = tmp_path / "ref"
    assert forked.wait(forked.start("sweep", *SMALL, "--no-isolate", "--out", str(ref))) == 0
    expected = sorted(key_of(dict(zip(COLUMNS, r))) for r in _lines(ref / "results.csv")[1:])
    out, results = tmp_path / "killed", tmp_path / "killed" / "results.csv"
    rng = random.Random(0)
    kills = 0
    for _ in range(60):
        before = len(_lines(results)) if results.exists() else 0
        args = ["sweep", *SMALL, "--no-isolate", "--out", str(out)] + (["--resume"] if results.exists() else [])
        pid = forked.start(*args)
        deadline = time.time() + 60
        while time.time() < deadline and forked.poll(pid) is None:  # until it has written something new
            if results.exists() and len(_lines(results)) > before:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))  # then at a random moment: between rows, or inside one
        if forked.poll(pid) is None:
            os.killpg(pid, signal.SIGKILL)
            kills += 1
        forked.wait(pid)
        if kills >= 5:
            break
    assert kills >= 5
    assert forked.wait(forked.start("sweep", *SMALL, "--out", str(out), "--resume")) == 0
    lines = _lines(results)
    assert lines[0] == COLUMNS and all(len(r) == len(COLUMNS) for r in lines)
    assert sorted(key_of(dict(zip(COLUMNS, r))) for r in lines[1:]) == expected


@pytest.mark.slow
def test_ctrl_c_keeps_the_rows_and_says_how_to_go_on(tmp_path, forked):
    # a shell that started the tests in the background ignores SIGINT for its children:
    # the sweep gets the default disposition a terminal gives it
    out, err = tmp_path / "out", tmp_path / "stderr"
    pid = forked.start("sweep", *SMALL, "--out", str(out), stderr=err, sigint=True)
    results = out / "results.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (results.exists() and len(_lines(results)) >= 3):
        time.sleep(0.01)
    os.kill(pid, signal.SIGINT)
    assert forked.wait(pid, timeout=60) == 130
    kept, said = len(_lines(results)) - 1, err.read_text()
    assert f"interrupted: {kept} rows kept" in said and "continue with --resume" in said
    assert "Traceback" not in said


# ---- the results folder is owned --------------------------------------------------


def test_a_worker_that_dies_while_starting_is_named_with_its_exit_code():
    from harness.worker import Worker, WorkerDied

    worker = Worker(functools.partial(os._exit, 7), fresh=True)  # its make() ends the process
    with pytest.raises(WorkerDied, match="exit code 7"):
        worker.run("a task", 10)
    worker.close()  # nothing left to close
    Worker(functools.partial(os._exit, 7)).kill()  # one never started: nothing to kill


def test_a_second_writer_is_refused_and_loses_nothing(tmp_path):
    sweep.run(small(dims=(2,)), tmp_path, progress=False)
    before = (tmp_path / "results.csv").read_text()
    with store.lock(tmp_path, "sweep", "testing"):
        for resume in (False, True):
            message = "is being written by another run \\(sweep, pid \\d+; since .*; testing"
            with pytest.raises(ValueError, match=message):
                sweep.run(small(), tmp_path, resume=resume, progress=False)
    assert (tmp_path / "results.csv").read_text() == before


@pytest.mark.slow
def test_two_sweeps_started_on_one_out_keep_every_row(tmp_path, forked):
    out = tmp_path / "out"
    args = ["sweep", *SMALL, "--dims", "2,3", "--out", str(out)]
    first = forked.start(*args)
    results = out / "results.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not results.exists():
        time.sleep(0.01)
    err = tmp_path / "second.err"
    assert forked.wait(forked.start(*args, stderr=err)) == 2
    assert "being written by another run (sweep, pid" in err.read_text()
    assert forked.wait(first) == 0
    assert len(_lines(results)) == 1 + 2 * 2 * 3


def test_an_existing_table_is_never_deleted(tmp_path):
    sweep.run(small(), tmp_path, progress=False)
    before = (tmp_path / "results.csv").read_text()
    with pytest.raises(ValueError, match="already holds 6 rows: pass --resume .* or --fresh"):
        sweep.run(small(), tmp_path, progress=False)
    assert (tmp_path / "results.csv").read_text() == before
    sweep.run(small(), tmp_path, fresh=True, progress=False)
    (moved,) = (tmp_path / "previous").glob("*/results.csv")
    assert moved.read_text() == before


def test_resume_refuses_other_columns_or_settings(tmp_path):
    sweep.run(small(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings \\(threads: 1 there, 2 now; budget_s: 5.0 there, 9.0 now\\)"):
        sweep.run(small(threads=2, budget_s=9.0), tmp_path, resume=True, progress=False)
    results = tmp_path / "results.csv"
    results.write_text(results.read_text().replace("solver,", "", 1))
    with pytest.raises(ValueError, match="has other columns than this version writes \\(missing: solver"):
        sweep.run(small(), tmp_path, resume=True, progress=False)


# ---- budgets bound everything ------------------------------------------------------


@pytest.mark.slow
def test_a_configuration_past_its_deadline_is_killed_as_timeout(tmp_path):
    config = small(
        models=("bnaf",),
        dims=(16, 32),
        ops=("sample",),
        solvers=("reference",),
        batches=(1024,),
        budget_s=0.01,
        deadline_margin_s=0.05,
        isolate=True,
    )
    start = time.time()
    rows = sweep.run(config, tmp_path, progress=False)
    assert time.time() - start < 60
    assert rows[0]["status"] == "timeout" and "killed after" in rows[0]["reason"]
    assert rows[1]["status"] == "skipped" and rows[1]["reason"] == "timeout already at d=16"


def test_non_finite_output_is_an_error_not_ok(tmp_path, monkeypatch):
    from harness.measure import call

    def nan(model, op, x, context=None):
        return lambda: torch.full((len(x),) if op == "log_prob" else x.shape, float("nan"))

    monkeypatch.setattr(call, "op_call", nan)
    rows = sweep.run(small(isolate=False, dims=(2,)), tmp_path, progress=False)
    assert rows and all(r["status"] == "error" for r in rows)
    assert all("breaks the contract" in r["reason"] and "non-finite values (nan or inf)" in r["reason"] for r in rows)


# ---- one-line errors, exit 2 ------------------------------------------------------


@pytest.mark.parametrize("command", [["sweep", "--quick"], ["report", "reports/cpu"], ["versus"], ["solvers"]])
def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, command):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    start = time.time()
    assert main([*command, "--out", str(a_file / "sub" if command[0] == "sweep" else a_file)]) == 2
    assert "is a file, or lies under one; give a folder" in capsys.readouterr().err
    assert time.time() - start < 10, "refused before measuring"


def test_versus_refuses_a_zero_batch(capsys):
    with pytest.raises(SystemExit) as e:
        main(["versus", "--batch", "0"])
    assert e.value.code == 2 and "expected an int >= 1, got '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_report_names_the_file_with_wrong_columns_and_warns_about_bad_rows(tmp_path, capsys):
    src = tmp_path / "src"
    sweep.run(small(), src, progress=False)
    results = src / "results.csv"
    lines = results.read_text().splitlines()
    results.write_text("\n".join([*lines, lines[-1], lines[-1][:20]]) + "\n")  # a duplicate and a torn row
    with pytest.warns(UserWarning) as warned:
        assert main(["report", str(src), "--out", str(tmp_path / "out"), "--no-paper", "--no-figures"]) == 0
    messages = [str(w.message) for w in warned]
    assert any(m.startswith(f"{results}:9: ") and "row left out" in m for m in messages)
    assert any("1 rows repeat a key" in m for m in messages)
    (src / "results.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(src), "--out", str(tmp_path / "out")]) == 2
    assert f"{str(results)!r} is not a sweep table: no column model" in capsys.readouterr().err


def test_malformed_asv_results_name_the_file(tmp_path, capsys):
    import shutil

    src = tmp_path / "asv"
    shutil.copytree(ROOT / "tests" / "fixtures" / "asv_results", src)
    bad = next((src / "ci-box").glob("aaaa*.json"))
    bad.write_text(json.dumps({"results": {"x": 3}}))
    assert main(["asv-table", str(src)]) == 2
    assert f"{str(bad)!r} does not have asv's results structure" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["asv-table", str(src)]) == 2
    assert f"{str(bad)!r} is not valid JSON" in capsys.readouterr().err


# ---- the models' own faults -------------------------------------------------------


@pytest.mark.slow
def test_inversion_out_of_range_raises_instead_of_returning_garbage():
    torch.manual_seed(0)
    flow = build("naf", 2).eval()
    z = torch.full((16, 2), 1e3)
    z[::2] *= -1
    with pytest.raises(InversionError, match="dimension \\d+: newton did not converge .*tolerance"):
        flow.inverse(z)


@pytest.mark.parametrize("name", ["made", "maf", "iaf", "naf", "bnaf"])
def test_sample_never_returns_non_finite_values(name):
    flow = build(name, 4)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(1e30)
    with pytest.raises((InversionError, ValueError), match="non-finite|did not converge"):
        flow.sample(64)


@pytest.mark.parametrize("name", ["made", "maf", "iaf", "naf", "bnaf"])
def test_empty_batches_give_empty_results(name):
    flow = build(name, 3)
    assert flow.log_prob(torch.zeros(0, 3)).shape == (0,)
    assert flow.inverse(torch.zeros(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_a_wrong_dtype_names_both(dtype):
    with pytest.raises(ValueError, match=f"x has dtype {dtype}, the model torch.float32"):
        build("maf", 3).log_prob(torch.zeros(2, 3, dtype=dtype))


@pytest.mark.parametrize(
    "config, message",
    [
        (dict(flows=None), "flows must be an int >= 1, got None"),
        (dict(hidden=8), "hidden must be a non-empty sequence of ints >= 1, e.g. (64, 64); got 8"),
        (dict(weight_norm="yes"), "weight_norm must be True or False, got 'yes'"),
        (dict(final_affine=1), "final_affine must be True or False, got 1"),
        (dict(solver="euler"), "unknown solver 'euler'; allowed: bisection, newton, fixed-point"),
    ],
)
def test_bad_config_values_are_value_errors(config, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)")):
        build("naf", 3, **config)
