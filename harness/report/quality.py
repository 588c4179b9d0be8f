"""The quality section: what each flow's density reaches for its size and training time
(``harness.fit``'s fit.csv, curves and density grids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from ..paper import PUBLISHED_LL, PUBLISHED_SOURCE
from ..table import DENSITIES, FIT, FIT_COLUMNS, FIT_META, OK, Col
from . import plots
from .tables import fmt, markdown

TITLE = "Quality: density against size and training time"
NUMERIC = [
    Col.DIM,
    Col.PARAMS_STORED,
    Col.PARAMS_EFFECTIVE,
    Col.STEPS,
    Col.BEST_STEP,
    Col.TRAIN_S,
    Col.STEP_S,
    Col.TEST_NLL,
    Col.TEST_NLL_SE,
    Col.VAL_NLL,
    Col.BITS_PER_DIM,
    Col.ENTROPY,
    Col.GAP,
    Col.BASELINE_NLL,
    Col.TRAINED_LOG_PROB_S,
    Col.TRAINED_SAMPLE_S,
    Col.EVALUATIONS_PER_DIM,
]


def load_fit(folder: Path) -> tuple[pd.DataFrame, dict]:
    """fit.csv of ``folder`` with its numbers parsed, and fit.json."""
    df = pd.DataFrame(store.read_table(folder / FIT, strict=False), columns=FIT_COLUMNS).replace("", np.nan)
    for column in NUMERIC:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    meta = store.read_json(folder / FIT_META, missing={})
    return df, meta


def nll_table(df: pd.DataFrame) -> pd.DataFrame:
    """Test NLL +- standard error per data set (rows) and model (columns), with the
    standard normal's and, for the toys, the true entropy."""
    done = df[df[Col.STATUS] == OK]
    rows = []
    for data, g in done.groupby(Col.DATA, sort=False):
        row = {Col.DATA: data, "d": int(g[Col.DIM].iloc[0]), "NLL in": g[Col.NLL_UNITS].iloc[0]}
        if g[Col.ENTROPY].notna().any():
            row["true entropy"] = fmt(g[Col.ENTROPY].iloc[0], 4)
        row["N(0, I)"] = fmt(g[Col.BASELINE_NLL].iloc[0], 4)
        for r in g.itertuples():
            row[r.model] = f"{r.test_nll:.3f} ± {r.test_nll_se:.3f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def gap_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per toy, each model's gap test NLL - entropy (an estimate of KL(truth || model), nats)."""
    done = df[(df[Col.STATUS] == OK) & df[Col.GAP].notna()]
    if done.empty:
        return pd.DataFrame()
    t = done.pivot_table(index=Col.DATA, columns=Col.MODEL, values=Col.GAP, sort=False)
    t = t.map(lambda v: fmt(v, 3)).reset_index()
    best = done.loc[done.groupby(Col.DATA, sort=False)[Col.GAP].idxmin()]
    t["best"] = [f"{r.model} ({r.gap:.3f} ± {r.test_nll_se:.3f})" for r in best.itertuples()]
    return t


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """What each fit cost and what the trained model costs to use."""
    done = df[df[Col.STATUS] == OK]
    return pd.DataFrame(
        {
            Col.DATA: done[Col.DATA],
            Col.MODEL: done[Col.MODEL],
            "params (effective)": done[Col.PARAMS_EFFECTIVE].map(fmt),
            "steps (best at)": [f"{int(s)} ({int(b)})" for s, b in zip(done[Col.STEPS], done[Col.BEST_STEP])],
            Col.STOPPED: done[Col.STOPPED],
            "train s": done[Col.TRAIN_S].map(lambda v: fmt(v, 3)),
            "ms per step": (done[Col.STEP_S] * 1e3).map(fmt),
            "log_prob ms": (done[Col.TRAINED_LOG_PROB_S] * 1e3).map(fmt),
            "sample ms": (done[Col.TRAINED_SAMPLE_S] * 1e3).map(fmt),
            "sample evals / d": done[Col.EVALUATIONS_PER_DIM].map(lambda v: fmt(v, 3)),
        }
    ).fillna("")


