"""Reports from a synthetic sweep table and a small asv results fixture."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report import build_report, load
from harness.report.sections.parameters import ratios_to
from harness.report.sections.scaling import slope_values
from harness.report.sections.time import time_table
from harness.report.tables import fit_slope, fit_slope_interval
from harness.table import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
PNG = b"\x89PNG\r\n\x1a\n"


def runs_around(median: float) -> str:
    """Five runs about a median (the same spread for every row: paired ratios are exact)."""
    return " ".join(f"{median * (1 + e):.6g}" for e in (-0.004, -0.002, 0, 0.002, 0.004))


def synthetic(out: Path, devices=("cpu",)) -> Path:
    """A sweep folder whose times follow known powers of d: log_prob ~ d^1, sample ~ d^2."""
    rows = []
    for device in devices:
        for model, kinds in (("maf", ("parallel", "sequential")), ("bnaf", ("parallel", "iterative"))):
            for dim in (2, 4, 8, 16, 32):
                solvers = {"maf": ("incremental", "sequential"), "bnaf": ("newton",)}[model]
                for op, kind, power, solver in (
                    ("log_prob", kinds[0], 1, "direct"),
                    *(("sample", kinds[1], 2 + (s == "sequential"), s) for s in solvers),
                ):
                    skipped = model == "bnaf" and op == "sample" and dim == 32
                    rows.append(
                        dict(
                            model=model,
                            dim=dim,
                            op=op,
                            device=device,
                            batch=100,
                            kind=kind,
                            solver=solver,
                            evaluations=5 * dim if op == "sample" else "",
                            iterations=5 * dim if op == "sample" else "",
                            evaluations_per_dim=1 if op == "sample" else "",
                            median_s="" if skipped else 1e-4 * dim**power,
                            iqr_s="" if skipped else 1e-6,
                            runs="" if skipped else 5,
                            round_s="" if skipped else runs_around(1e-4 * dim**power),
                            round_group="" if solver == "sequential" else f"{device}-{dim}",
                            status="skipped" if skipped else "ok",
                            reason="one call took 9 s; 3 runs > budget 20 s" if skipped else "",
                            params_stored=100 * dim**2,
                            params_effective=50 * dim**2 if model == "maf" else 10 * dim**2,
                            flops=1e6 * dim,
                            peak_mem_bytes=4096 * dim,
                            threads=1,
                            dtype="float32",
                            source="sweep",
                            commit="abc",
                        )
                    )
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(out / "results.csv", index=False)
    (out / "meta.json").write_text(json.dumps({"commit": "abc", "torch": "2.13.0", "threads": 1, "cpu": "test"}))
    return out


def test_slope_fit_recovers_a_known_exponent():
    dims = np.array([2, 4, 8, 16, 32, 64, 128])
    for k in (0.0, 1.0, 2.0, 2.5):
        assert fit_slope(dims, 3e-5 * dims**k) == pytest.approx(k, abs=1e-9)
    # only the upper half counts: a constant overhead at small d does not bend the fit
    noisy = 1e-3 * (dims <= 8) + 1e-6 * dims**2
    assert fit_slope(dims, noisy) == pytest.approx(2.0, abs=0.1)


def test_a_scaling_exponent_needs_three_dims_and_states_its_interval(tmp_path):
    assert np.isnan(fit_slope_interval(np.array([64, 256]), np.array([1.0, 4.0]))[0])
    # the 95% interval covers the true exponent in about 95% of noisy draws
    dims, rng = 2.0 ** np.arange(1, 9), np.random.default_rng(0)
    fits = [fit_slope_interval(dims, 1e-4 * dims**1.5 * np.exp(rng.normal(0, 0.05, len(dims)))) for _ in range(400)]
    assert 0.9 <= np.mean([low < 1.5 < high for _, low, high in fits]) <= 0.99
    text = build_report([_two_families(tmp_path / "s")], tmp_path / "out", paper=False, figures=False).read_text()
    findings = text.split("## Contents")[0]
    # every series grows as d^1: one value with its interval, never "k from 1 to 1"
    assert "k = 1 [1, 1] for all" in findings and "k from" not in findings
    assert "slope k [95% CI]" in text
    # two dims: the statement is left out, and the reader told why in one line
    few = _two_families(tmp_path / "few")
    results = few / "results.csv"
    lines = results.read_text().splitlines(True)
    results.write_text("".join(lines[:1] + [line for line in lines[1:] if ",8," not in line]))
    text = build_report([few], tmp_path / "out2", paper=False, figures=False).read_text()
    assert "no exponent stated: a fit needs 3 dims (measured: 2, 4)" in text.split("## Contents")[0]


def test_tables_from_a_synthetic_sweep(tmp_path, monkeypatch):
    from harness import calibration

    monkeypatch.setattr(calibration, "load", lambda path=None: {})  # the rounds' own intervals, not a rerun's
    df, _ = load(synthetic(tmp_path / "sweep"))
    t = time_table(df[df["device"] == "cpu"])
    row = t[(t["model"] == "maf") & (t["d"] == 8)].iloc[0]
    # median [IQR] in ms; an IQR over 20% of the median is flagged
    assert row["log_prob ms [IQR]"] == "0.8 [0.001]" and row["sample ms [IQR]"] == "6.4 [0.001]"
    assert row["sample / log_prob"] == "8 [8, 8]"  # paired: timed in the same rounds
    reference = row["sample / log_prob, reference solver"]  # unpaired: timed apart, so a wider interval
    assert row["solver"] == "incremental" and reference == "64 [63.6, 64.4]"
    assert row["log_prob (points/s)"] == "125,000"
    assert t[(t["model"] == "bnaf") & (t["d"] == 32)].iloc[0]["sample ms [IQR]"] == "skipped"
    assert t[(t["model"] == "maf") & (t["d"] == 2)].iloc[0]["log_prob ms [IQR]"] == "0.2 [0.001]"
    noisy = df.assign(iqr_s=df["median_s"] * 0.5)
    assert time_table(noisy[noisy["device"] == "cpu"]).iloc[0]["log_prob ms [IQR]"].endswith(" noisy")
    s = slope_values(df).set_index(["model", "op"])
    assert s.loc[("maf", "log_prob"), "k"] == pytest.approx(1) and s.loc[("maf", "sample"), "k"] == pytest.approx(2)
    r = ratios_to(df.drop_duplicates(["model", "dim"]))
    assert r[r["d"] == 4].iloc[0]["maf / bnaf"] == "5"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A report of a two-device synthetic sweep, rendered in a process that must not
    import torch (reading and rendering a results folder needs none)."""
    import subprocess
    import sys

    tmp_path = tmp_path_factory.mktemp("rendered")
    src = synthetic(tmp_path / "sweep", devices=("cpu", "cuda"))
    code = (
        "import sys, harness.report\n"
        "assert 'torch' not in sys.modules, 'importing harness.report imported torch'\n"
        f"harness.report.build_report([{str(src)!r}], {str(tmp_path / 'out')!r}, paper=False)\n"
        "assert 'torch' not in sys.modules, 'rendering a report imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return tmp_path


@pytest.mark.slow
def test_report_from_a_synthetic_sweep(rendered):
    tmp_path = rendered
    path = tmp_path / "out" / "REPORT.md"
    text = path.read_text()
    for heading in (
        "## Scaling with d",
        "## Time on cpu, batch 100",
        "## Time on cuda, batch 100",
        "## Size and work on cpu",
        "## Parameters",
        "## Environment",
    ):
        assert heading in text, heading
    assert "bnaf d=32 sample (newton): skipped (one call took 9 s; 3 runs > budget 20 s)" in text
    assert "## Algorithms for the slow direction" in text and "### maf sample on cpu, batch 100" in text
    assert "| 8   | sequential (reference) | 51.2" in text and "| 8   | incremental (default)  | 6.4" in text
    assert (tmp_path / "out" / "solvers.png").read_bytes().startswith(PNG)
    assert "sample (points/s)" in text and "GFLOP/s" in text and "maf / bnaf" in text
    reference_rows = [line for line in text.splitlines() if "| sequential (reference) |" in line]
    assert reference_rows and all("1 (reference)" in line and " 1 [" not in line for line in reference_rows)
    for name in ("overview.png", "scaling.png", "params.png", "devices.png", "ratios_cpu_b100.png"):
        assert f"({name})" in text
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG)
    assert "parallel, slope 1.00" in _legends(tmp_path / "out" / "scaling.svg")


