"""Quality: what each flow's density reaches for its size and training time (the fit
folders: fit.csv, curves, density grids), beside N(0, I), the true entropy of the toys
and the published numbers."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from ...published import PUBLISHED_LL, PUBLISHED_SOURCE
from ...table import DENSITIES, OK, SMOKE, Col, fit_stem
from .. import fits, plots, tables
from ..findings import Finding, Value
from ..load import Sources

TITLE = "Quality: density against size and training time"


def _pareto(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """True where no other point is at least as low in x and y and lower in one."""
    return np.array([not np.any((xs <= x) & (ys <= y) & ((xs < x) | (ys < y))) for x, y in zip(xs, ys)], dtype=bool)


def nll_table(df: pd.DataFrame) -> pd.DataFrame:
    """Test NLL per data set (rows) and model (columns): the median over seeds [min, max]
    with the fits' mean standard error, diverged seeds apart; N(0, I)'s and, for the
    toys, the true entropy."""
    agg = fits.over_seeds(df)
    rows = []
    for data, g in agg.groupby(Col.DATA, sort=False):
        first = g.iloc[0]
        row = {Col.DATA: data, "d": int(first[Col.DIM]), "NLL in": first["units"], "seeds": int(g["seeds"].max())}
        if not math.isnan(first[Col.ENTROPY]):
            row["true entropy"] = tables.fmt(first[Col.ENTROPY], 4)
        row["N(0, I)"] = tables.fmt(first["baseline"], 4)
        for r in g.itertuples():
            row[r.model] = fits.show_median(r.nll_median, r.nll_min, r.nll_max, r.nll_se, r.seeds, r.diverged)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def gap_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per toy, each model's gap mean(log p - log q) on the test points, paired on the
    same points (an estimate of KL(truth || model), nats): mean over seeds ± sd (SE)."""
    agg = fits.over_seeds(df)
    agg = agg[agg[Col.GAP].notna()] if not agg.empty else agg
    rows = []
    for data, g in agg.groupby(Col.DATA, sort=False) if not agg.empty else []:
        rows.append(
            {
                Col.DATA: data,
                **{r.model: fits.show(getattr(r, Col.GAP), r.gap_sd, getattr(r, Col.GAP_SE)) for r in g.itertuples()},
            }
        )
    return pd.DataFrame(rows).fillna("")


def ranking(folder: Path, df: pd.DataFrame) -> list[tuple[str, pd.DataFrame, fits.Paired | None]]:
    """Per data set: its models by median test NLL over the seeds that did not diverge,
    and the paired comparison of the first two (None with a single model)."""
    out = []
    agg = fits.over_seeds(df)
    for data, g in agg.groupby(Col.DATA, sort=False):
        g = g.sort_values("nll_median")
        pair = fits.paired(folder, df, data, g.iloc[0][Col.MODEL], g.iloc[1][Col.MODEL]) if len(g) > 1 else None
        out.append((data, g, pair))
    return out


def verdict_text(pair: fits.Paired | None, units: str) -> str:
    """'best: naf, by 0.08 [0.05, 0.11] over maf' or 'a tie of naf and maf (...)'."""
    if pair is None:
        return ""
    interval = f"{pair.diff:+.3f} [{pair.low:+.3f}, {pair.high:+.3f}] {units}"
    seeds = f"{pair.seeds} seed{'s' if pair.seeds != 1 else ''}, {pair.how}"
    if pair.seeds < 2:  # one training: its interval is over test points, no verdict on the models
        return (
            f"lowest: {pair.best}, {pair.runner_up} - {pair.best} = {interval} ({pair.how}, {pair.covers}; "
            "no verdict with one seed)"
        )
    if pair.clear:
        return f"best: {pair.best}, ahead of {pair.runner_up} by {interval} ({seeds})"
    return f"a tie of {pair.best} and {pair.runner_up}: {pair.runner_up} - {pair.best} = {interval} ({seeds})"


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """What each fit cost and what the trained model costs to use."""
    done = df[df[Col.STATUS] == OK]
    return pd.DataFrame(
        {
            Col.DATA: done[Col.DATA],
            Col.MODEL: done[Col.MODEL],
            Col.SEED: done[Col.SEED],
            "params (effective)": done[Col.PARAMS_EFFECTIVE].map(tables.fmt),
            "steps (best at)": [f"{int(s)} ({int(b)})" for s, b in zip(done[Col.STEPS], done[Col.BEST_STEP])],
            Col.STOPPED: done[Col.STOPPED],
            "train s": done[Col.TRAIN_S].map(lambda v: tables.fmt(v, 3)),
            "ms per step": (done[Col.STEP_S] * 1e3).map(tables.fmt),
            "log_prob ms": (done[Col.TRAINED_LOG_PROB_S] * 1e3).map(tables.fmt),
            "sample ms": (done[Col.TRAINED_SAMPLE_S] * 1e3).map(tables.fmt),
            "sample evals / d": done[Col.EVALUATIONS_PER_DIM].map(lambda v: tables.fmt(v, 3)),
        }
    ).fillna("")


