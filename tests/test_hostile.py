"""Hostile folders: what the harness writes stays inside its folder, whatever a table
says or a planted link points to; what it reads by a name from a table must lie inside
the folder the table came from."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.records import Appender, inside, write_text
from harness.report import build_report

from .test_report import _two_families


def test_a_link_planted_at_a_temporary_or_final_name_is_never_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".REPORT.md.tmp").symlink_to(outside)  # the temporary name the writer used to use
    (folder / "REPORT.md").symlink_to(outside)  # the final name
    write_text(folder / "REPORT.md", "new")
    assert outside.read_text() == "keep"
    assert not (folder / "REPORT.md").is_symlink() and (folder / "REPORT.md").read_text() == "new"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_a_table_behind_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\r\n")
    (tmp_path / "results.csv").symlink_to(outside)
    with pytest.raises(UserError, match="symbolic link"):
        Appender(tmp_path / "results.csv", ["a", "b"], new=False)
    assert outside.read_bytes() == b"a,b\r\n"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "nll/../../x.npy"])
def test_a_name_read_from_a_table_must_stay_in_its_folder(tmp_path, name):
    with pytest.raises(UserError, match="leads outside"):
        inside(tmp_path, name, "nll_file")
    assert inside(tmp_path, "nll/a.npy", "nll_file") == (tmp_path / "nll" / "a.npy").resolve()


@pytest.mark.slow
def test_a_device_value_with_dot_dot_writes_no_figure_outside_out(tmp_path):
    src = _two_families(tmp_path / "src")
    table = pd.read_csv(src / "results.csv")
    table["device"] = "../../escaped"
    table.to_csv(src / "results.csv", index=False)
    out = tmp_path / "deep" / "er" / "out"
    out.mkdir(parents=True)
    planted = tmp_path / "planted.png"
    planted.write_bytes(b"keep")
    before = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out}
    build_report([src], out, paper=False)
    after = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out}
    assert after == before and planted.read_bytes() == b"keep"
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert os.listdir(out)


def test_a_figure_named_from_table_values_lands_in_its_folder(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report import plots

    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    fig, _ = plt.subplots()
    names = plots.save(fig, out, "roofline_../../escaped_b64")  # as the roofline's stem with a hostile device
    assert names == ["roofline_.._.._escaped_b64.png", "roofline_.._.._escaped_b64.svg"]
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["roofline_.._.._escaped_b64.png"]
    assert (out / names[0]).read_bytes().startswith(b"\x89PNG")


TURNS_NAN = """
import torch
from examples.linear_flow import LinearFlow


class TurnsNaN(LinearFlow):
    calls = 0

    def log_prob(self, x):
        TurnsNaN.calls += 1
        out = super().log_prob(x)
        return out if TurnsNaN.calls == 1 else out * float("nan")


def make(dim):
    return TurnsNaN(dim)
"""


def _user_module(tmp_path: Path, monkeypatch, name: str, source: str) -> str:
    """Writes ``source`` as the user module ``name`` (importable, as examples are);
    returns its factory's spec."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))
    return f"{name}:make"


def test_a_flow_whose_outputs_turn_nan_after_the_checked_call_is_an_error_row(tmp_path, monkeypatch):
    import sys

    from harness import registry
    from harness.measure.call import Settings, measure, measure_together, prepare

    spec = _user_module(tmp_path, monkeypatch, "turns_nan", TURNS_NAN)
    settings = Settings(budget_s=10, min_run_time=0.02, flops=False, memory=False)
    row, _ = measure(registry.build_any(spec, 3), "log_prob", "cpu", 16, settings)
    assert row["status"] == "error" and "after" in row["reason"] and "finite" in row["reason"], row
    sys.modules["turns_nan"].TurnsNaN.calls = 0
    _, ready = prepare(registry.build_any(spec, 3), "log_prob", "cpu", 16, settings)
    (columns,) = measure_together({"k": ready}, "cpu", settings).values()
    assert columns["status"] == "error" and "after" in columns["reason"], columns


