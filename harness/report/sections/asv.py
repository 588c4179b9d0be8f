"""asv's history across commits: each benchmark's value per commit (a figure per
benchmark), asv's own parameters and machines, and the latest commit against the
previous one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ... import store
from ...table import OK, Col
from .. import plots, tables
from ..findings import Finding
from ..load import Sources

TITLE = "asv history"
from ...intervals import MIN_EFFECT, NOT_JUDGED, apart_verdict  # noqa: E402


def regressions(asv: pd.DataFrame) -> pd.DataFrame:
    """Latest commit against the previous one, per benchmark, parameter set and machine,
    by ``harness compare``'s rule for runs measured apart: after / before with an interval
    (from the samples asv recorded, else its 99% intervals), flagged only past the A/A
    drift bound (none without one)."""
    from ...compare import change, drift_bound

    drift, _ = drift_bound()
    d = asv[asv[Col.STATUS] == OK].assign(median_s=lambda x: x["value"])
    order = d.drop_duplicates(Col.COMMIT).sort_values("date")[Col.COMMIT].tolist()
    if len(order) < 2:
        return pd.DataFrame()
    old, new = order[-2], order[-1]
    keys = ["benchmark", "params", Col.MACHINE, "unit"]
    both = d[d[Col.COMMIT] == old].merge(d[d[Col.COMMIT] == new], on=keys, suffixes=("_a", "_b"))
    rows = []
    for _, r in both.iterrows():
        a = pd.Series({c.removesuffix("_a"): r[c] for c in r.index if c.endswith("_a")})
        b = pd.Series({c.removesuffix("_b"): r[c] for c in r.index if c.endswith("_b")})
        found = change(a, b)
        judged = not np.isnan(found.low)
        flag = apart_verdict(found, drift, MIN_EFFECT)
        flag = {"slower": "slower/bigger", "faster": "faster/smaller"}.get(flag, flag)
        rows.append(
            {
                **{k: r[k] for k in keys},
                old[:8]: tables.fmt(float(a["value"])),
                new[:8]: tables.fmt(float(b["value"])),
                "after / before [interval]": found.show() if judged else tables.fmt(found.value),
                "interval": found.how,
                "flag": (flag if flag not in ("no clear difference", NOT_JUDGED) else "")
                if judged
                else ("" if a["value"] == b["value"] else "changed (too few samples to judge)"),
            }
        )
    return pd.DataFrame(rows)


def asv_parameters(folders: list[Path], machines: dict[str, dict]) -> list[str]:
    """What an asv-sourced section measured: each benchmark's parameter grid and unit
    (asv's benchmarks.json) and each machine (machine.json)."""
    rows = []
    for folder in folders:
        for name, info in sorted(store.read_json(folder / "benchmarks.json").items()):
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


def figures(df: pd.DataFrame, out: Path) -> list[str]:
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
        fig, grid = plots.grid(rows, cols, 4.8, 3.8)
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
        plots.legend(axes[cols - 1])
        fig.suptitle(bench + (f" ({', '.join(sorted(shared))})" if shared else ""), fontsize=11)
        names += plots.save(fig, out, f"history_{bench.replace('.', '_')}", svg=False)
    return names


def render(src: Sources, out: Path) -> list[str]:
    if not src.asv:
        return []
    asv = pd.concat([d for d, _ in src.asv], ignore_index=True)
    lines = [f"## {TITLE}", ""]
    machines = {k: v for _, m in src.asv for k, v in m.get("asv_machines", {}).items()}
    lines += asv_parameters([Path(m["path"]) for _, m in src.asv], machines)
    from ...compare import drift_bound

    reg = regressions(asv)
    if not reg.empty:
        lines += [
            "Latest commit against the previous one, by `harness compare`'s rule for runs measured apart: a "
            "change is flagged only where its interval clears 1 and its estimate clears the A/A drift bound "
            f"({drift_bound()[1]}; at least {MIN_EFFECT:.0%}); asv's recorded samples, else its 99% intervals "
            "(`asv run --record-samples` keeps samples). For a small change, `compare --run` times both commits "
            "in one run:",
            "",
        ]
        lines += [tables.markdown(reg), ""]
    for name in figures(asv, out):
        lines += [f"![{name}]({name})", ""]
    return lines


def findings(src: Sources) -> list[Finding]:
    return []
