"""What every section's figures share (matplotlib, Agg backend, deterministic files):
one colour and marker per flow in every figure, curves with their spread and the
points not measured, log-log axes, legends beside the data."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# byte-identical outputs for identical inputs: a fixed salt for SVG element ids, and no
# date in any image's metadata (see save)
matplotlib.rcParams["svg.hashsalt"] = "flowbench"
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402

from ..ops import FAMILIES, OPS, PEER_LIBRARIES  # noqa: E402
from ..table import OK, Col  # noqa: E402
from .tables import fit_slope  # noqa: E402

# a line style per op, in the vocabulary's order
LINES = ("-", "--", ":", "-.")
OP_STYLE = {op: dict(linestyle=LINES[i % len(LINES)]) for i, op in enumerate(OPS)}
KIND_LABEL = {"parallel": "parallel", "sequential": "sequential in d", "iterative": "iterative (root-finding)"}
# users' flows: colours and markers of their own, in order of appearance
OTHER_COLORS = ("C6", "C8", "C9", "C7")
OTHER_MARKERS = ("h", "p", "8", "d", "<", ">", "H")


def _mix(color: str, toward: str, share: float) -> str:
    a, b = np.array(to_rgb(color)), np.array(to_rgb(toward))
    return to_hex((1 - share) * a + share * b)


def styles(df: pd.DataFrame) -> dict[str, dict]:
    """``color``, ``marker`` and ``linestyle`` of every flow in the table, the same in
    every figure: a reference model its family's colour, solid; a peer a shade of its
    family's colour with its library's marker and line style; any other flow (a
    user's) a colour and marker of its own, solid."""
    out: dict[str, dict] = {}
    others = 0
    names = df[[Col.MODEL, Col.FAMILY, Col.LIBRARY]].drop_duplicates(Col.MODEL)
    for model, family, library in names.itertuples(index=False):
        family = family if isinstance(family, str) else ""
        if model in FAMILIES:
            out[model] = dict(color=FAMILIES[model].color, marker=FAMILIES[model].marker, linestyle="-")
        elif family in FAMILIES and library in PEER_LIBRARIES:
            toward, share, marker, line = PEER_LIBRARIES[library]
            out[model] = dict(color=_mix(FAMILIES[family].color, toward, share), marker=marker, linestyle=line)
        else:
            out[model] = dict(
                color=OTHER_COLORS[others % len(OTHER_COLORS)],
                marker=OTHER_MARKERS[others % len(OTHER_MARKERS)],
                linestyle="-",
            )
            others += 1
    return out


MISSING = "x: not timed (why: the tables)"


def legend(ax, **kwargs) -> None:
    """The legend beside the axes, off the data, each entry once."""
    entries: dict[str, object] = {}
    for handle, label in zip(*ax.get_legend_handles_labels()):
        entries.setdefault(label, handle)
    if entries:
        ax.legend(
            list(entries.values()),
            list(entries),
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0,
            fontsize=8,
            frameon=False,
            **kwargs,
        )


def file_stem(stem: str) -> str:
    """A figure's file name from text that may hold values read from a table: letters,
    digits, '_', '-' and '.' only, never leading with a dot, so it stays in its folder."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".") or "figure"


_DRAWING = contextvars.ContextVar("drawing", default=True)


@contextlib.contextmanager
def drawn(on: bool) -> Iterator[None]:
    """Within the block, :func:`save` draws and writes figures only if ``on`` (a report
    without figures: its tables and findings, in a fraction of the time)."""
    token = _DRAWING.set(on)
    try:
        yield
    finally:
        _DRAWING.reset(token)


PNG_DPI = 110


def save(fig, out: Path, stem: str, svg: bool = True) -> list[str]:
    """The figure as PNG (and SVG) in ``out``, each written whole under a sanitised name
    (harness.records.write_bytes: no link there is followed); nothing, and no name,
    outside :func:`drawn`'s figures."""
    import io

    from ..records import write_bytes

    if not _DRAWING.get():
        plt.close(fig)
        return []

    stem = file_stem(stem)
    names = []
    # the tight box found once, by one draw at the PNG's dpi (each savefig with "tight"
    # draws twice: to find the box, then to write), and the layout kept from that draw
    fig.set_dpi(PNG_DPI)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    box = fig.get_tightbbox().padded(plt.rcParams["savefig.pad_inches"])
    for ext, kwargs in (
        ("png", dict(dpi=PNG_DPI, metadata={"Software": None})),
        ("svg", dict(metadata={"Date": None})),
    ):
        if ext == "svg" and not svg:
            break
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, bbox_inches=box, **kwargs)
        write_bytes(out / f"{stem}.{ext}", buffer.getvalue())
        names.append(f"{stem}.{ext}")
    plt.close(fig)
    return names