@pytest.mark.slow
def test_foreign_tables_are_one_line_and_nothing_is_cut(tmp_path):
    import shutil

    from harness.__main__ import main
    from harness.records import read_table, repair

    cr = tmp_path / "cr.csv"
    cr.write_bytes(b"a,b\r1,2\r3,4")
    with pytest.raises(UserError, match="CR alone"):
        repair(cr)
    assert cr.read_bytes() == b"a,b\r1,2\r3,4"
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b\n" + "x" * 200_000 + ",1\n")
    with pytest.raises(UserError, match="not a table this harness wrote"):
        read_table(wide)
    src = _two_families(tmp_path / "src")
    table = pd.read_csv(src / "results.csv")
    table.loc[0, "median_s"] = float("nan")
    table.to_csv(src / "results.csv", index=False)
    assert main(["report", str(src), "--out", str(tmp_path / "out")]) == 2
    ROOT = Path(__file__).parents[1]
    assert main(["compare", str(ROOT / "reports" / "gpu"), str(ROOT / "reports" / "cpu")]) == 2  # two schemas
    good = _two_families(tmp_path / "good")
    twice = tmp_path / "twice"
    main(["report", str(good), str(good), "--out", str(twice), "--no-figures"])
    once = tmp_path / "once"
    main(["report", str(good), "--out", str(once), "--no-figures"])
    assert (twice / "REPORT.md").read_text().count("| maf ") == (once / "REPORT.md").read_text().count("| maf ")
    shutil.rmtree(once)


CHANGES_DTYPE = """
import torch
from examples.linear_flow import LinearFlow


class ChangesDtype(LinearFlow):
    def log_prob(self, x):
        torch.set_default_dtype(torch.float64)  # a careless flow
        return super().log_prob(x)


def make(dim):
    return ChangesDtype(dim)
"""


def test_a_flow_that_changes_torch_settings_is_named_and_nothing_after_it_inherits_them(tmp_path, monkeypatch):
    import torch

    from harness import registry
    from harness.measure.call import Settings
    from harness.measurer import said_changed

    flow = registry.build_any(_user_module(tmp_path, monkeypatch, "changes_dtype", CHANGES_DTYPE), 3)
    from harness.measure.call import measure

    row, _ = measure(flow, "log_prob", "cpu", 16, Settings(budget_s=10, min_run_time=0.02, flops=False, memory=False))
    assert torch.get_default_dtype() == torch.float32  # set back after each call
    assert row["status"] == "ok"
    assert "default dtype" in said_changed(flow, row)["reason"]