def published_table(df: pd.DataFrame) -> pd.DataFrame:
    """Our test log-likelihoods beside the B-NAF paper's Table 1 on the UCI sets fitted."""
    done = df[(df[Col.STATUS] == OK) & df[Col.DATA].isin(list(PUBLISHED_LL))]
    rows = []
    for data, g in done.groupby(Col.DATA, sort=False):
        row = {Col.DATA: data}
        row.update({f"{m} (paper)": v for m, v in PUBLISHED_LL[data].items()})
        row.update({f"{r.model} (ours)": f"{-r.test_nll:.2f} ± {r.test_nll_se:.2f}" for r in g.itertuples()})
        rows.append(row)
    return pd.DataFrame(rows)


def findings(df: pd.DataFrame) -> list[str]:
    """Bullets for the report's Findings: the best density per data set, and the gap."""
    done = df[df[Col.STATUS] == OK]
    if done.empty:
        return []
    bullets = []
    for data, g in done.groupby(Col.DATA, sort=False):
        best = g.loc[g[Col.TEST_NLL].idxmin()]
        text = (
            f"**Quality on {data}** (d={int(best[Col.DIM])}): best test NLL {best[Col.TEST_NLL]:.3f} ± "
            f"{best[Col.TEST_NLL_SE]:.3f} {best[Col.NLL_UNITS]} by {best[Col.MODEL]} "
            f"({fmt(best[Col.PARAMS_EFFECTIVE])} parameters, {best[Col.TRAIN_S]:.0f} s of training)"
        )
        if pd.notna(best[Col.GAP]):
            text += (
                f"; gap to the true entropy {best[Col.ENTROPY]:.3f}: {best[Col.GAP]:+.3f} ± "
                f"{best[Col.TEST_NLL_SE]:.3f} nats (KL(truth || model) estimated)"
            )
        beaten = int((g[Col.TEST_NLL] < g[Col.BASELINE_NLL]).sum())
        text += f"; {beaten} of {len(g)} models beat N(0, I) ({best[Col.BASELINE_NLL]:.3f})."
        bullets.append(text)
    return bullets


def section(folder: Path, out: Path) -> list[str]:
    """The report's quality section from a fit folder."""
    df, meta = load_fit(folder)
    config = meta.get("config", {})
    lines = [f"## {TITLE}", ""]
    lines += [
        f"Source: `{folder}`. Each model trained by maximum likelihood with Adam (lr {config.get('lr', '?')}, "
        f"batch {config.get('batch_size', '?')}), at most {config.get('steps', '?')} steps or "
        f"{config.get('wall_s', '?')} s per fit, the learning rate halved after {config.get('plateau', '?')} "
        f"validations without improvement and early stopping after {config.get('patience', '?')}; the "
        "weights best on validation are judged on the test split (see `harness.fit`). The toys' true "
        "entropies come from quadrature (`harness.data.toys`); the gap test NLL - entropy estimates "
        "KL(truth || model), with the test NLL's standard error.",
        "",
    ]
    lines += [markdown(nll_table(df)), ""]
    gaps = gap_table(df)
    if not gaps.empty:
        lines += ["Gap to the true entropy (nats per point; lower is better, 0 is the truth):", "", markdown(gaps), ""]
    for name in plots.quality(df, out)[:1]:
        lines += [
            "Test NLL against training time and against parameters; the Pareto front (no model both "
            "faster to train and better) is ringed:",
            "",
            f"![quality]({name})",
            "",
        ]
    grids = sorted((folder / DENSITIES).glob("*.npy")) if (folder / DENSITIES).is_dir() else []
    for name in plots.densities(df, grids, out)[:1]:
        lines += ["Trained densities of the 2-D toys beside the truth:", "", f"![densities]({name})", ""]
    lines += ["Cost of each fit and of the trained model (log_prob and sample on the fit's timing batch):", ""]
    lines += [markdown(cost_table(df)), ""]
    published = published_table(df)
    if not published.empty:
        used = config.get("model_config") or "none: each family's harness defaults (`python -m harness models`)"
        lines += [
            f"Beside the published test log-likelihoods ({PUBLISHED_SOURCE}; higher is better). Ours: the "
            f"configuration above, model settings {used}; the papers' models are larger and trained longer.",
            "",
        ]
        lines += [markdown(published), ""]
    failed = df[df[Col.STATUS] != OK]
    if not failed.empty:
        lines += ["Fits that did not finish:", ""]
        lines += [f"- {r.model} on {r.data}: {r.status} ({r.reason})" for r in failed.itertuples()]
        lines += [""]
    return lines