def _legends(svg: Path) -> str:
    return svg.read_text()


@pytest.mark.slow
def test_report_from_asv_results(tmp_path, monkeypatch):
    from harness import calibration

    # the regressions are judged at the A/A drift bound: none, no flag; a 10% bound flags the 1.2x change
    monkeypatch.setattr(calibration, "load", lambda path=None: {})
    text = build_report([FIXTURES / "asv_results"], tmp_path / "none", paper=False, figures=False).read_text()
    assert "## asv history" in text and "slower/bigger" not in text and "no drift calibration" in text
    monkeypatch.setattr(calibration, "load", lambda path=None: {"drift": 0.1, "configurations": 9})
    path = build_report([FIXTURES / "asv_results"], tmp_path / "out", paper=False)
    text = path.read_text()
    assert "## asv history" in text and "slower/bigger" in text
    pngs = sorted((tmp_path / "out").glob("history_*.png"))
    assert pngs and all(p.read_bytes().startswith(PNG) for p in pngs)


@pytest.mark.slow
def test_report_includes_the_paper_table(tmp_path):
    from harness import paper

    src = synthetic(tmp_path / "sweep")
    first = build_report([src], tmp_path / "out", figures=False).read_text()
    assert "B-NAF paper" not in first  # only where a folder holds it
    assert "Figures: none drawn" in first and not list((tmp_path / "out").glob("*.png"))
    paper.write(src)
    text = build_report([src], tmp_path / "out", figures=False).read_text()
    assert "B-NAF paper, Table 1" in text and "MINIBOONE" in text


