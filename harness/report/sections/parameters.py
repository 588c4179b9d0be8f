"""Parameters of every flow against d, in both counting conventions, and NAF against
B-NAF: the question the B-NAF paper's Table 1 answers (with the papers' presets, in
the paper section)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...table import PAPER, Col
from .. import plots, tables
from ..findings import Finding, Value, link
from ..load import Sources
from . import paper

TITLE = "Parameters"


def _sizes(src: Sources) -> pd.DataFrame:
    rows = src.rows
    if rows.empty:
        return rows
    return tables.flows(rows).dropna(subset=[Col.PARAMS_EFFECTIVE]).drop_duplicates([Col.MODEL, Col.DIM])


def naf_bnaf(sizes: pd.DataFrame) -> pd.DataFrame:
    """NAF against B-NAF with the harness defaults, per d, in both conventions: stored
    (numel of every tensor) and effective (non-zero entries)."""
    at = sizes.set_index([Col.MODEL, Col.DIM])
    rows = []
    for dim in sorted(sizes[Col.DIM].unique()):
        if ("naf", dim) not in at.index or ("bnaf", dim) not in at.index:
            continue
        naf, bnaf = at.loc[("naf", dim)], at.loc[("bnaf", dim)]
        rows.append(
            {
                "d": int(dim),
                "naf stored": tables.fmt(naf[Col.PARAMS_STORED]),
                "naf effective": tables.fmt(naf[Col.PARAMS_EFFECTIVE]),
                "bnaf stored": tables.fmt(bnaf[Col.PARAMS_STORED]),
                "bnaf effective": tables.fmt(bnaf[Col.PARAMS_EFFECTIVE]),
                "naf / bnaf, stored": naf[Col.PARAMS_STORED] / bnaf[Col.PARAMS_STORED],
                "naf / bnaf, effective": naf[Col.PARAMS_EFFECTIVE] / bnaf[Col.PARAMS_EFFECTIVE],
            }
        )
    return pd.DataFrame(rows)


def ratios_to(sizes: pd.DataFrame, reference: str = "bnaf", column: str = Col.PARAMS_EFFECTIVE) -> pd.DataFrame:
    """Each flow's parameters over ``reference``'s at each d (Table 1 style)."""
    wide = sizes.pivot(index=Col.DIM, columns=Col.MODEL, values=column)
    if reference not in wide:
        return pd.DataFrame()
    ratios = wide.div(wide[reference], axis=0).drop(columns=reference)
    out = ratios.map(tables.fmt).reset_index().rename(columns={Col.DIM: "d"})
    out.columns = ["d"] + [f"{m} / {reference}" for m in ratios.columns]
    return out


def figure(sizes: pd.DataFrame, out: Path) -> list[str]:
    """Parameters (effective solid, stored dashed) against d; flows with identical
    counts share one line and one legend entry."""
    sizes = sizes.sort_values(Col.DIM)
    style = plots.styles(sizes)
    fig, axes = plots.grid(1, 1, 8.6, 4.6)
    ax = axes[0][0]
    same: dict[tuple, list[str]] = {}
    for model, g in sizes.groupby(Col.MODEL, sort=False):
        same.setdefault(tuple(zip(g[Col.DIM], g[Col.PARAMS_EFFECTIVE], g[Col.PARAMS_STORED])), []).append(model)
    for models in same.values():
        g, s = sizes[sizes[Col.MODEL] == models[0]], style[models[0]]
        name = " = ".join(models) + (" (identical)" if len(models) > 1 else "")
        ax.plot(g[Col.DIM], g[Col.PARAMS_EFFECTIVE], label=f"{name} effective", **dict(s, linestyle="-"))
        ax.plot(g[Col.DIM], g[Col.PARAMS_STORED], linestyle="--", alpha=0.6, color=s["color"], label=f"{name} stored")
    plots.log_axes(ax, "Parameters against d (effective: without masked-out entries)", ylabel="parameters")
    plots.legend(ax)
    return plots.save(fig, out, "params")


def render(src: Sources, out: Path) -> list[str]:
    sizes = _sizes(src)
    if sizes.empty:
        return []
    lines = [f"## {TITLE}", ""]
    for name in figure(sizes, out)[:1]:
        lines += [f"![params]({name})", ""]
    pair = naf_bnaf(sizes)
    if not pair.empty:
        shown = pair.assign(**{c: pair[c].map(tables.fmt) for c in pair.columns if " / " in c})
        lines += [
            "NAF against B-NAF with the harness defaults, in both counting conventions (stored: numel of every "
            "tensor; effective: non-zero entries, masked-out ones not counted):",
            "",
            tables.markdown(shown),
            "",
        ]
    ratios = ratios_to(sizes)
    if not ratios.empty:
        lines += ["Parameter ratios to B-NAF (effective parameters):", "", tables.markdown(ratios), ""]
    return lines


def findings(src: Sources) -> list[Finding]:
    sizes = _sizes(src)
    pair = naf_bnaf(sizes) if not sizes.empty else pd.DataFrame()
    if pair.empty:
        return []
    last = pair.iloc[-1]
    values = [
        Value(f"effective at d={last['d']}", float(last["naf / bnaf, effective"]), units="naf / bnaf parameters"),
        Value(f"stored at d={last['d']}", float(last["naf / bnaf, stored"]), units="naf / bnaf parameters"),
    ]
    text = (
        f"with the harness defaults (`python -m harness models`) at d={last['d']}, NAF holds {values[0].show()} "
        f"times B-NAF's parameters counted as non-zero entries (effective) and {values[1].show()} times counted "
        "as numel (stored)"
    )
    table1 = src.side[PAPER]
    if not table1.empty:
        ratio5 = table1["ratio5"].astype(float)
        values.append(Value("NAF(5) / B-NAF, papers' presets, least", float(ratio5.min()), units="parameters"))
        values.append(Value("NAF(5) / B-NAF, papers' presets, most", float(ratio5.max()), units="parameters"))
        text += (
            f"; with the papers' configurations and each author's convention (NAF numel, B-NAF non-zero), NAF(5) "
            f"holds {tables.fmt(ratio5.min())} to {tables.fmt(ratio5.max())} times B-NAF's parameters on the five "
            f"UCI sets ({link(paper.TITLE)}): the answer depends on the configuration"
        )
    return [Finding("B-NAF against NAF parameters", text, TITLE, tuple(values), "", dict(d=int(last["d"])))]
