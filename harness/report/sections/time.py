"""Time per call of every flow (reference models and users' flows), per device and
batch: each op's median, the ratios of the ops to density evaluation, throughputs, and
the ratio with each family's reference solver beside the default's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...ops import DIRECT, DIRECTIONS, LOG_PROB, OPS, SAMPLE, TRAIN_STEP
from ...table import OK, Col
from .. import plots, tables
from ..findings import Finding, Value, note, ratio
from ..load import Sources

TITLE = "Time"


def title(device: str, batch: int) -> str:
    return f"Time on {device}, batch {int(batch)}"


def _rows(src: Sources) -> pd.DataFrame:
    rows = src.rows
    return tables.flows(rows) if not rows.empty else rows


def over_log_prob(
    top: pd.DataFrame, bottom: pd.DataFrame, model: str, dim: int, op: str, label: str = ""
) -> Value | None:
    """``model``'s op (a row of ``top``) over its log_prob (a row of ``bottom``) with the
    interval (paired where timed in the same rounds); None where either is not ok."""
    a, b = tables.ok_row(top, model, dim, op), tables.ok_row(bottom, model, dim, LOG_PROB)
    return ratio(a, b, label) if a is not None and b is not None else None


def over_log_prob_text(top: pd.DataFrame, bottom: pd.DataFrame, model: str, dim: int, op: str) -> str:
    """:func:`over_log_prob` as the table shows it, '' where either is not ok."""
    v = over_log_prob(top, bottom, model, dim, op)
    return v.show() if v is not None else ""


def time_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per flow x dim on one device and batch: each op's time (median [IQR] in ms,
    flagged noisy over 20%) with the default solver, each op over log_prob, sample /
    log_prob with the family's reference solver, and throughputs of the directions."""
    main, ref = tables.main_rows(df), tables.reference_rows(df)
    measured = [op for op in OPS if (main[Col.OP] == op).any()]
    rows = []
    for (model, dim), g in main.groupby([Col.MODEL, Col.DIM], sort=False):
        slow = g[g[Col.OP].isin(DIRECTIONS) & (g[Col.KIND] != "parallel") & (g[Col.SOLVER] != DIRECT)]
        row = {Col.MODEL: model, "d": int(dim), Col.SOLVER: str(slow[Col.SOLVER].iloc[0]) if len(slow) else ""}
        times = {op: tables.cell(main, model, dim, op, Col.MEDIAN_S) for op in measured}
        for op in measured:
            row[f"{op} ms [IQR]"] = tables.timed(main, model, dim, op)
        for op in measured:
            if op != LOG_PROB and LOG_PROB in times:
                row[f"{op} / log_prob"] = over_log_prob_text(main, main, model, dim, op)
        if not ref.empty and SAMPLE in times:
            slow_op = str(slow[Col.OP].iloc[0]) if len(slow) else ""
            shown = ""
            if slow_op in (SAMPLE, LOG_PROB):  # the slow direction by the reference solver, the other as timed
                over = (ref, main) if slow_op == SAMPLE else (main, ref)
                shown = over_log_prob_text(*over, model, dim, SAMPLE)
            row["sample / log_prob, reference solver"] = shown or (
                tables.status(ref, model, dim, slow_op) if slow_op else ""
            )
        batch = float(g[Col.BATCH].iloc[0])
        for op in (LOG_PROB, SAMPLE):
            if op in times:
                row[f"{op} (points/s)"] = tables.fmt(batch / times[op])
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def ratio_figure(g: pd.DataFrame, device: str, batch: int, out: Path) -> list[str]:
    """The headline question as a picture: each flow's sample / log_prob and training
    step / log_prob against d on one device and batch, with the ratios' 95% intervals
    as error bars (the table's numbers) and the line of equal cost."""
    main = tables.main_rows(g)
    panels = [op for op in (SAMPLE, TRAIN_STEP) if tables.ok(main[main[Col.OP] == op]).shape[0]]
    if not panels or tables.ok(main[main[Col.OP] == LOG_PROB]).empty:
        return []
    style = plots.styles(g)
    fig, axes = plots.grid(1, len(panels), 5.2, 3.6)
    for ax, op in zip(axes[0], panels):
        for model in dict.fromkeys(main[Col.MODEL]):
            points = []
            for dim in sorted(set(main[main[Col.MODEL] == model][Col.DIM].astype(int))):
                a, b = tables.ok_row(main, model, dim, op), tables.ok_row(main, model, dim, LOG_PROB)
                if a is not None and b is not None:
                    v = ratio(a, b)
                    low, high = (v.low, v.high) if v.low is not None else (v.value, v.value)
                    points.append((dim, v.value, v.value - low, high - v.value))
            if points:
                dims, values, below, above = zip(*points)
                ax.errorbar(dims, values, yerr=[below, above], label=model, capsize=2, lw=1.2, ms=4, **style[model])
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        plots.log_axes(ax, f"{op} / log_prob on {device}, batch {int(batch)}", ylabel="ratio of times (95% CI)")
        plots.plain_ticks(ax.yaxis)
        plots.legend(ax)
    return plots.save(fig, out, f"ratios_{device}_b{int(batch)}")