def published_table(df: pd.DataFrame) -> pd.DataFrame:
    """Our test log-likelihoods beside the B-NAF and NSF papers' Tables 1 on the UCI sets fitted."""
    agg = fits.over_seeds(df)
    agg = agg[agg[Col.DATA].isin(list(PUBLISHED_LL))] if not agg.empty else agg
    rows = []
    for data, g in agg.groupby(Col.DATA, sort=False) if not agg.empty else []:
        row = {Col.DATA: data}
        row.update({f"{m} (paper)": v for m, v in PUBLISHED_LL[data].items()})
        # as the paper: mean ± sd over trainings (over seeds here; the SE where one seed)
        row.update({f"{r.model} (ours)": fits.show(-r.nll, r.nll_sd, r.nll_se, 2) for r in g.itertuples()})
        rows.append(row)
    return pd.DataFrame(rows)


def _findings(folder: Path, df: pd.DataFrame, meta: dict) -> list[Finding]:
    """Per data set: the best density (or a tie), its paired gap to the true entropy, how
    many models beat N(0, I), and the flags raised. None for a smoke test."""
    if meta.get("config", {}).get("quick"):
        return []
    found = []
    for data, g, pair in ranking(folder, df):
        best = g.iloc[0]
        units = best["units"]
        values = [Value(f"{best[Col.MODEL]} test NLL", float(best["nll_median"]), units=units)]
        shown = fits.show_median(
            best["nll_median"], best["nll_min"], best["nll_max"], best["nll_se"], int(best["seeds"]), best["diverged"]
        )
        seeds = int(best["seeds"])
        text = (
            f"(d={best[Col.DIM]}, {seeds} seed{'s' if seeds != 1 else ''}): lowest median test NLL "
            f"[min, max over seeds] {shown} {units} by {best[Col.MODEL]}"
        )
        if pair is not None and not math.isnan(pair.diff):
            values.append(Value(f"{pair.runner_up} - {pair.best}", pair.diff, pair.low, pair.high, units, pair.how))
            text += f"; {verdict_text(pair, units)}"
        if not math.isnan(best[Col.GAP]):
            values.append(Value(f"{best[Col.MODEL]} gap", float(best[Col.GAP]), units="nats"))
            text += (
                f"; its gap to the truth, mean(log p - log q) on the same test points: "
                f"{fits.show(best[Col.GAP], best['gap_sd'], best[Col.GAP_SE])} nats"
            )
        text += f"; {int((~g['worse']).sum())} of {len(g)} models beat N(0, I) ({best['baseline']:.3f})"
        flagged = [f"{r.model} worse than N(0, I)" for r in g.itertuples() if r.worse]
        flagged += [f"{r.model}'s validation and test NLL disagree" for r in g.itertuples() if r.disagree]
        flagged += [f"{r.model}: {len(r.diverged)} of {r.seeds} seeds diverged" for r in g.itertuples() if r.diverged]
        if flagged:
            text += " (flagged: " + "; ".join(flagged) + ")"
        note = "paired differences on the same test points: " + (
            pair.covers + " (95%)" if pair is not None else "one model: no comparison"
        )
        found.append(Finding(f"Quality on {data}", text, TITLE, tuple(values), note, dict(data=data)))
    return found


