"""Ours against the peers (zuko, pyro, nflows) and any flow that joined a contest: the
sweep's absolute times per family, and the interleaved A/B contests of ``harness
versus`` (versus.csv), which alone may call one faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...ops import FRAMEWORK_NAMES, framework
from ...table import OK, Col
from .. import plots, tables
from ..findings import CONTEST_NOTE, Finding, Value
from ..load import Sources, context_of

TITLE = "Ours against peers"
CONTESTS = "A/B: ours against the fastest peer"
NAF_CONTEST = "naf.sample/log_prob"
BOOTSTRAP = CONTEST_NOTE


def family_peers(df: pd.DataFrame, family: str) -> list[str]:
    """The peers of reference model ``family`` in the table, in order of appearance."""
    return list(dict.fromkeys(df[tables.is_peer(df) & (df[Col.FAMILY].fillna("") == family)][Col.MODEL]))


def peer_table(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """One family on one device and batch: per d and op where a peer was measured, our
    time and each peer's (absolute times only: the sweep times them minutes apart)."""
    peers = family_peers(df, family)
    dims = df[df[Col.MODEL].isin(peers)][Col.DIM].unique()
    rows = []
    for (dim, op), _ in df[df[Col.MODEL].isin([family, *peers]) & df[Col.DIM].isin(dims)].groupby([Col.DIM, Col.OP]):
        row = {"d": int(dim), Col.OP: op}
        if family in set(df[Col.MODEL]):
            row[f"{family} ms [IQR]"] = tables.timed(df, family, dim, op)
        for p in peers:
            r = tables.row(df, p, dim, op)
            why = "" if r is None or r[Col.STATUS] == OK else f"{r[Col.STATUS]}: {r[Col.REASON]}"
            row[f"{p} ms [IQR]"] = why or tables.timed(df, p, dim, op)
        rows.append(row)
    return pd.DataFrame(rows)


