"""REPORT.md assembly: reads sources, writes tables and plots into one folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from ..errors import UserError
from ..table import CHECKS, FIT, OK, RESULTS, SOLVERS, VERSUS, Col
from . import findings, plots, quality, tables
from . import machines as machines_report
from .load import frame, load

REGRESSION = 0.10  # flag changes over 10% between the two latest commits


def regressions(asv: pd.DataFrame) -> pd.DataFrame:
    """Latest commit against the previous one, per benchmark and parameter set."""
    d = asv[asv[Col.STATUS] == OK]
    order = d.drop_duplicates(Col.COMMIT).sort_values("date")[Col.COMMIT].tolist()
    if len(order) < 2:
        return pd.DataFrame()
    old, new = order[-2], order[-1]
    keys = ["benchmark", "params", "unit"]
    a = d[d[Col.COMMIT] == old].set_index(keys)["value"]
    b = d[d[Col.COMMIT] == new].set_index(keys)["value"]
    both = pd.concat({"before": a, "after": b}, axis=1).dropna().reset_index()
    both["ratio"] = both["after"] / both["before"]
    both["flag"] = np.where(
        both["ratio"] > 1 + REGRESSION,
        "slower/bigger",
        np.where(both["ratio"] < 1 - REGRESSION, "faster/smaller", ""),
    )
    out = both.assign(
        before=both["before"].map(tables.fmt),
        after=both["after"].map(tables.fmt),
        ratio=both["ratio"].map(tables.fmt),
    )
    out.columns = ["benchmark", "params", "unit", f"{old[:8]}", f"{new[:8]}", "after / before", "flag"]
    return out


def side_tables(folders: list[Path], name: str) -> list[pd.DataFrame]:
    """The side table ``name`` (versus.csv, solvers.csv, checks.csv) of each folder that holds one."""
    return [frame(store.read_table(f / name, strict=False)) for f in folders if (f / name).is_file()]


def peers_section(df: pd.DataFrame, versus: list[pd.DataFrame]) -> list[str]:
    """Ours against zuko, pyro and nflows: the sweep's peer rows per family, and the
    A/B contests ``versus`` (the sweep folders' versus.csv)."""
    peer_rows = df[tables.is_peer(df)]
    if peer_rows.empty and not versus:
        return []
    lines = ["## Ours against peers", ""]
    lines += [
        "Peers are built from the same config as the reference model of their family "
        "(`harness.peers`: same K flows, hidden sizes, B-NAF hidden factors). The tables below are the "
        "sweep's absolute times, measured minutes apart and **not interleaved**: compare ours with a peer "
        "only through the A/B contests further down.",
        "",
    ]
    for (device, batch), g in df.groupby([Col.DEVICE, Col.BATCH], sort=False):
        families = list(dict.fromkeys(g[tables.is_peer(g)][Col.FAMILY].fillna("")))
        for family in families:
            title = family or "flows of no reference family"
            lines += [f"### {title}: time on {device}, batch {int(batch)}", ""]
            lines += [tables.markdown(tables.peer_table(g, family)), ""]
            lines += ["Parameters, effective (stored):", ""]
            lines += [tables.markdown(tables.peer_params(g, family)), ""]
    if versus:
        vs = pd.concat(versus, ignore_index=True)
        lines += ["### A/B: ours against the fastest peer", ""]
        lines += [
            "`python -m harness versus`: float32, one thread, contenders alternating in one process; "
            "the ratio is the median over rounds of ours / the fastest peer of the round, with a bootstrap "
            "95% interval over rounds; `ours is` faster or slower only where the interval excludes 1 "
            "(`pass` = one data->base pass of the peer's flow, the work of an IAF sample).",
            "",
        ]
        lines += [tables.markdown(tables.versus_table(vs)), ""]
        naf = tables.naf_ratio_table(vs)
        if not naf.empty:
            lines += [
                "NAF sampling against density evaluation: ours inverts each dimension by safeguarded "
                "Newton; zuko's NAF bisects every dimension in each of d passes:",
                "",
            ]
            lines += [tables.markdown(naf), ""]
    return lines


def correctness_section(folders: list[Path]) -> list[str]:
    """Every checked model (``python -m harness check --out``): per check, the worst error
    over the dims against its tolerance, and the failures spelled out."""
    frames = side_tables(folders, CHECKS)
    if not frames:
        return []
    checks = pd.concat(frames, ignore_index=True).drop_duplicates([Col.MODEL, "check", Col.DIM])
    lines = ["## Correctness", ""]
    lines += [
        "`python -m harness check` on every model, in float64 with seed 0 (see `harness/check.py`): the worst "
        "error over d = 1, 2, 5 against each check's tolerance; `structure` reports whether the Jacobian is "
        "triangular in the given order (reported in brackets, not required: 0 is triangular); `-`: the "
        "check does not apply.",
        "",
    ]
    lines += [tables.markdown(tables.correctness_table(checks)), ""]
    failed = checks[checks["result"] == "FAIL"]
    if not failed.empty:
        lines += ["Failed checks:", ""]
        for r in failed.itertuples():
            error, tolerance = tables.fmt(float(r.measured)), tables.fmt(float(r.tolerance))
            lines += [f"- {r.model} {r.check} at d={r.dim}: {error} > {tolerance} ({r.note})"]
        lines += [""]
    return lines


def _roofline(sweeps: list[tuple[pd.DataFrame, dict]], device: str) -> float | None:
    rates = [m.get("roofline", {}).get(device, {}).get("gemm_gflops") for _, m in sweeps]
    rates = [r for r in rates if r]
    return max(rates) if rates else None


def algorithms_section(df: pd.DataFrame, folders: list[Path], out: Path) -> list[str]:
    """Per model, each solver of the slow direction against d: the sweep's rows, the
    figure, and the interleaved A/B of ``solvers.csv`` where a folder holds one."""
    solved = df[Col.SOLVER].isin([*tables.ROLE, "fixed-point"]) if Col.SOLVER in df else False
    slow = df[(df[Col.KIND] != "parallel") & solved] if Col.SOLVER in df else df.iloc[0:0]
    ab = side_tables(folders, SOLVERS)
    if slow.empty and not ab:
        return []
    lines = ["## Algorithms for the slow direction", ""]
    lines += [
        "MADE/MAF `sample` and IAF `log_prob` solve an affine autoregressive system: `sequential` (the "
        "reference: d network passes per layer), `incremental` (d steps that each compute only the hidden "
        "units of the degree just made known: one pass of arithmetic) or `fixed-point` (Jacobi iterations, "
        "one full pass each, until every residual is within tolerance; exact after d). NAF and B-NAF "
        "`sample` root-find each dimension: `bisection` (the reference), `newton` (safeguarded, only "
        "dimension i's blocks per evaluation) or `fixed-point` (bracketed Newton steps on every "
        "dimension at once). `evaluations / dim`: evaluations of one dimension's output per dimension "
        "and layer.",
        "",
    ]
    for name in plots.solvers(slow, out)[:1]:
        lines += [f"![solvers]({name})", ""]
    for (device, batch), g in slow.groupby([Col.DEVICE, Col.BATCH], sort=False):
        for model in dict.fromkeys(g[Col.MODEL]):
            table = tables.solver_table(g, model)
            if table.empty or table[Col.SOLVER].nunique() < 2:
                continue
            lines += [f"### {model} {g[g[Col.MODEL] == model][Col.OP].iloc[0]} on {device}, batch {int(batch)}", ""]
            lines += [
                "Speed-ups here compare configurations timed one after another in the sweep; the A/B "
                "table below times them interleaved.",
                "",
            ]
            lines += [tables.markdown(table), ""]
    if ab:
        from ..algorithms import table as ab_table

        rows = pd.concat(ab, ignore_index=True).to_dict("records")
        rows = [{k: v for k, v in r.items() if not (isinstance(v, float) and np.isnan(v))} for r in rows]
        lines += ["### A/B: every solver against the reference, interleaved", ""]
        lines += [
            "`python -m harness solvers`: one process, float32, one thread, the same weights and inputs for "
            "every solver; the speed-up is the median over rounds of reference / solver with a bootstrap "
            "95% interval; `slow op / fast op` divides by the model's parallel op in the same rounds.",
            "",
        ]
        lines += [ab_table(rows), ""]
    return lines


def asv_parameters(folders: list[Path], machines: dict[str, dict]) -> list[str]:
    """What an asv-sourced section measured: each benchmark's parameter grid and unit
    (asv's benchmarks.json) and each machine (machine.json)."""
    import json

    rows = []
    for folder in folders:
        for name, info in sorted(json.loads((folder / "benchmarks.json").read_text()).items()):
            if not isinstance(info, dict) or "param_names" not in info:
                continue
            grid = "; ".join(f"{k}: {', '.join(v)}" for k, v in zip(info["param_names"], info.get("params", [])))
            rows.append({"benchmark": name, "parameters": grid, "unit": info.get("unit", "")})
    lines = [
        "asv's own parameters (its `benchmarks.json`). The suite (`benchmarks/common.py` at each commit) "
        "fixes its own batch and 1 thread, so its times are not the sweep's:",
        "",
    ]
    lines += [tables.markdown(pd.DataFrame(rows)), ""]
    if machines:
        keys = ["machine", "cpu", "num_cpu", "os", "ram"]
        lines += ["Machines:", ""]
        lines += [tables.markdown(pd.DataFrame([{k: str(m.get(k, "")) for k in keys} for m in machines.values()])), ""]
    return lines


def sampling_section(df: pd.DataFrame) -> list[str]:
    """IAF against MAF sampling per d, on each device and batch."""
    lines = []
    for (device, batch), g in tables.main_rows(df).groupby([Col.DEVICE, Col.BATCH], sort=False):
        table = findings.sampling_table(g)
        if not table.empty:
            lines += [f"## {findings.sampling_title(device, batch)}", "", tables.markdown(table), ""]
    return lines


def devices_section(df: pd.DataFrame, out: Path) -> list[str]:
    table = findings.devices_table(df)
    if table.empty:
        return []
    lines = [f"## {findings.DEVICES}", ""]
    lines += [
        "Each model's default algorithm at the largest d measured on both devices, per batch. The devices' "
        "sweeps ran on different machines and possibly different commits (see Environment).",
        "",
    ]
    for name in plots.devices(df, out)[:1]:
        lines += [f"![devices]({name})", ""]
    return [*lines, tables.markdown(table), ""]


def build_report(sources: list[str | Path], out: str | Path, paper: bool = True) -> Path:
    """Writes ``out/REPORT.md`` with its PNG (and SVG) plots; returns its path. The paper's
    Table 1 and the sweep's sections appear only where a sweep folder is among the sources."""
    out = Path(out)
    if not sources:
        raise UserError("no source given; pass a sweep folder, a fit folder or an asv results folder")
    fit_folders = [Path(s) for s in sources if (Path(s) / FIT).is_file() and not (Path(s) / RESULTS).is_file()]
    loaded = [load(s) for s in sources if Path(s) not in fit_folders]
    fit_tables = [quality.load_fit(f)[0] for f in fit_folders]
    out.mkdir(parents=True, exist_ok=True)
    sweeps = [(df, meta) for df, meta in loaded if meta[Col.SOURCE] == "sweep"]
    asvs = [(df, meta) for df, meta in loaded if meta[Col.SOURCE] == "asv"]
    paper = paper and bool(sweeps)
    lines = ["# flowbench report", ""]
    named = [f"`{m['path']}` ({m[Col.SOURCE]})" for _, m in loaded] + [f"`{f}` (fit)" for f in fit_folders]
    lines += ["Sources: " + ", ".join(named), ""]

    everything = pd.concat([d for d, _ in sweeps], ignore_index=True) if sweeps else pd.DataFrame()
    df = everything[~tables.is_peer(everything)] if sweeps else everything
    folders = [Path(m["path"]) for _, m in sweeps]
    versus = side_tables(folders, VERSUS)
    fitted = [bullet for t in fit_tables for bullet in quality.findings(t)]
    if sweeps or fitted:
        lines += findings.findings(df, pd.concat(versus, ignore_index=True) if versus else None, paper, fitted)
    if sweeps:
        lines += [
            "Times are medians of blocked runs, seconds per call of `batch` points; FLOPs are counted op by "
            "op as dispatched (2 per multiply-add, element-wise ops 1 per element); memory is the peak of "
            "tensor bytes allocated during one call. Unless a section says otherwise, each model's slow "
            'direction uses its default solver (see "Algorithms for the slow direction").',
            "",
        ]
    if not df.empty:
        lines += [f"## {findings.SLOPES}", ""]
        for name in plots.overview(df, out)[:1]:
            lines += [f"![overview]({name})", ""]
        lines += [
            "Fitted exponent k of time ~ d^k over the upper half of the dims, per device and batch "
            "(parallel passes grow with the MADE widths; sequential ones make d passes):",
            "",
        ]
        lines += [tables.markdown(tables.slopes(df)), ""]
        for name in plots.scaling(df, out)[:1]:
            lines += [
                "Per model, each curve labelled with the model's own cost:",
                "",
                f"![scaling]({name})",
                "",
            ]
        for (device, batch), g in df.groupby([Col.DEVICE, Col.BATCH], sort=False):
            lines += [f"## {findings.time_title(device, batch)}", ""]
            lines += [tables.markdown(tables.time_table(g)), ""]
            skipped = tables.main_rows(g)
            skipped = skipped[skipped[Col.STATUS] != OK]
            if not skipped.empty:
                lines += ["Not measured:", ""]
                lines += [
                    f"- {r.model} d={int(r.dim)} {r.op} ({r.solver}): {r.status} ({r.reason})"
                    for r in skipped.itertuples()
                ]
                lines += [""]
            lines += [f"## Size and work on {device}, batch {int(batch)}", ""]
            roofline = _roofline(sweeps, device)
            if roofline:
                lines += [
                    f"`% of GEMM`: achieved GFLOP/s over this machine's `torch.mm` rate, {roofline:.1f} GFLOP/s "
                    "at the sweep's threads and dtype (meta.json, `roofline`).",
                    "",
                ]
            lines += [tables.markdown(tables.size_table(g, roofline)), ""]
            uncounted = tables.main_rows(g)
            uncounted = uncounted[(uncounted[Col.STATUS] == OK) & uncounted[Col.FLOPS].isna()]
            if not uncounted.empty:
                lines += ["FLOPs left blank:", ""]
                notes = uncounted[Col.FLOPS_NOTE].fillna("not counted")
                lines += [
                    f"- {r.model} d={int(r.dim)} {r.op}: {note}" for r, note in zip(uncounted.itertuples(), notes)
                ]
                lines += [""]
        lines += sampling_section(df)
        lines += devices_section(df, out)
        lines += algorithms_section(df, folders, out)
        lines += [f"## {findings.PARAMETERS}", ""]
        for name in plots.params(df, out)[:1]:
            lines += [f"![params]({name})", ""]
        lines += [
            "NAF against B-NAF with the harness defaults, in both counting conventions (stored: numel of "
            "every tensor; effective: non-zero entries, masked-out ones not counted):",
            "",
        ]
        lines += [tables.markdown(findings.params_table(df)), ""]
        lines += ["Parameter ratios to B-NAF (effective parameters):", ""]
        lines += [tables.markdown(tables.param_ratios(df)), ""]
    for folder in fit_folders:
        lines += quality.section(folder, out)
    if sweeps:
        lines += machines_report.section(everything[~tables.is_peer(everything)], out)
        lines += peers_section(everything, versus)
        lines += correctness_section(folders)
        lines += ["## Environment", ""]
        for _, meta in sweeps:
            lines += [tables.markdown(tables.environment(meta)), ""]
    if paper:
        from ..paper import table1_markdown

        lines += [f"## {findings.PAPER}", ""]
        lines += [table1_markdown(), ""]
    if asvs:
        asv = pd.concat([d for d, _ in asvs], ignore_index=True)
        lines += ["## asv history", ""]
        asv_machines = {k: v for _, m in asvs for k, v in m.get("asv_machines", {}).items()}
        lines += asv_parameters([Path(m["path"]) for _, m in asvs], asv_machines)
        reg = regressions(asv)
        if not reg.empty:
            lines += [f"Latest commit against the previous one (changes over {REGRESSION:.0%} flagged):", ""]
            lines += [tables.markdown(reg), ""]
        for name in plots.history(asv, out):
            lines += [f"![{name}]({name})", ""]
    path = out / "REPORT.md"
    store.write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