def _section(folder: Path, df: pd.DataFrame, meta: dict, out: Path) -> list[str]:
    """The quality section of one fit folder."""
    config = meta.get("config", {})
    lines = [f"## {TITLE}", ""]
    if config.get("quick"):
        lines += [f"**This is {SMOKE}.** Its numbers say the fit runs, not how good a flow is.", ""]
    lines += [
        f"Source: `{folder}`. Each model trained by maximum likelihood with Adam (lr {config.get('lr', '?')}, "
        f"batch {config.get('batch_size', '?')}), at most {config.get('steps', '?')} steps or "
        f"{config.get('wall_s', '?')} s per fit, the learning rate halved after {config.get('plateau', '?')} "
        f"validations without improvement and early stopping after {config.get('patience', '?')}; the "
        "weights best on validation are judged on the test split (see `harness.training`). Each model is "
        "fitted with every seed; cells give the median over seeds [min, max], with the fits' mean standard "
        f"error (SE); a seed whose test NLL is not finite or over {fits.DIVERGED:g} times |N(0, I)'s| past "
        "N(0, I)'s diverged: its value follows, outside the summary and the figure's axis. "
        "The gap to a toy's truth is mean(log p(x) - log q(x)) over the same test "
        "points (paired; an estimate of KL(truth || model)). A best flow is named only where its paired "
        "difference to the runner-up is clear; otherwise they are a tie.",
        "",
    ]
    lines += [tables.markdown(nll_table(df)), ""]
    ranked = [(data, verdict_text(pair, g.iloc[0]["units"])) for data, g, pair in ranking(folder, df)]
    if any(text for _, text in ranked):
        lines += ["Best or tie, per data set (the runner-up's NLL minus the best's, 95% interval):", ""]
        lines += [f"- {data}: {text}" for data, text in ranked if text] + [""]
    agg = fits.over_seeds(df)
    flagged = agg[agg["worse"] | agg["disagree"]] if not agg.empty else agg
    if not flagged.empty:
        lines += ["Flagged fits:", ""]
        for r in flagged.itertuples():
            why = [
                w for w, on in (("worse than N(0, I)", r.worse), ("validation and test NLL disagree", r.disagree)) if on
            ]
            lines += [f"- {r.model} on {r.data}: {', '.join(why)}"]
        lines += [""]
    gaps = gap_table(df)
    if not gaps.empty:
        lines += [
            "Gap to the true entropy (nats per point; lower is better, 0 is the truth):",
            "",
            tables.markdown(gaps),
            "",
        ]
    for name in quality_figure(df, out)[:1]:
        lines += [
            "Test NLL against training time and against parameters; the Pareto front (no model both "
            "faster to train and better) is ringed:",
            "",
            f"![quality]({name})",
            "",
        ]
    grids = sorted((folder / DENSITIES).glob("*.npy")) if (folder / DENSITIES).is_dir() else []
    for name in densities_figure(df, grids, out)[:1]:
        lines += ["Trained densities of the 2-D toys beside the truth:", "", f"![densities]({name})", ""]
    lines += ["Cost of each fit and of the trained model (log_prob and sample on the fit's timing batch):", ""]
    lines += [tables.markdown(cost_table(df)), ""]
    published = published_table(df)
    if not published.empty:
        used = config.get("model_config") or "none: each family's harness defaults (`python -m harness models`)"
        lines += [
            f"Beside the published test log-likelihoods ({PUBLISHED_SOURCE}; higher is better). Ours: the "
            f"configuration above, model settings {used}; the papers' models are larger and trained longer.",
            "",
        ]
        lines += [tables.markdown(published), ""]
    failed = df[df[Col.STATUS] != OK]
    if not failed.empty:
        lines += ["Fits that did not finish:", ""]
        lines += [f"- {r.model} on {r.data}, seed {r.seed}: {r.status} ({r.reason})" for r in failed.itertuples()]
        lines += [""]
    return lines