def test_missing_or_empty_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist; expected a sweep, fit or asv results folder"):
        build_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds neither results.csv"):
        build_report([tmp_path / "empty"], tmp_path / "out")
    (tmp_path / "hollow").mkdir()
    (tmp_path / "hollow" / "results.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(ValueError, match="has no rows"):
        build_report([tmp_path / "hollow"], tmp_path / "out")


def _two_families(out: Path, devices=("cpu",), batches=(100,)) -> Path:
    """MAF and IAF with known times: MAF samples in 10 d ms, IAF in d ms (log_prob the reverse)."""
    rows = []
    for device in devices:
        for batch in batches:
            scale = 1.0 if device == "cpu" else 0.25
            for model in ("maf", "iaf"):
                for dim in (2, 4, 8):
                    for op in ("log_prob", "sample"):
                        slow = (model == "maf") == (op == "sample")
                        rows.append(
                            dict(
                                model=model,
                                dim=dim,
                                op=op,
                                device=device,
                                batch=batch,
                                kind="sequential" if slow else "parallel",
                                solver="incremental" if slow else "direct",
                                median_s=scale * 1e-3 * dim * (10 if slow else 1) * batch / 100,
                                iqr_s=1e-6,
                                runs=5,
                                round_s=runs_around(scale * 1e-3 * dim * (10 if slow else 1) * batch / 100),
                                round_group=f"{device}-{dim}-{batch}",
                                status="ok",
                                params_stored=10 * dim,
                                params_effective=5 * dim,
                                threads=1,
                                dtype="float32",
                                source="sweep",
                                commit="abc",
                            )
                        )
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(out / "results.csv", index=False)
    (out / "meta.json").write_text(json.dumps({"commit": "abc"}))
    return out


@pytest.mark.slow
def test_findings_come_first_and_their_numbers_are_in_the_tables_below(tmp_path):
    src = _two_families(tmp_path / "s", devices=("cpu", "cuda"))
    text = build_report([src], tmp_path / "out", paper=False, figures=False).read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Findings"
    findings, rest = text.split("## Contents", 1)
    # IAF samples 10x as fast as MAF at every d; the sentence's ratio is the table's cell
    assert "IAF samples 10 [" in findings and "at d=8" in findings
    assert "| 8   | 80 [0.001]" in rest and "| 10 [" in rest
    assert "(#iaf-against-maf-sampling-on-cpu-batch-100)" in findings and "## IAF against MAF sampling on cpu" in rest
    # sample / log_prob per family at the largest common d, and CPU against GPU (4x)
    assert "maf (incremental) 10 [" in findings and "iaf (incremental) 0.1 [" in findings
    assert "**CPU against GPU** (cpu / cuda) at d=8" in findings and "maf log_prob 4 [" in findings
    assert "## CPU against GPU" in rest  # its figure: test_report_from_a_synthetic_sweep


@pytest.mark.slow
def test_series_are_grouped_by_batch_with_slopes_per_batch(tmp_path):
    src = _two_families(tmp_path / "s", batches=(100, 400))
    text = build_report([src], tmp_path / "out", paper=False).read_text()
    df, _ = load(src)
    s = slope_values(df)
    assert set(s["batch"]) == {100, 400} and len(s) == 8 and np.allclose(s["k"], 1)
    svg = (tmp_path / "out" / "scaling.svg").read_text()
    assert "maf on cpu, batch 100" in svg and "maf on cpu, batch 400" in svg
    overview = (tmp_path / "out" / "overview.svg").read_text()
    assert "sample on cpu, batch 400" in overview
    assert "## Time on cpu, batch 400" in text


def test_every_flow_has_its_own_style_and_peers_take_a_shade_of_their_family():
    from harness.report.plots import styles

    names = [("maf", "maf", "flowbench"), ("iaf", "iaf", "flowbench"), ("zuko.maf", "maf", "zuko")]
    names += [("mine.flow:make", "", "mine.flow"), ("other:make", "maf", "other")]
    style = styles(pd.DataFrame(names, columns=["model", "family", "library"]))
    assert style["maf"] != style["iaf"]
    assert style["zuko.maf"]["color"] != style["maf"]["color"] and style["zuko.maf"]["marker"] != style["maf"]["marker"]
    users = [style["mine.flow:make"], style["other:make"]]  # users' flows: each its own colour and marker
    assert users[0] != users[1] and all(
        u["marker"] not in {s["marker"] for s in style.values() if s not in users} for u in users
    )
    # ours and users' flows solid, each peer library a line style of its own
    assert style["maf"]["linestyle"] == style["mine.flow:make"]["linestyle"] == "-" != style["zuko.maf"]["linestyle"]


def test_a_legend_names_each_entry_once_and_an_unmeasured_point_once():
    from harness.report import plots

    fig, axes = plots.grid(1, 1, 4, 3)
    ax = axes[0][0]
    rows = pd.DataFrame(
        {"dim": [2, 4, 8], "median_s": [1e-3, 2e-3, None], "iqr_s": [0, 0, None], "status": ["ok", "ok", "skipped"]}
    ).assign(kind="parallel")
    for name in ("a", "b"):
        plots.curve(ax, rows, name)
    plots.curve(ax, rows, "a")  # the same series again: no second entry
    plots.legend(ax)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(set(labels)) == 3 and labels.count(plots.MISSING) == 1
    plots.plt.close(fig)


def test_an_asv_report_states_asv_parameters_and_leaves_out_sweep_sections(tmp_path):
    text = build_report([FIXTURES / "asv_results"], tmp_path / "out", figures=False).read_text()
    assert "asv's own parameters" in text and "| bench_time.LogProb.time_log_prob" in text
    for sweep_only in ("## Findings", "B-NAF paper, Table 1", "Times are medians of blocked runs"):
        assert sweep_only not in text


def test_the_table_owner_needs_no_torch_and_owns_the_vocabulary():
    import subprocess
    import sys

    code = "import sys, harness.table; assert 'torch' not in sys.modules, 'harness.table imported torch'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
    from harness.table import COLUMNS, CURVE_COLUMNS, FIT_COLUMNS, OK, Col, Status

    assert OK is Status.OK and OK == "ok" and f"{OK}" == "ok"
    assert {"family", "library", "flops_note"} <= set(COLUMNS)
    assert [getattr(Col, c.upper()) for c in COLUMNS] == COLUMNS
    assert [getattr(Col, c.upper()) for c in FIT_COLUMNS + CURVE_COLUMNS] == FIT_COLUMNS + CURVE_COLUMNS
    named = {getattr(Col, k) for k in vars(Col) if k.isupper()}
    from harness.table import AB_COLUMNS, POSTERIOR_COLUMNS

    assert [getattr(Col, c.upper()) for c in POSTERIOR_COLUMNS] == POSTERIOR_COLUMNS
    assert named == set(COLUMNS) | set(FIT_COLUMNS) | set(CURVE_COLUMNS) | set(AB_COLUMNS) | set(POSTERIOR_COLUMNS)


# literals that spell a column's name but belong to another vocabulary
NOT_COLUMNS = {
    ("harness/env.py", "status"): "git's subcommand (git status --porcelain)",
    ("harness/measurer.py", "solver"): "the models' keyword argument",
    ("harness/ab_trial.py", "solver"): "the models' keyword argument",
    ("harness/measurer.py", "context"): "the models' keyword argument",
    ("harness/grid.py", "context"): "the models' keyword argument",
    ("harness/training.py", "context"): "the models' keyword argument",
    ("harness/models/warm.py", "context"): "the models' keyword argument",
    ("harness/models/__init__.py", "context"): "the models' keyword argument",
    ("harness/peers/__init__.py", "context"): "the models' keyword argument",
    ("harness/models/base.py", "context"): "the name of the flows' argument in a message",
    ("harness/models/masked.py", "context"): "the NAF paper's weight-norm buffer",
    ("harness/models/naf.py", "context"): "the NAF paper's weight-norm buffer",
    ("harness/revisions.py", "status"): "git's subcommand (git status --porcelain)",
    ("benchmarks/bench_size.py", "flops"): "asv's unit of track_flops",
    ("harness/asv_results.py", "machine"): "the key of asv's result files (read into the machine column)",
    ("harness/report/sections/asv.py", "machine"): "a key of asv's machine.json",
}


def test_no_module_outside_the_owner_spells_a_column_status_or_file_name():
    import ast
    import io
    import tokenize

    from harness import table

    files = [getattr(table, n) for n in dir(table) if isinstance(getattr(table, n), str) and "." in getattr(table, n)]
    from dataclasses import fields

    from harness.fit import FitConfig

    # the fit's settings share names with some of its columns (steps, seed, data): settings are theirs
    settings = {f.name for f in fields(FitConfig)}
    columns = set(table.COLUMNS) | (set(table.FIT_COLUMNS) | set(table.CURVE_COLUMNS)) - settings
    columns |= set(table.AB_COLUMNS)
    vocabulary = columns | {s.value for s in table.Status} | set(files)
    assert {"results.csv", "meta.json", "checks.csv", "fit.csv", "error", "test_nll"} <= vocabulary
    root = Path(__file__).parents[1]
    found = {}
    for folder in ("harness", "benchmarks", "examples"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name == "table.py":
                continue
            text = path.read_text()
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type != tokenize.STRING:
                    continue
                try:
                    value = ast.literal_eval(tok.string)
                except (ValueError, SyntaxError):  # an f-string: its fields are checked below
                    value = None
                    inner = {v for v in vocabulary if f"['{v}']" in tok.string or f'["{v}"]' in tok.string}
                    for v in inner:
                        found.setdefault((str(path.relative_to(root)), v), []).append(tok.start[0])
                if isinstance(value, str) and value in vocabulary:
                    found.setdefault((str(path.relative_to(root)), value), []).append(tok.start[0])
    spelled = {k: lines for k, lines in found.items() if k not in NOT_COLUMNS}
    assert not spelled, f"use harness.table's names (Col, Status, file names), not literals: {spelled}"
    assert set(found) == set(NOT_COLUMNS), "an exception in NOT_COLUMNS is no longer needed"


def test_a_table_from_before_family_and_library_gets_them_from_names(tmp_path):
    src = synthetic(tmp_path / "old")
    old = pd.read_csv(src / "results.csv").drop(columns=["family", "library", "flops_note"])
    old.loc[0, "model"] = "zuko.maf"
    old.to_csv(src / "results.csv", index=False)
    df, _ = load(src)
    assert df.loc[0, "library"] == "zuko" and df.loc[0, "family"] == "maf"
    assert set(df.loc[1:, "library"]) == {"flowbench"}


def test_the_html_page_holds_every_section_figure_and_table_of_the_report_and_needs_no_network(rendered):
    from html.parser import HTMLParser

    text = (rendered / "out" / "REPORT.md").read_text()
    page = (rendered / "out" / "REPORT.html").read_text()

    class Parts(HTMLParser):
        def __init__(self):
            super().__init__()
            self.h2, self.tables, self.figures, self.fetches, self._in = [], 0, 0, [], None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.tables += tag == "table"
            self.figures += tag == "svg" or (tag == "img" and attrs.get("src", "").startswith("data:image/png"))
            self.fetches += [v for k, v in attrs.items() if k in ("src", "href") and v and "://" in v]
            self.fetches += ["a script"] if tag in ("script", "link", "iframe") else []
            self._in = "h2" if tag == "h2" else self._in

        def handle_endtag(self, tag):
            self._in = None if tag == "h2" else self._in

        def handle_data(self, data):
            if self._in == "h2":
                self.h2.append(data)

    parts = Parts()
    parts.feed(page)
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert parts.h2 == headings
    assert parts.tables == sum(1 for line in text.splitlines() if re.match(r"^\|\s*:?-{3,}", line)) > 0
    assert parts.figures == text.count("![") > 0 and parts.fetches == []


def test_reading_and_rendering_a_results_folder_imports_no_torch(rendered):
    assert (rendered / "out" / "REPORT.md").is_file() and (rendered / "out" / "findings.json").is_file()


def test_every_ops_asv_timings_reach_the_table(tmp_path):
    """time_<op> of every op in the vocabulary (train_step too) is read with its op."""
    import shutil

    from harness.asv_results import read
    from harness.ops import OPS

    src = tmp_path / "asv"
    shutil.copytree(FIXTURES / "asv_results", src)
    index = json.loads((src / "benchmarks.json").read_text())
    result = json.loads(next((src / "ci-box").glob("bbbb*.json")).read_text())
    for op in OPS.values():
        bench = f"bench_time.{op.asv_class}.{op.asv}"
        index[bench] = {**index["bench_time.LogProb.time_log_prob"], "name": bench}
        result["results"][bench] = result["results"]["bench_time.LogProb.time_log_prob"]
    (src / "benchmarks.json").write_text(json.dumps(index))
    next((src / "ci-box").glob("bbbb*.json")).write_text(json.dumps(result))
    df = read(src)
    timed = df[df["benchmark"].str.startswith("bench_time.")]
    assert set(timed["op"]) == set(OPS) and timed["median_s"].notna().any()


def test_findings_are_data_beside_each_committed_report():
    from harness.report.findings import from_dict

    for folder in ("cpu", "gpu"):
        data = json.loads((ROOT / "reports" / folder / "findings.json").read_text())
        found = [from_dict(d) for d in data["findings"]]
        report = (ROOT / "reports" / folder / "REPORT.md").read_text()
        assert found and all(f"- {f.markdown()}" in report for f in found)
        headings = {line.lstrip("# ") for line in report.splitlines() if line.startswith("#")}
        for f in found:  # every finding carries its values and links to a heading of the report
            assert f.values and f.title in headings, f


def test_two_folders_of_one_machine_are_never_merged_silently(tmp_path):
    import shutil

    first = synthetic(tmp_path / "first")
    shutil.copytree(first, tmp_path / "second")
    with pytest.raises(ValueError, match="both hold maf d=2 log_prob on .*harness compare"):
        build_report([first, tmp_path / "second"], tmp_path / "out")


def test_the_splines_section_sets_nsf_beside_maf(tmp_path, monkeypatch):
    """NSF over MAF per op and d from the rows (paired where timed in the same rounds),
    their parameters, and a finding at the largest d both reached with both ops."""
    from harness import calibration
    from harness.report import tables
    from harness.report.load import load_sources
    from harness.report.sections import splines

    monkeypatch.setattr(calibration, "load", lambda path=None: {})
    folder = synthetic(tmp_path / "sweep")
    rows = pd.read_csv(folder / "results.csv")
    rows.loc[rows["model"] == "bnaf", "solver"] = rows.loc[rows["model"] == "bnaf", "solver"].replace(
        "newton", "incremental"
    )
    rows["model"] = rows["model"].replace("bnaf", "nsf")
    rows.to_csv(folder / "results.csv", index=False)
    src = load_sources([folder])
    flows = tables.flows(src.rows)
    table = splines.comparison(tables.main_rows(flows), tables.reference_rows(flows)).set_index("d")
    assert table.loc[8, "log_prob: nsf / maf"] == "1 [1, 1]" and table.loc[8, "parameters: nsf / maf"].endswith("= 0.2")
    (found,) = splines.findings(src)
    assert found.data["d"] == 16 and "log_prob nsf / maf 1 [1, 1]" in found.text  # d=32: nsf sample skipped
    assert "## Splines against affine: NSF and MAF" in "\n".join(splines.render(src, tmp_path))


def test_a_point_skipped_after_one_call_is_drawn_at_that_calls_seconds():
    """A contender over budget after its checked call is not cut where it is slow: its x
    sits at the call's seconds; a point never called sits at the top of the axes."""
    from harness.report import plots

    fig, axes = plots.grid(1, 1, 4, 3)
    ax = axes[0][0]
    rows = pd.DataFrame(
        {
            "dim": [2, 4, 8, 16],
            "median_s": [1e-3, 2e-3, None, None],
            "iqr_s": [0, 0, None, None],
            "status": ["ok", "ok", "skipped", "skipped"],
            "one_call_s": [None, None, 4.5, None],
        }
    ).assign(kind="parallel")
    plots.curve(ax, rows, "a")
    xs = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines() if line.get_marker() == "x"]
    assert ((8,), (4.5,)) in xs  # in data coordinates, at the call's time
    assert ((16,), (0.97,)) in xs  # at the top (axes coordinates)
    plots.plt.close(fig)


def test_one_seed_gives_no_verdict_on_models_and_says_what_its_interval_covers():
    from harness.report.fits import Paired
    from harness.report.sections.quality import verdict_text

    one = Paired("naf", "maf", 0.2, 0.1, 0.3, 1, "paired")
    assert not one.clear  # the spread over trainings is unknown
    text = verdict_text(one, "nats")
    assert "no verdict with one seed" in text and "test points of one seed" in text and "best" not in text
    three = Paired("naf", "maf", 0.2, 0.1, 0.3, 3, "paired")
    assert three.clear and verdict_text(three, "nats").startswith("best: naf") and "over 3 seeds" in three.covers


def _contest(contender: str, library: str, median_s: float, ratio: tuple, verdict: str, **more) -> dict:
    row = dict(contest="nsf.log_prob", dim=128, batch=1024, threads=1, rounds=5, contender=contender)
    row |= dict(role="ours" if contender == "ours" else "peer", family="nsf", library=library, op="log_prob")
    row |= dict(median_s=median_s, status="ok", reason="", fastest="flowjax.nsf", verdict=verdict)
    return row | dict(ratio=ratio[0], ratio_low=ratio[1], ratio_high=ratio[2]) | more


def test_jax_against_pytorch_names_frameworks_and_the_calls_a_compile_takes_to_repay():
    """A JAX peer faster per call by an interval that excludes 1 repays its compile
    after floor(compile / (ours - it)) + 1 calls; one slower never does; the contests'
    table groups peers by framework."""
    from harness.report.load import Sources, frame
    from harness.report.sections import frameworks, peers
    from harness.table import VERSUS

    vs = frame(
        [
            _contest("ours", "flowbench", 0.200, (1.3, 1.2, 1.4), "slower"),
            _contest("zuko.nsf", "zuko", 0.400, (0.5, 0.45, 0.55), "faster"),
            _contest("flowjax.nsf", "flowjax", 0.150, (1.3, 1.2, 1.4), "slower", compile_s=1.01),
        ]
    )
    src = Sources([], [], [], {VERSUS: vs})
    found = frameworks.table(src)
    assert list(found["JAX"]) == ["flowjax.nsf"]
    assert found["JAX ahead of ours after"].iloc[0] == "21 calls"  # 1.01 / (0.2 - 0.15) = 20.2: ahead from the 21st
    assert found["faster"].iloc[0] == "flowjax.nsf (JAX)"
    assert frameworks.break_even(0.1, 0.2, 1.0, "faster") == frameworks.NEVER
    assert frameworks.break_even(0.2, 0.15, 1.0, "no clear difference") == frameworks.UNDECIDED
    assert frameworks.break_even(0.2, 0.15, 1.0, "") == frameworks.ONE_CALL
    (finding,) = frameworks.findings(src)
    assert "flowjax.nsf faster; its 1.01 s compile repaid after 21 calls" in finding.text
    assert finding.values[0].low == 1.2
    cell = peers.versus_table(vs)["peers (ms)"].iloc[0]
    assert cell == "PyTorch: zuko.nsf log_prob 400; JAX: flowjax.nsf log_prob 150"


def test_without_a_jax_contender_there_is_no_jax_section():
    from harness.report.load import Sources, frame
    from harness.report.sections import frameworks
    from harness.table import VERSUS

    vs = frame([_contest("ours", "flowbench", 0.2, (0.9, 0.8, 1.0), "faster")])
    src = Sources([], [], [], {VERSUS: vs})
    assert frameworks.render(src, Path(".")) == [] and frameworks.findings(src) == []
