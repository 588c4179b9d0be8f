"""Plots from the tidy table (matplotlib, Agg backend, deterministic file names)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# byte-identical outputs for identical inputs: a fixed salt for SVG element ids, and no
# date in any image's metadata (see _save)
matplotlib.rcParams["svg.hashsalt"] = "flowbench"
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from ..table import OK, Col, fit_stem  # noqa: E402
from .tables import ROLE, fit_slope, main_rows, ok  # noqa: E402

STYLE = {"log_prob": dict(marker="o", linestyle="-"), "sample": dict(marker="s", linestyle="--")}
KIND_LABEL = {
    "parallel": "parallel",
    "sequential": "sequential in d",
    "iterative": "iterative (root-finding)",
}
# One colour and marker per model in every plot; a peer takes a shade of its family's
# colour and its library's marker; any other flow a colour of its own.
FAMILY_STYLE = {"made": ("C0", "o"), "maf": ("C1", "s"), "iaf": ("C2", "^"), "naf": ("C3", "D"), "bnaf": ("C4", "v")}
LIBRARY_SHADE = {"zuko": ("white", 0.45, "P"), "pyro": ("black", 0.35, "X"), "nflows": ("white", 0.7, "*")}
OTHER_COLORS = ("C5", "C6", "C8", "C9", "C7")
DEVICE_LINE = {"cpu": "-", "cuda": "--"}


def _mix(color: str, toward: str, share: float) -> str:
    a, b = np.array(to_rgb(color)), np.array(to_rgb(toward))
    return to_hex((1 - share) * a + share * b)


def model_style(model: str, others: list[str] | None = None) -> dict:
    """``color`` and ``marker`` of a model, the same in every plot. ``others``: the
    table's models that are neither reference models nor known peers, in order."""
    if model in FAMILY_STYLE:
        color, marker = FAMILY_STYLE[model]
        return dict(color=color, marker=marker)
    library, _, family = model.rpartition(".")
    if family in FAMILY_STYLE and library in LIBRARY_SHADE:
        toward, share, marker = LIBRARY_SHADE[library]
        return dict(color=_mix(FAMILY_STYLE[family][0], toward, share), marker=marker)
    index = (others or [model]).index(model) if model in (others or []) else 0
    return dict(color=OTHER_COLORS[index % len(OTHER_COLORS)], marker="h")


def _legend(ax, **kwargs) -> None:
    """The legend beside the axes, off the data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, frameon=False, **kwargs)


def _groups(d: pd.DataFrame) -> list[tuple[str, float]]:
    """The (device, batch) pairs measured, in order of appearance."""
    return list(dict.fromkeys(zip(ok(d)[Col.DEVICE], ok(d)[Col.BATCH])))


def _save(fig, out: Path, stem: str, svg: bool = True) -> list[str]:
    fig.savefig(out / f"{stem}.png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    names = [f"{stem}.png"]
    if svg:
        fig.savefig(out / f"{stem}.svg", bbox_inches="tight", metadata={"Date": None})
        names.append(f"{stem}.svg")
    plt.close(fig)
    return names


def _describe(g: pd.DataFrame) -> str:
    """A series' cost kind and fitted slope, e.g. 'sequential in d, slope 2.27'."""
    if g.empty:
        return "not measured"
    k = fit_slope(g[Col.DIM].to_numpy(), g[Col.MEDIAN_S].to_numpy())
    kind = KIND_LABEL.get(g[Col.KIND].iloc[0], g[Col.KIND].iloc[0])
    return f"{kind}, slope {k:.2f}" if np.isfinite(k) else kind


def _curve(ax, g: pd.DataFrame, op: str, **style) -> None:
    """A series' medians, its IQR as a band, and an x at the top of the axes for each
    dim that was not measured (skipped, timeout, oom or error). ``op`` labels it."""
    g = g.sort_values(Col.DIM)
    done = g[g[Col.STATUS] == OK]
    line = ax.plot(
        done[Col.DIM], done[Col.MEDIAN_S], label=f"{op} ({_describe(done)})", **{**STYLE.get(op, {}), **style}
    )
    color = line[0].get_color()
    if Col.IQR_S in done:
        half = done[Col.IQR_S].fillna(0) / 2
        ax.fill_between(
            done[Col.DIM], done[Col.MEDIAN_S] - half, done[Col.MEDIAN_S] + half, color=color, alpha=0.2, lw=0
        )
    missing = g[g[Col.STATUS] != OK]
    if not missing.empty:
        ax.plot(
            missing[Col.DIM],
            [0.97] * len(missing),
            "x",
            color=color,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=f"{op}: not measured ({', '.join(sorted(set(missing[Col.STATUS])))})",
        )