def describe(g: pd.DataFrame) -> str:
    """A series' cost kind and fitted slope, e.g. 'sequential in d, slope 2.27'."""
    if g.empty:
        return "not measured"
    k = fit_slope(g[Col.DIM].to_numpy(), g[Col.MEDIAN_S].to_numpy())
    kind = KIND_LABEL.get(g[Col.KIND].iloc[0], g[Col.KIND].iloc[0])
    return f"{kind}, slope {k:.2f}" if np.isfinite(k) else kind


def curve(ax, g: pd.DataFrame, label: str, **style) -> None:
    """A series' medians against d, its IQR as a band (never below zero), and an x at the
    top of the axes for each dim that was not measured (skipped, timeout, oom, error)."""
    g = g.sort_values(Col.DIM)
    done = g[g[Col.STATUS] == OK]
    line = ax.plot(done[Col.DIM], done[Col.MEDIAN_S], label=f"{label} ({describe(done)})", **style)
    color = line[0].get_color()
    if Col.IQR_S in done and not done.empty:
        half = done[Col.IQR_S].fillna(0) / 2
        low = (done[Col.MEDIAN_S] - half).clip(lower=done[Col.MEDIAN_S] * 0.5)
        ax.fill_between(done[Col.DIM], low, done[Col.MEDIAN_S] + half, color=color, alpha=0.2, lw=0)
    missing = g[g[Col.STATUS] != OK]
    if missing.empty:
        return
    # a row skipped after one checked call is drawn at that call's seconds, where the
    # curve would go on; one never called, at the top; one legend entry says what an x is
    seconds = pd.to_numeric(missing.get(Col.ONE_CALL_S, pd.Series(np.nan, index=missing.index)), errors="coerce")
    called, top = missing[seconds.notna()], missing[seconds.isna()]
    if not called.empty:
        ax.plot(called[Col.DIM], seconds[seconds.notna()], "x", color=color, ms=8, mew=2)
    if not top.empty:
        ax.plot(top[Col.DIM], [0.97] * len(top), "x", color=color, transform=ax.get_xaxis_transform())
    ax.plot([], [], "x", color="0.3", label=MISSING)


def log_axes(ax, title: str, ylabel: str = "median seconds per call", xlabel: str = "dimension d") -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def plain_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (0.5, 1, 2, 5), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _) -> str:  # 2 and 5 of each decade: readable, never crowded
        mantissa = v / 10 ** np.floor(np.log10(v)) if v > 0 else 0
        return f"{v:g}" if round(mantissa) in (2, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def forest(
    rows: list[tuple[str, float, float | None, float | None, str]],
    out: Path,
    stem: str,
    title: str,
    xlabel: str,
    colors: dict[str, str],
) -> list[str]:
    """Ratios with their intervals as a forest plot: one row per (label, value, low,
    high, colour), the first on top, the line of parity at 1, a log axis of plain
    numbers; ``colors`` names what each colour says, for the legend. A bound that is
    None or NaN: the value without an interval."""
    if not rows:
        return []
    fig, axes = grid(1, 1, 6.4, 0.32 * len(rows) + 1.2)
    ax = axes[0][0]
    for y, (_, value, low, high, color) in enumerate(reversed(rows)):
        if low is None or high is None or not np.isfinite([low, high]).all():
            low, high = value, value
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color=color, capsize=3)
    ax.axvline(1.0, color="0.3", lw=0.8, ls=":")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, *_ in reversed(rows)], fontsize=8)
    ax.set_xscale("log")
    plain_ticks(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    for said, color in colors.items():
        ax.plot([], [], "o", color=color, label=said)
    legend(ax)
    return save(fig, out, stem)


def grid(rows: int, cols: int, width: float, height: float):
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
