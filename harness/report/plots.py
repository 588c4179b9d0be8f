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

from .tables import ROLE, fit_slope, main_rows, ok  # noqa: E402

STYLE = {"log_prob": dict(marker="o", linestyle="-"), "sample": dict(marker="s", linestyle="--")}
KIND_LABEL = {
    "parallel": "parallel",
    "sequential": "sequential in d",
    "iterative": "iterative (root-finding)",
}


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
    k = fit_slope(g["dim"].to_numpy(), g["median_s"].to_numpy())
    kind = KIND_LABEL.get(g["kind"].iloc[0], g["kind"].iloc[0])
    return f"{kind}, slope {k:.2f}" if np.isfinite(k) else kind


def _curve(ax, g: pd.DataFrame, op: str, **style) -> None:
    """A series' medians, its IQR as a band, and an x at the top of the axes for each
    dim that was not measured (skipped, timeout, oom or error)."""
    g = g.sort_values("dim")
    done = g[g["status"] == "ok"]
    line = ax.plot(done["dim"], done["median_s"], label=f"{op} ({_describe(done)})", **{**STYLE.get(op, {}), **style})
    color = line[0].get_color()
    if "iqr_s" in done:
        half = done["iqr_s"].fillna(0) / 2
        ax.fill_between(done["dim"], done["median_s"] - half, done["median_s"] + half, color=color, alpha=0.2, lw=0)
    missing = g[g["status"] != "ok"]
    if not missing.empty:
        ax.plot(missing["dim"], [0.97] * len(missing), "x", color=color, transform=ax.get_xaxis_transform(),
                clip_on=False, label=f"{op}: not measured ({', '.join(sorted(set(missing['status'])))})")  # fmt: skip


def _axes(ax, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("median seconds per call")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def scaling(df: pd.DataFrame, out: Path) -> list[str]:
    """One panel per model (rows) and device (columns): log_prob and sample time
    against d with the default solver, each labelled with its cost kind and fitted slope."""
    d = main_rows(df)
    models, devices = list(dict.fromkeys(ok(d)["model"])), list(dict.fromkeys(ok(d)["device"]))
    if not models:
        return []
    fig, axes = plt.subplots(len(models), len(devices), figsize=(6.2 * len(devices), 3.6 * len(models)),
                             squeeze=False)  # fmt: skip
    for i, model in enumerate(models):
        for j, device in enumerate(devices):
            ax = axes[i][j]
            for op in ("log_prob", "sample"):
                g = d[(d["model"] == model) & (d["device"] == device) & (d["op"] == op)]
                if not g.empty:
                    _curve(ax, g, op)
            _axes(ax, f"{model} on {device} (batch {int(d['batch'].iloc[0])})")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "scaling")


def overview(df: pd.DataFrame, out: Path) -> list[str]:
    """All models' curves (default solvers): sampling in one panel, density in the
    other, a row per device."""
    d = main_rows(df)
    devices = list(dict.fromkeys(ok(d)["device"]))
    if not devices:
        return []
    fig, axes = plt.subplots(len(devices), 2, figsize=(12.5, 4.6 * len(devices)), squeeze=False)
    for i, device in enumerate(devices):
        for j, op in enumerate(("sample", "log_prob")):
            ax = axes[i][j]
            for model, g in d[(d["device"] == device) & (d["op"] == op)].groupby("model", sort=False):
                _curve(ax, g, model, marker="o", linestyle="-")
            _axes(ax, f"{op} on {device}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "overview")


def solvers(df: pd.DataFrame, out: Path) -> list[str]:
    """The slow direction per model (rows): time against d for each solver, and the
    evaluations per dimension each spends."""
    d = ok(df[(df["kind"] != "parallel") & df["solver"].isin(list(ROLE) + ["fixed-point"])])
    models = list(dict.fromkeys(d["model"]))
    if not models:
        return []
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.4 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        g = d[d["model"] == model]
        for solver, h in g.groupby("solver", sort=False):
            h = h.sort_values("dim")
            label = f"{solver} ({ROLE[solver]})" if solver in ROLE else solver
            style = dict(marker="o", linestyle="--" if ROLE.get(solver) == "reference" else "-")
            axes[i][0].plot(h["dim"], h["median_s"], label=f"{label}, slope {_slope(h):.2f}", **style)
            axes[i][1].plot(h["dim"], h["evaluations_per_dim"], label=label, **style)
        _axes(axes[i][0], f"{model} {g['op'].iloc[0]}: time per call (batch {int(g['batch'].iloc[0])})")
        axes[i][1].set_xscale("log", base=2)
        axes[i][1].set_yscale("log")
        axes[i][1].set_xlabel("dimension d")
        axes[i][1].set_ylabel("evaluations per dimension")
        axes[i][1].set_title(f"{model} {g['op'].iloc[0]}: evaluations per dimension and layer")
        axes[i][1].grid(True, which="both", alpha=0.3)
        for ax in axes[i]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out, "solvers")


def _slope(g: pd.DataFrame) -> float:
    return fit_slope(g["dim"].to_numpy(), g["median_s"].to_numpy())


def params(df: pd.DataFrame, out: Path) -> list[str]:
    """Parameters (effective solid, stored dashed) against d, all models."""
    sizes = main_rows(df).drop_duplicates(["model", "dim"]).sort_values("dim")
    if sizes.empty:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for i, (model, g) in enumerate(sizes.groupby("model", sort=False)):
        color = f"C{i}"
        ax.plot(g["dim"], g["params_effective"], marker="o", color=color, label=f"{model} effective")
        ax.plot(g["dim"], g["params_stored"], linestyle="--", color=color, alpha=0.6, label=f"{model} stored")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("parameters")
    ax.set_title("Parameters against d (effective: without masked-out entries)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, out, "params")


def history(df: pd.DataFrame, out: Path) -> list[str]:
    """asv: one figure per benchmark of its value across commits, a panel per model
    (when the benchmark has one) and a line per remaining parameter set."""
    names: list[str] = []
    d = df[df["status"] == "ok"]
    for bench, g in d.groupby("benchmark", sort=True):
        order = g.drop_duplicates("commit").sort_values("date")["commit"].tolist()
        panels = list(dict.fromkeys(g["model"])) if "model" in g and g["model"].notna().all() else [None]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1, 3.8), squeeze=False)
        for ax, model in zip(axes[0], panels):
            h = g if model is None else g[g["model"] == model]
            for params, line in h.groupby("params", sort=False):  # asv's order: dims ascending
                line = line.set_index("commit").reindex(order)
                label = ", ".join(p for p in params.split(", ") if not p.startswith("model="))
                ax.plot(range(len(order)), line["value"], marker="o", label=label or params)
            ax.set_xticks(range(len(order)), [c[:8] for c in order], rotation=45, fontsize=7)
            ax.set_yscale("log")
            ax.set_title(model or bench, fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel(str(g["unit"].iloc[0]))
        fig.suptitle(bench, fontsize=10)
        fig.tight_layout()
        names += _save(fig, out, f"history_{bench.replace('.', '_')}", svg=False)
    return names
