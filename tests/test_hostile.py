"""Hostile folders: what the harness writes stays inside its folder, whatever a table
says or a planted link points to; what it reads by a name from a table must lie inside
the folder the table came from."""

from __future__ import annotations

import os
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


def test_a_flow_whose_outputs_turn_nan_after_the_checked_call_is_an_error_row(tmp_path, monkeypatch):
    import sys

    from harness import registry
    from harness.measure.call import Settings, measure, measure_together, prepare

    (tmp_path / "turns_nan.py").write_text(TURNS_NAN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))
    settings = Settings(budget_s=10, min_run_time=0.02, flops=False, memory=False)
    row, _ = measure(registry.build_any("turns_nan:make", 3), "log_prob", "cpu", 16, settings)
    assert row["status"] == "error" and "after" in row["reason"] and "finite" in row["reason"], row
    sys.modules["turns_nan"].TurnsNaN.calls = 0
    _, ready = prepare(registry.build_any("turns_nan:make", 3), "log_prob", "cpu", 16, settings)
    (columns,) = measure_together({"k": ready}, "cpu", settings).values()
    assert columns["status"] == "error" and "after" in columns["reason"], columns


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
    main(["report", str(good), str(good), "--out", str(twice)])
    once = tmp_path / "once"
    main(["report", str(good), "--out", str(once)])
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

    (tmp_path / "changes_dtype.py").write_text(CHANGES_DTYPE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))
    flow = registry.build_any("changes_dtype:make", 3)
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


def test_a_command_refuses_a_folder_another_is_writing_before_it_measures(tmp_path):
    from harness import store
    from harness.__main__ import main

    with store.lock(tmp_path, "sweep", "measuring"):
        assert main(["solvers", "--models", "maf", "--dims", "2", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "solvers.csv").exists()
