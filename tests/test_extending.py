"""docs/extending.md's promise: a reference flow, an op, a solver and a report section
each take at most the two files it lists, and then appear in a sweep and a report.

The additions are made in a copy of the package, each through its two files alone, and
measured and reported there by the command line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"


def _files_per_addition() -> dict[str, list[str]]:
    """The files each addition of docs/extending.md lists (its 'Files:' line)."""
    text = DOC.read_text()
    out = {}
    for section in text.split("\n## ")[1:]:
        heading, _, body = section.partition("\n")
        line = next((ln for ln in body.splitlines() if ln.startswith("Files:")), "")
        out[heading.strip()] = re.findall(r"`([^`]+)`", line)
    return out


def test_the_doc_lists_at_most_two_files_per_addition_and_they_exist():
    listed = _files_per_addition()
    assert {"A reference flow", "An op", "A solver", "A report section", "A peer"} <= set(listed)
    for addition, files in listed.items():
        for f in files:
            assert "<name>" in f or (ROOT / f).is_file(), f"{addition}: {f} does not exist"
        # a solver's second file is its family's: maf.py (affine) or invert.py (monotone)
        assert len(files) - (addition == "A solver") <= 2, addition


def _edit(tree: Path, relative: str, old: str, new: str, touched: dict[str, set[str]], addition: str) -> None:
    path = tree / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{relative}: the anchor of the edit is not unique"
    path.write_text(text.replace(old, new))
    touched.setdefault(addition, set()).add(relative)


def _new(tree: Path, relative: str, text: str, touched: dict[str, set[str]], addition: str) -> None:
    (tree / relative).write_text(text)
    touched.setdefault(addition, set()).add(relative)


TOY_FLOW = '''"""A toy reference flow for the extension test: a MADE under another name."""

from .base import Flow
from .made import build_made


def build_toy(dim: int, *, hidden=None, solver: str = "incremental") -> Flow:
    flow = build_made(dim, hidden=hidden, solver=solver)
    flow.family = "toy"
    return flow
'''

TOY_SECTION = '''"""A toy section for the extension test."""

from ..findings import Finding, Value

TITLE = "Toy section"


def render(src, out):
    return [f"## {TITLE}", "", f"{len(src.rows)} rows seen.", ""] if not src.rows.empty else []


def findings(src):
    return [Finding("Toy question", f"answered from {len(src.rows)} rows", TITLE, (Value("rows", len(src.rows)),))]
'''


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    tree = tmp_path_factory.mktemp("tree")
    # numba's cache (in __pycache__, stamped with the sources' copied mtimes) comes along: no kernel recompiles
    shutil.copytree(ROOT / "harness", tree / "harness", ignore=shutil.ignore_patterns("*.pyc"))
    touched: dict[str, set[str]] = {}
    # a reference flow: its module and its family
    _new(tree, "harness/models/toy.py", TOY_FLOW, touched, "flow")
    _edit(
        tree,
        "harness/ops.py",
        "    )\n}\nNAMES = tuple(FAMILIES)",
        '        Family("toy", "a test", SAMPLE, "affine", "harness.models.toy:build_toy", "C7", "*"),\n'
        "    )\n}\nNAMES = tuple(FAMILIES)",
        touched,
        "flow",
    )
    # an op: a data->base pass, timed as flow(x)
    _edit(
        tree,
        "harness/ops.py",
        '        Op(LOG_PROB, "density evaluation",',
        '        Op("forward", "a data->base pass", "data->base", LOG_PROB, "pass", quick=False),\n'
        '        Op(LOG_PROB, "density evaluation",',
        touched,
        "op",
    )
    _edit(
        tree,
        "harness/models/base.py",
        "    if op in OPS:\n        return lambda: run_op(flow, op, x, context)",
        '    if op == "forward":\n        return lambda: flow(x)\n'
        "    if op in OPS:\n        return lambda: run_op(flow, op, x, context)",
        touched,
        "op",
    )
    # a solver of the affine systems: the sequential solve under another name
    _edit(
        tree,
        "harness/ops.py",
        '        Solver("bisection", "monotone",',
        '        Solver("toy", "affine", "", "the sequential solve under another name"),\n'
        '        Solver("bisection", "monotone",',
        touched,
        "solver",
    )
    _edit(
        tree,
        "harness/models/maf.py",
        '"fixed-point": self._fixed_point}',
        '"fixed-point": self._fixed_point, "toy": self._sequential}',
        touched,
        "solver",
    )
    # a report section
    _new(tree, "harness/report/sections/toy.py", TOY_SECTION, touched, "section")
    init = "harness/report/sections/__init__.py"
    _edit(tree, init, "    time,\n    work,\n)", "    time,\n    toy,\n    work,\n)", touched, "section")
    _edit(
        tree, init, "    paper,\n    environment,\n)", "    paper,\n    toy,\n    environment,\n)", touched, "section"
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "harness", *args], cwd=tree, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        return done

    out, report = tree / "out", tree / "report"
    cli(
        "sweep",
        "--models",
        "maf,toy",
        "--dims",
        "2",
        "--ops",
        "log_prob,sample,forward",
        "--solvers",
        "default,toy",
        "--batch",
        "16",
        "--budget",
        "5",
        "--device",
        "cpu",
        "--no-flops",
        "--no-memory",
        "--no-roofline",
        "--no-progress",
        "--no-isolate",
        "--out",
        str(out),
    )
    cli("report", str(out), "--out", str(report))
    return touched, out, report


@pytest.mark.slow
def test_each_addition_touched_at_most_two_files(extended):
    touched, _, _ = extended
    assert {k: len(v) for k, v in touched.items()} == {"flow": 2, "op": 2, "solver": 2, "section": 2}


def test_the_toy_flow_op_and_solver_are_measured_and_reported(extended):
    _, out, report = extended
    with (out / "results.csv").open() as f:
        header, *lines = [line.rstrip("\r\n").split(",") for line in f]
    rows = [dict(zip(header, line)) for line in lines]
    assert {r["model"] for r in rows} == {"maf", "toy"}
    assert {(r["model"], r["op"]) for r in rows if r["op"] == "forward"} == {("maf", "forward"), ("toy", "forward")}
    assert {r["solver"] for r in rows if r["op"] == "sample"} == {"incremental", "toy"}
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    text = (report / "REPORT.md").read_text()
    time = text.split("## Time on cpu, batch 16", 1)[1].split("\n## ", 1)[0]
    assert "forward ms [IQR]" in time and "| toy " in time
    algorithms = text.split("## Algorithms for the slow direction", 1)[1].split("\n## ", 1)[0]
    assert "`toy` (alternative: the sequential solve under another name)" in algorithms
    assert "### toy sample on cpu, batch 16" in algorithms and "| toy " in algorithms
    assert "forward on cpu, batch 16" in (report / "overview.svg").read_text()


def test_the_toy_section_is_in_the_report_and_its_findings(extended):
    _, _, report = extended
    text = (report / "REPORT.md").read_text()
    assert "## Toy section" in text and "rows seen." in text
    assert "**Toy question** answered from" in text.split("## Contents")[0]
    found = json.loads((report / "findings.json").read_text())["findings"]
    assert any(f["question"] == "Toy question" and f["anchor"] == "#toy-section" for f in found)