def render(src: Sources, out: Path) -> list[str]:
    df = _rows(src)
    if df.empty:
        return []
    lines = []
    for device, batch in tables.groups(df):
        g = tables.in_group(df, device, batch)
        table = time_table(g)
        if table.empty:
            continue
        lines += [f"## {title(device, batch)}", ""]
        lines += [
            "Medians of runs in milliseconds per call of `batch` points [interquartile range], each flow's "
            "default algorithm (its slow direction's solver in the `solver` column); `noisy`: an IQR over 20% of "
            "the median. The default algorithms of every flow at one d were timed in the same interleaved "
            "rounds, so each ratio to log_prob is the median of per-round ratios with a 95% bootstrap interval "
            "(paired), widened, where the spread between runs is calibrated, into the interval a rerun's estimate "
            "falls in (`rerun`; docs/methodology.md measures how often it does); the ratio with the family's "
            "reference solver divides runs timed apart (unpaired).",
            "",
            tables.markdown(table),
            "",
        ]
        for name in ratio_figure(g, device, batch, out)[:1]:
            lines += [
                "Each flow's ops against density evaluation, with their 95% intervals:",
                "",
                f"![ratios]({name})",
                "",
            ]
        missing = tables.main_rows(g)
        missing = missing[missing[Col.STATUS] != OK]
        if not missing.empty:
            lines += ["Not measured:", ""]
            lines += [
                f"- {r.model} d={int(r.dim)} {r.op} ({r.solver}): {r.status} ({r.reason})" for r in missing.itertuples()
            ]
            lines += [""]
    return lines


def largest_common_dim(df: pd.DataFrame, models: list[str], ops: tuple[str, ...]) -> int | None:
    """The largest d at which every model in ``models`` has every op in ``ops`` ok."""
    done = tables.ok(df)
    dims = None
    for model in models:
        mine = done[done[Col.MODEL] == model]
        have = set.intersection(*(set(mine[mine[Col.OP] == op][Col.DIM].astype(int)) for op in ops))
        dims = have if dims is None else dims & have
    return max(dims) if dims else None


def _over_log_prob(g: pd.DataFrame, device: str, batch: int, op: str, question: str, words: str) -> Finding | None:
    models = list(dict.fromkeys(tables.ok(g[g[Col.OP] == op])[Col.MODEL]))
    dim = largest_common_dim(g, models, (op, LOG_PROB)) if models else None
    if dim is None:
        return None
    values = []
    for model in models:
        a, b = tables.ok_row(g, model, dim, op), tables.ok_row(g, model, dim, LOG_PROB)
        slow = a if a[Col.KIND] != "parallel" else b
        label = f"{model} ({slow[Col.SOLVER]})" if slow[Col.SOLVER] != DIRECT else model
        values.append(ratio(a, b, label, f"{op} / log_prob"))
    text = f"on {device}, batch {batch}, at d={dim} (the largest d every flow reached), {words}: " + ", ".join(
        f"{v.label} {v.show()}" for v in values
    )
    return Finding(
        question, text, title(device, batch), tuple(values), note(values), dict(device=device, batch=batch, d=dim)
    )


def findings(src: Sources) -> list[Finding]:
    df = _rows(src)
    if df.empty:
        return []
    found = []
    for device, batch in tables.groups(df):
        g = tables.main_rows(tables.in_group(df, device, batch))
        found.append(
            _over_log_prob(
                g,
                device,
                batch,
                SAMPLE,
                "Sampling against density evaluation",
                "sample / log_prob, each slow direction's solver in brackets",
            )
        )
        found.append(
            _over_log_prob(
                g,
                device,
                batch,
                TRAIN_STEP,
                "A training step against density evaluation",
                f"{OPS[TRAIN_STEP].title} / log_prob",
            )
        )
    return [f for f in found if f is not None]