def test_a_change_to_a_helper_a_user_flow_imports_changes_the_code_version(tmp_path, monkeypatch):
    from harness import env

    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("SCALE = 1\n")
    (pkg / "flows.py").write_text("from .helpers import SCALE\n\ndef make(dim):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    env.code_version.cache_clear()
    before = env.code_version("mypkg.flows:make")
    (pkg / "helpers.py").write_text("SCALE = 2\n")
    env.code_version.cache_clear()
    assert env.code_version("mypkg.flows:make") != before  # counts cached under the old code are not reused


def test_the_same_code_has_the_same_version_wherever_it_is_checked_out(tmp_path, monkeypatch):
    """Counts are cached under the code's version: a clone in another folder reuses
    them (reports/cpu/counts.json), as does a change to another family's module; a change
    to the code measured does not."""
    import shutil

    from harness import env

    versions = []
    for where in ("a", "b/deeper"):
        copy = tmp_path / where / "harness"
        shutil.copytree(env.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setattr(env, "PACKAGE", copy)
        env.code_version.cache_clear()
        versions.append(env.code_version("maf"))
    (copy / "models" / "bnaf.py").write_text((copy / "models" / "bnaf.py").read_text() + "\n# changed\n")
    env.code_version.cache_clear()
    versions.append(env.code_version("maf"))  # another family's module: not the code maf's counts ran
    (copy / "models" / "masked.py").write_text((copy / "models" / "masked.py").read_text() + "\n# changed\n")
    env.code_version.cache_clear()
    versions.append(env.code_version("maf"))  # a module maf.py imports: the code changed
    env.code_version.cache_clear()
    assert versions[0] == versions[1] == versions[2] != versions[3]


def test_a_command_refuses_a_folder_another_is_writing_before_it_measures(tmp_path):
    from harness import store
    from harness.__main__ import main

    with store.lock(tmp_path, "sweep", "measuring"):
        assert main(["solvers", "--models", "maf", "--dims", "2", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "solvers.csv").exists()


@pytest.mark.slow
def test_the_solver_ab_writes_each_model_as_measured_and_resumes(tmp_path):
    """A model and d killed at its deadline is a timeout row, written at once; --resume
    measures it again and keeps what finished; a new run moves the table aside."""
    from harness import algorithms, store
    from harness.table import OK, SOLVERS, TIMEOUT, Col

    algorithms.main(["maf"], [2], batch=8, rounds=2, out=tmp_path, progress=False, deadline_s=0.001)
    (row,) = store.read_table(tmp_path / SOLVERS)
    assert row[Col.STATUS] == TIMEOUT and "killed after" in row[Col.REASON]
    rows = algorithms.main(["maf"], [2], batch=8, rounds=2, out=tmp_path, progress=False, resume=True)
    assert {r[Col.STATUS] for r in rows} == {OK} and len(rows) == len(store.read_table(tmp_path / SOLVERS)) > 1
    again = algorithms.main(["maf"], [2], batch=8, rounds=2, out=tmp_path, progress=False, resume=True)
    assert again == store.read_table(tmp_path / SOLVERS)  # nothing measured twice
    with pytest.raises(UserError, match="batch 8, not 16"):
        algorithms.main(["maf"], [2], batch=16, out=tmp_path, progress=False, resume=True)
    algorithms.main(["maf"], [2], batch=8, rounds=2, out=tmp_path, progress=False, deadline_s=0.001)
    (aside,) = (tmp_path / "previous").iterdir()
    assert len(store.read_table(aside / SOLVERS)) == len(rows)


@pytest.mark.parametrize(
    "file, value, message",
    [
        ("meta.json", {"config": []}, "'config' holds [], not an object"),
        ("meta.json", {"load_start": "x"}, "'load_start' holds \"x\", not a list of numbers"),
        ("meta.json", {"roofline": {"cpu": 3}}, "'roofline.cpu' holds 3, not an object"),
        ("meta.json", {"cpu_count": -1}, "'cpu_count' holds -1, not a whole number above 0"),
        ("counts.json", {"maf|2": {"flops": "x"}}, "'maf|2.flops' holds \"x\", not a number"),
    ],
)
def test_a_settings_file_of_another_shape_is_one_line(tmp_path, file, value, message):
    """Every reader of a settings file refuses another shape in one line naming file and
    key (report, resume, compare), and nothing on disk changes."""
    import json
    import shutil

    from harness.__main__ import main

    src = _two_families(tmp_path / "src")
    shutil.copy2(Path(__file__).parents[1] / "reports" / "cpu" / "meta.json", src / "meta.json")
    path = src / file
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **value}))
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    if file == "meta.json":
        assert main(["report", str(src), "--out", str(tmp_path / "out"), "--no-paper"]) == 2
    from harness.records import read_json
    from harness.table import COUNTS_SHAPE, META_SHAPE

    with pytest.raises(UserError, match=re.escape(message)):
        read_json(path, shape=META_SHAPE if file == "meta.json" else COUNTS_SHAPE)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


def test_asv_files_of_another_shape_are_one_line(tmp_path):
    import json
    import shutil

    from harness.asv_results import read

    folder = tmp_path / "asv"
    shutil.copytree(Path(__file__).parent / "fixtures" / "asv_results", folder)
    index = json.loads((folder / "benchmarks.json").read_text())
    name = next(k for k in index if k != "version")
    for change, message in [
        ({name: {**index[name], "params": None}}, "not a list of lists of text"),
        ({name: {**index[name], "param_names": []}}, "parameters for"),
        ({name: {**index[name], "unit": []}}, f"'{name}.unit' holds []"),
    ]:
        (folder / "benchmarks.json").write_text(json.dumps({**index, **change}))
        with pytest.raises(UserError, match=re.escape(message)):
            read(folder)
    (folder / "benchmarks.json").write_text(json.dumps(index))
    result = next((folder / "ci-box").glob("aaaa*.json"))
    data = json.loads(result.read_text())
    result.write_text(json.dumps({**data, "commit_hash": [1, 2]}))
    with pytest.raises(UserError, match="'commit_hash' holds"):
        read(folder)