def peer_params(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """Effective (stored) parameters of a family and its peers at each d."""
    peers = family_peers(df, family)
    models = [family, *peers] if family in set(df[Col.MODEL]) else peers
    rows = []
    for dim in sorted(df[df[Col.MODEL].isin(peers)][Col.DIM].unique()):
        row = {"d": int(dim)}
        for m in models:
            hit = df[(df[Col.MODEL] == m) & (df[Col.DIM] == dim)].dropna(subset=[Col.PARAMS_EFFECTIVE])
            row[m] = (
                ""
                if hit.empty
                else f"{tables.fmt(hit[Col.PARAMS_EFFECTIVE].iloc[0])} ({tables.fmt(hit[Col.PARAMS_STORED].iloc[0])})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def interval(r: pd.Series) -> str:
    """A contest row's ratio with its 95% interval, as text."""
    if pd.isna(r.get("ratio", np.nan)):
        return ""
    if bound(r.get("ratio_low")) is None:  # no interval (a contender timed by one call)
        return f"{float(r['ratio']):.3f} (no interval)"
    return f"{float(r['ratio']):.3f} [{float(r['ratio_low']):.3f}, {float(r['ratio_high']):.3f}]"


SPLINE_CONVENTIONS = (
    "The spline peers hold our parameter count at the same bins, bound, hidden sizes and depth (tested), with "
    "their own conventions: zuko soft-clips the unconstrained widths, heights and derivatives and takes the "
    "derivatives as exp (its NSF class fixes the bound at 5: the adapter passes ours); nflows and normflows "
    "divide widths and heights by the square root of the hidden width (normflows also starts at the identity); "
    "pyro's quadratic-order spline on a network built with K, K and K - 1 outputs (its helper gives four sets). "
    "All four sample by d full conditioner passes per layer; ours by the incremental solve."
)


def _once(rounds: object) -> bool:
    """Whether a timed contender's row was timed by one call (harness.versus.timed_once)."""
    return bound(rounds) == 1


def by_framework(peers: pd.DataFrame) -> str:
    """The timed peers' ops and times, grouped by the framework each computes in."""
    stacks: dict[str, list[str]] = {}
    for r in peers.itertuples():
        said = f"{r.contender} {r.op} {tables.fmt(r.median_s * 1e3)}" + (" (1 call)" if _once(r.rounds) else "")
        stacks.setdefault(FRAMEWORK_NAMES[framework(str(r.library))], []).append(said)
    return "; ".join(f"{name}: {', '.join(said)}" for name, said in stacks.items())


def versus_table(vs: pd.DataFrame) -> pd.DataFrame:
    """The contests: ours, the peers (by framework) and the fastest peer, ours over it;
    flows that joined a contest with ours over each; contenders not timed, with the
    reason."""
    rows = []
    vs = vs.assign(**{Col.CONTEXT: context_of(vs)})
    for (contest, dim, context), g in vs[vs["contest"] != NAF_CONTEST].groupby(
        ["contest", Col.DIM, Col.CONTEXT], sort=False
    ):
        ours = g[g["role"] == "ours"].iloc[0]
        timed = g[(g["role"] != "ours") & (g[Col.STATUS] == OK)]
        peers, entrants = timed[timed["role"] == "peer"], timed[timed["role"] == "entrant"]
        broken = g[g[Col.STATUS] != OK]
        rows.append(
            {
                "ours": contest,
                "d": int(dim),
                Col.CONTEXT: int(context),
                "ours, PyTorch (ms)": tables.fmt(ours[Col.MEDIAN_S] * 1e3),
                "peers (ms)": by_framework(peers),
                "fastest peer": ours["fastest"],
                "ours / fastest peer [95% CI]": interval(ours),
                "rounds": tables.fmt(ours["rounds"]),
                "ours is": ours.get("verdict", ""),
                "joined (ours / it [95% CI])": ", ".join(
                    f"{r.contender} {tables.fmt(r.median_s * 1e3)} ms ({interval(pd.Series(r._asdict()))})"
                    for r in entrants.itertuples()
                ),
                "not timed": "; ".join(f"{r.contender}: {r.reason}" for r in broken.itertuples()),
            }
        )
    out = pd.DataFrame(rows)
    empty = [c for c in (Col.CONTEXT, "joined (ours / it [95% CI])", "not timed") if c in out and not out[c].any()]
    return out.drop(columns=empty)


VERDICT_COLORS = {"ours faster": "C2", "ours slower": "C3", "no clear difference": "0.5"}


def color(verdict: str) -> str:
    """The forest plots' colour of a contest's verdict (faster, slower, or neither)."""
    return VERDICT_COLORS.get(f"ours {verdict}", VERDICT_COLORS["no clear difference"])


def forest(
    vs: pd.DataFrame, out: Path, stem: str = "contests", title: str = "Ours against the fastest peer, per contest"
) -> list[str]:
    """Ours over the fastest peer in every contest (a row per contest, d and context), with
    its 95% interval and the line of parity: green where ours is faster, red where slower,
    grey where the interval holds 1."""
    ours = vs[(vs["contest"] != NAF_CONTEST) & (vs["role"] == "ours") & vs["ratio"].notna()] if not vs.empty else vs
    contexts = context_of(ours)
    rows = [
        (
            f"{r.contest} d={int(r.dim)}" + (f" c={c}" if c else "") + f" vs {r.fastest}",
            float(r.ratio),
            float(r.ratio_low),
            float(r.ratio_high),
            color(str(r.verdict)),
        )
        for r, c in zip(ours.itertuples(), contexts)
    ]
    return plots.forest(rows, out, stem, title, "ours / fastest peer (95% interval over rounds)", VERDICT_COLORS)


def naf_table(vs: pd.DataFrame) -> pd.DataFrame:
    """sample / log_prob of our NAF and zuko's, timed in the same rounds."""
    g = vs[vs["contest"] == NAF_CONTEST] if not vs.empty else vs
    rows = []
    for (model, dim), h in g.groupby(["contender", Col.DIM], sort=False) if not g.empty else []:
        t = dict(zip(h[Col.OP], h[Col.MEDIAN_S]))
        rows.append(
            {
                Col.MODEL: model,
                "d": int(dim),
                "log_prob (ms)": tables.fmt(t["log_prob"] * 1e3),
                "sample (ms)": tables.fmt(t["sample"] * 1e3),
                "sample / log_prob [95% CI]": interval(h.iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def render(src: Sources, out: Path) -> list[str]:
    rows, vs = src.rows, src.contests()
    peer_rows = rows[tables.is_peer(rows)] if not rows.empty else rows
    if peer_rows.empty and vs.empty:
        return []
    lines = [f"## {TITLE}", ""]
    if not peer_rows.empty:
        lines += [
            "Peers are built from the same config as the reference model of their family (`harness.peers`: same "
            "K flows, hidden sizes, B-NAF hidden factors, spline bins and bound). The tables below are the sweep's "
            "absolute times, measured minutes apart and **not interleaved**: compare ours with a peer only "
            "through the A/B contests further down.",
            "",
        ]
        if (peer_rows[Col.FAMILY] == "nsf").any():
            lines += [SPLINE_CONVENTIONS, ""]
    for device, batch in tables.groups(peer_rows):
        g = tables.in_group(rows, device, batch)
        for family in dict.fromkeys(g[tables.is_peer(g)][Col.FAMILY].fillna("")):
            lines += [f"### {family or 'flows of no reference family'}: time on {device}, batch {batch}", ""]
            lines += [tables.markdown(peer_table(g, family)), "", "Parameters, effective (stored):", ""]
            lines += [tables.markdown(peer_params(g, family)), ""]
    if not vs.empty:
        lines += [f"### {CONTESTS}", ""]
        lines += [
            "`python -m harness versus`: float32, one thread, contenders alternating in one process on the same "
            "inputs, each output checked against the flow contract first; the ratio is the median over rounds of "
            "ours / the fastest peer of the round, with a bootstrap 95% interval over rounds (one process: it "
            "covers those rounds, not a rerun); `ours is` faster "
            "or slower only where the interval excludes 1 (`pass` = one data->base pass of the peer's flow, the "
            "work of an IAF sample). A flow that joined a contest is compared with ours on its own and is never "
            "called the fastest peer of a family it does not declare.",
            "",
            tables.markdown(versus_table(vs)),
            "",
        ]
        for name in forest(vs, out)[:1]:
            lines += [f"![contests]({name})", ""]
        naf = naf_table(vs)
        if not naf.empty:
            lines += [
                "NAF sampling against density evaluation, the four calls in the same rounds: ours inverts each "
                "dimension by safeguarded Newton; zuko's NAF bisects every dimension in each of d passes:",
                "",
                tables.markdown(naf),
                "",
            ]
    return lines


def bound(value: object) -> float | None:
    """An interval's bound as read from the table, None where there is none."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def findings(src: Sources) -> list[Finding]:
    vs = src.contests()
    if vs.empty:
        return []
    parts, values = [], []
    contests = vs[(vs["contest"] != NAF_CONTEST) & (vs["role"] == "ours")]
    for contest, g in contests.groupby("contest", sort=False):
        ours = g[g[Col.DIM] == g[Col.DIM].max()].iloc[0]
        low, high = bound(ours["ratio_low"]), bound(ours["ratio_high"])
        value = Value(f"{contest} at d={int(ours[Col.DIM])}", float(ours["ratio"]), low, high)
        values.append(value)
        if low is None:  # the fastest peer was timed by one call (harness.versus.ONCE): no verdict
            parts.append(
                f"{contest} at d={int(ours[Col.DIM])}: ours / {ours['fastest']} {value.show()} "
                "(the peer timed by one call: no interval, no verdict)"
            )
            continue
        verdict = str(ours["verdict"])
        winner = {"faster": "ours", "slower": ours["fastest"]}.get(
            verdict, f"no clear winner of ours and {ours['fastest']}"
        )
        parts.append(
            f"{contest} at d={int(ours[Col.DIM])}: {winner} (ours / {ours['fastest']} {value.show()}, ours {verdict})"
        )
    if not parts:
        return []
    text = "among each family's flows (A/B contests): " + "; ".join(parts)
    return [Finding("Fastest implementation per family", text, CONTESTS, tuple(values), BOOTSTRAP)]