def quality_figure(rows: pd.DataFrame, out: Path) -> list[str]:
    """Per data set, test NLL against training time (top) and against effective
    parameters (bottom) of the fit rows; the Pareto front ringed, N(0, I) and the true
    entropy dashed. A diverged seed is an x at the top of its panel: the axis is the
    other seeds'."""
    done = rows[rows[Col.STATUS] == OK]
    if done.empty:
        return []
    blown = fits.diverged(done[Col.TEST_NLL].astype(float), done[Col.BASELINE_NLL].astype(float))
    style = plots.styles(done)
    done, diverged = done[~blown], done[blown]
    sets = list(dict.fromkeys(done[Col.DATA]))
    fig, axes = plt.subplots(2, len(sets), figsize=(3.1 * len(sets) + 1.6, 6.2), layout="constrained", squeeze=False)
    for col, data in enumerate(sets):
        g = done[done[Col.DATA] == data]
        for row, x, label in ((0, Col.TRAIN_S, "training time (s)"), (1, Col.PARAMS_EFFECTIVE, "parameters")):
            ax = axes[row][col]
            front = _pareto(g[x].to_numpy(float), g[Col.TEST_NLL].to_numpy(float))
            for r, on_front in zip(g.itertuples(), front):
                point = dict(style[r.model], linestyle="none")
                ax.errorbar(getattr(r, x), r.test_nll, yerr=r.test_nll_se, label=r.model, **point)
                if on_front:
                    ax.plot(getattr(r, x), r.test_nll, marker="o", ms=13, mfc="none", mec="black", lw=0)
            order = np.argsort(g[x].to_numpy(float)[front])
            ax.plot(g[x].to_numpy(float)[front][order], g[Col.TEST_NLL].to_numpy(float)[front][order], "k:", lw=0.8)
            ax.axhline(g[Col.BASELINE_NLL].iloc[0], color="grey", linestyle="--", lw=0.8, label="N(0, I)")
            if g[Col.ENTROPY].notna().any():
                ax.axhline(g[Col.ENTROPY].iloc[0], color="black", linestyle="-.", lw=0.8, label="true entropy")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(label)
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_title(f"{data} (d={int(g[Col.DIM].iloc[0])})", fontsize=10)
            if col == 0:
                ax.set_ylabel(f"test NLL ({g[Col.NLL_UNITS].iloc[0]})")
            for r in diverged[diverged[Col.DATA] == data].itertuples():
                x_at = getattr(r, x)
                ax.plot(x_at, 0.97, "x", color=style[r.model]["color"], transform=ax.get_xaxis_transform(), ms=8)
                ax.plot([], [], "x", color="black", label="diverged seed (value in the table)")
    legend: dict[str, object] = {}
    for ax in axes.flat:  # the union of the legends, each entry once (a model has a point per seed)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle("Test NLL against training time and size (lower is better)", fontsize=10)
    return plots.save(fig, out, "quality")


def densities_figure(fits: pd.DataFrame, grids: list[Path], out: Path) -> list[str]:
    """The trained 2-D densities beside the truth: one row per toy, the truth first.
    ``grids``: the fit folder's ``densities/<model>__<toy>.npy`` (log-density grids)."""
    by_name = {p.stem: p for p in grids}
    toys = [p.stem.split("__", 1)[1] for p in grids if p.stem.startswith(fit_stem("truth", ""))]
    done = fits[fits[Col.STATUS] == OK]
    models = list(dict.fromkeys(done[Col.MODEL]))
    toys = [t for t in dict.fromkeys(toys) if (done[Col.DATA] == t).any()]
    if not toys or not models:
        return []
    columns = ["truth", *models]
    fig, axes = plt.subplots(
        len(toys), len(columns), figsize=(1.7 * len(columns), 1.7 * len(toys) + 0.4), squeeze=False
    )
    for i, toy in enumerate(toys):
        truth = np.exp(np.load(by_name[fit_stem("truth", toy)]))
        top = float(truth.max())
        for j, name in enumerate(columns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            stem = fit_stem(name, toy)
            if stem in by_name:
                ax.imshow(np.exp(np.load(by_name[stem])), origin="lower", cmap="magma", vmin=0, vmax=top)
            else:
                ax.text(0.5, 0.5, "not fitted", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(toy, fontsize=8)
    fig.suptitle("Densities of the 2-D toys (same colour scale per row)", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, out, "densities", svg=False)


def render(src: Sources, out: Path) -> list[str]:
    lines = []
    for folder, df, meta in src.fits:
        lines += _section(folder, df, meta, out)
    return lines


def findings(src: Sources) -> list[Finding]:
    return [f for folder, df, meta in src.fits for f in _findings(folder, df, meta)]