def _axes(ax, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("median seconds per call")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def scaling(df: pd.DataFrame, out: Path) -> list[str]:
    """One panel per model (rows) and (device, batch) (columns): log_prob and sample
    time against d with the default solver, each labelled with its cost kind and
    fitted slope."""
    d = main_rows(df)
    models, groups = list(dict.fromkeys(ok(d)[Col.MODEL])), _groups(d)
    if not models:
        return []
    fig, axes = plt.subplots(
        len(models), len(groups), figsize=(8.4 * len(groups), 3.4 * len(models)), squeeze=False, layout="constrained"
    )
    for i, model in enumerate(models):
        color = model_style(model)["color"]
        for j, (device, batch) in enumerate(groups):
            ax = axes[i][j]
            here = d[(d[Col.MODEL] == model) & (d[Col.DEVICE] == device) & (d[Col.BATCH] == batch)]
            for op in ("log_prob", "sample"):
                g = here[here[Col.OP] == op]
                if not g.empty:
                    _curve(ax, g, op, color=color)
            _axes(ax, f"{model} on {device}, batch {int(batch)}")
            _legend(ax)
    return _save(fig, out, "scaling")


def overview(df: pd.DataFrame, out: Path) -> list[str]:
    """All models' curves (default solvers): sampling in one panel, density in the
    other, a row per (device, batch)."""
    d = main_rows(df)
    groups = _groups(d)
    if not groups:
        return []
    fig, axes = plt.subplots(len(groups), 2, figsize=(15, 4.6 * len(groups)), squeeze=False, layout="constrained")
    for i, (device, batch) in enumerate(groups):
        for j, op in enumerate(("sample", "log_prob")):
            ax = axes[i][j]
            here = d[(d[Col.DEVICE] == device) & (d[Col.BATCH] == batch) & (d[Col.OP] == op)]
            for model, g in here.groupby(Col.MODEL, sort=False):
                _curve(ax, g, model, linestyle="-", **model_style(model))
            _axes(ax, f"{op} on {device}, batch {int(batch)}")
            _legend(ax)
    return _save(fig, out, "overview")


def devices(df: pd.DataFrame, out: Path) -> list[str]:
    """CPU against GPU: a panel per model (rows) and op (columns), a line per (device,
    batch): solid on the CPU, dashed on CUDA, a marker per batch."""
    d = main_rows(df)
    if len(set(ok(d)[Col.DEVICE])) < 2:
        return []
    models = list(dict.fromkeys(ok(d)[Col.MODEL]))
    markers = dict(zip(sorted(set(ok(d)[Col.BATCH])), "os^Dv"))
    fig, axes = plt.subplots(len(models), 2, figsize=(14, 3.4 * len(models)), squeeze=False, layout="constrained")
    for i, model in enumerate(models):
        color = model_style(model)["color"]
        for j, op in enumerate(("log_prob", "sample")):
            ax = axes[i][j]
            for (device, batch), g in d[(d[Col.MODEL] == model) & (d[Col.OP] == op)].groupby([Col.DEVICE, Col.BATCH]):
                style = dict(color=color, linestyle=DEVICE_LINE.get(device, ":"), marker=markers.get(batch, "o"))
                _curve(ax, g, f"{device}, batch {int(batch)}", **style)
            _axes(ax, f"{model} {op}: CPU against GPU")
            _legend(ax)
    return _save(fig, out, "devices")


def solvers(df: pd.DataFrame, out: Path) -> list[str]:
    """The slow direction per model, device and batch (rows): time against d for each
    solver, and the evaluations per dimension each spends."""
    d = ok(df[(df[Col.KIND] != "parallel") & df[Col.SOLVER].isin(list(ROLE) + ["fixed-point"])])
    panels = list(dict.fromkeys(zip(d[Col.MODEL], d[Col.DEVICE], d[Col.BATCH])))
    if not panels:
        return []
    fig, axes = plt.subplots(len(panels), 2, figsize=(15, 3.4 * len(panels)), squeeze=False, layout="constrained")
    for i, (model, device, batch) in enumerate(panels):
        g = d[(d[Col.MODEL] == model) & (d[Col.DEVICE] == device) & (d[Col.BATCH] == batch)]
        for solver, h in g.groupby(Col.SOLVER, sort=False):
            h = h.sort_values(Col.DIM)
            label = f"{solver} ({ROLE[solver]})" if solver in ROLE else solver
            style = dict(marker="o", linestyle="--" if ROLE.get(solver) == "reference" else "-")
            axes[i][0].plot(h[Col.DIM], h[Col.MEDIAN_S], label=f"{label}, slope {_slope(h):.2f}", **style)
            counted = h[h[Col.EVALUATIONS_PER_DIM] > 0]
            if not counted.empty:
                axes[i][1].plot(counted[Col.DIM], counted[Col.EVALUATIONS_PER_DIM], label=label, **style)
        where = f"{model} {g[Col.OP].iloc[0]} on {device}, batch {int(batch)}"
        _axes(axes[i][0], f"{where}: time per call")
        axes[i][1].set_xscale("log", base=2)
        if axes[i][1].lines:
            axes[i][1].set_yscale("log")
        axes[i][1].set_xlabel("dimension d")
        axes[i][1].set_ylabel("evaluations per dimension")
        axes[i][1].set_title(f"{where}: evaluations per dimension and layer")
        axes[i][1].grid(True, which="both", alpha=0.3)
        for ax in axes[i]:
            _legend(ax)
    return _save(fig, out, "solvers")


def _slope(g: pd.DataFrame) -> float:
    return fit_slope(g[Col.DIM].to_numpy(), g[Col.MEDIAN_S].to_numpy())


def params(df: pd.DataFrame, out: Path) -> list[str]:
    """Parameters (effective solid, stored dashed) against d, all models; models with
    identical counts share one line and one legend entry."""
    sizes = main_rows(df).drop_duplicates([Col.MODEL, Col.DIM]).sort_values(Col.DIM)
    if sizes.empty:
        return []
    fig, ax = plt.subplots(figsize=(8.6, 4.6), layout="constrained")
    same: dict[tuple, list[str]] = {}
    for model, g in sizes.groupby(Col.MODEL, sort=False):
        key = tuple(zip(g[Col.DIM], g[Col.PARAMS_EFFECTIVE], g[Col.PARAMS_STORED]))
        same.setdefault(key, []).append(model)
    for models in same.values():
        g = sizes[sizes[Col.MODEL] == models[0]]
        style = model_style(models[0])
        name = " = ".join(models) + (" (identical)" if len(models) > 1 else "")
        ax.plot(g[Col.DIM], g[Col.PARAMS_EFFECTIVE], linestyle="-", label=f"{name} effective", **style)
        ax.plot(
            g[Col.DIM], g[Col.PARAMS_STORED], linestyle="--", alpha=0.6, color=style["color"], label=f"{name} stored"
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("parameters")
    ax.set_title("Parameters against d (effective: without masked-out entries)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, out, "params")


def history(df: pd.DataFrame, out: Path) -> list[str]:
    """asv: one figure per benchmark of its value across commits, a panel per model
    (when the benchmark has one) and a line per remaining parameter set; parameters
    shared by every line go into the title rather than each legend entry."""
    names: list[str] = []
    d = df[df[Col.STATUS] == OK]
    for bench, g in d.groupby("benchmark", sort=True):
        order = g.drop_duplicates(Col.COMMIT).sort_values("date")[Col.COMMIT].tolist()
        panels = list(dict.fromkeys(g[Col.MODEL])) if Col.MODEL in g and g[Col.MODEL].notna().all() else [None]
        split = {p: [x for x in p.split(", ") if not x.startswith("model=")] for p in g["params"].unique()}
        shared = set.intersection(*(set(v) for v in split.values())) if split else set()
        cols = min(3, len(panels))
        rows = -(-len(panels) // cols)
        fig, grid = plt.subplots(
            rows, cols, figsize=(4.8 * cols + 1.5, 3.8 * rows), squeeze=False, layout="constrained"
        )
        axes = grid.flatten()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        for ax, model in zip(axes, panels):
            h = g if model is None else g[g[Col.MODEL] == model]
            for params, line in h.groupby("params", sort=False):  # asv's order: dims ascending
                line = line.set_index(Col.COMMIT).reindex(order)
                label = ", ".join(x for x in split[params] if x not in shared)
                ax.plot(range(len(order)), line["value"], marker="o", label=label or params)
            ax.set_xticks(range(len(order)), [c[:8] for c in order], rotation=45, fontsize=8)
            ax.set_yscale("log")
            ax.set_title(model or bench, fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.set_xlabel(Col.COMMIT)
            ax.set_ylabel(str(g["unit"].iloc[0]))
        _legend(axes[cols - 1])
        fig.suptitle(bench + (f" ({', '.join(sorted(shared))})" if shared else ""), fontsize=11)
        names += _save(fig, out, f"history_{bench.replace('.', '_')}", svg=False)
    return names


def _pareto(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """True where no other point is at least as low in x and y and lower in one."""
    return np.array([not np.any((xs <= x) & (ys <= y) & ((xs < x) | (ys < y))) for x, y in zip(xs, ys)], dtype=bool)


def quality(fits: pd.DataFrame, out: Path) -> list[str]:
    """Per data set, test NLL against training time (top) and against effective
    parameters (bottom); the Pareto front ringed, N(0, I) and the true entropy dashed."""
    done = fits[fits[Col.STATUS] == OK]
    if done.empty:
        return []
    sets = list(dict.fromkeys(done[Col.DATA]))
    fig, axes = plt.subplots(2, len(sets), figsize=(3.1 * len(sets) + 1.6, 6.2), layout="constrained", squeeze=False)
    for col, data in enumerate(sets):
        g = done[done[Col.DATA] == data]
        for row, x, label in ((0, Col.TRAIN_S, "training time (s)"), (1, Col.PARAMS_EFFECTIVE, "parameters")):
            ax = axes[row][col]
            front = _pareto(g[x].to_numpy(float), g[Col.TEST_NLL].to_numpy(float))
            for r, on_front in zip(g.itertuples(), front):
                style = model_style(r.model)
                ax.errorbar(getattr(r, x), r.test_nll, yerr=r.test_nll_se, linestyle="none", label=r.model, **style)
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
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes.flat:  # the union of the legends, once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle("Test NLL against training time and size (lower is better)", fontsize=10)
    return _save(fig, out, "quality")


def densities(fits: pd.DataFrame, grids: list[Path], out: Path) -> list[str]:
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
    return _save(fig, out, "densities", svg=False)


MACHINE_LINES = ("-", "--", ":", "-.")


def machines(df: pd.DataFrame, op: str, out: Path) -> list[str]:
    """``op``'s median time against d for each model on each machine (one line style
    per machine, one colour per model), at the first batch measured on two machines."""
    done = main_rows(df)
    done = done[(done[Col.OP] == op) & (done[Col.STATUS] == OK)]
    shared = [b for b, g in done.groupby(Col.BATCH, sort=False) if g[Col.MACHINE].nunique() >= 2]
    if not shared:
        return []
    done = done[done[Col.BATCH] == shared[0]]
    names = list(dict.fromkeys(done[Col.MACHINE]))
    fig, ax = plt.subplots(figsize=(8.6, 4.8), layout="constrained")
    for (model, machine), g in done.groupby([Col.MODEL, Col.MACHINE], sort=False):
        g = g.sort_values(Col.DIM)
        style = model_style(model)
        line = MACHINE_LINES[names.index(machine) % len(MACHINE_LINES)]
        ax.plot(g[Col.DIM], g[Col.MEDIAN_S], linestyle=line, label=f"{model}, {machine}", **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("seconds per call")
    ax.set_title(f"{op} on each machine, batch {int(shared[0])} (line style: machine)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, out, f"machines_{op}")
