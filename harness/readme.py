"""The README's generated blocks, written from the committed reports:
``python -m harness readme [--check]``.

Each block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; its text is
a function of files under ``reports/`` (and of the paper presets), so a block that
differs from what the reports say is stale: ``--check`` says which and exits 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from . import store
from .errors import UserError
from .table import FIT, PAPER, REPORT, RESULTS, Col

QUICK = "quick/output.txt"  # make report saves the quick example's console output here


def headline(reports: Path) -> str:
    """Our models at d = 16, 64, 256: times with the default solver, sample / log_prob
    with it and with the reference solver, and parameters."""
    from .ops import LOG_PROB, SAMPLE
    from .report.load import load_sources
    from .report.sections.time import time_table
    from .report.sections.work import roofline
    from .report.tables import flows, fmt, main_rows, markdown

    src = load_sources([reports / "cpu"])
    meta = src.sweeps[0][1]
    df = flows(src.rows)
    t = time_table(df)
    t = t[t["d"].isin([16, 64, 256])].copy()
    sizes = main_rows(df).drop_duplicates([Col.MODEL, Col.DIM]).set_index([Col.MODEL, Col.DIM])[Col.PARAMS_EFFECTIVE]
    t["params (effective)"] = [fmt(float(sizes[(m, d)])) for m, d in zip(t[Col.MODEL], t["d"])]
    roof = roofline(df, src).set_index([Col.MODEL, Col.DIM, Col.OP])["percent_of_bound"]
    for op in (LOG_PROB, SAMPLE):
        t[f"{op} % of bound"] = [fmt(float(roof.get((m, d, op), float("nan")))) for m, d in zip(t[Col.MODEL], t["d"])]
    keep = [
        Col.MODEL,
        "d",
        Col.SOLVER,
        "log_prob ms [IQR]",
        "sample ms [IQR]",
        "sample / log_prob [95% CI]",
        "log_prob % of bound",
        "sample % of bound",
        "params (effective)",
    ]
    keep = [k for k in keep if k in t.columns]
    cpu = " ".join(str(meta.get("cpu", "")).split()[:2])
    head = (
        f"Medians [IQR] in milliseconds per call of 1024 points, 1 thread, float32, from `make report` (commit "
        f"`{meta.get('commit', '')}`, {cpu}, torch {meta.get('torch', '')}); each model's default solver, and "
        "sample / log_prob over runs timed in the same interleaved rounds, with a 95% bootstrap interval "
        "(the reference solvers' ratios are in the report); `% of bound`: achieved GFLOP/s over the smaller of "
        "this machine's GEMM rate and its in-cache copy rate x the op's FLOPs per byte (the roofline)."
    )
    return head + "\n\n" + markdown(t[keep])


def findings(reports: Path) -> str:
    """The Findings of ``reports/cpu``, ``reports/cpu/compile`` (make compile's, where it
    ran) and ``reports/gpu`` (their findings.json), linking into each REPORT.md; a
    finding an earlier report already gave is not repeated."""
    from .report.findings import FINDINGS, from_dict

    parts, seen, notes = [], set(), {}
    for folder in ("cpu", "cpu/compile", "gpu"):
        path = reports / folder / FINDINGS
        if folder == "cpu/compile" and not path.is_file():  # make compile's, optional
            continue
        if not path.is_file():
            raise UserError(f"{str(path)!r} is missing: run `python -m harness report` (make report) to write it")
        found = [from_dict(d) for d in store.read_json(path).get("findings", [])]
        base = f"reports/{folder}/{REPORT}"
        bullets = [f"- {f.markdown(base)}" for f in found if (f.question, f.text) not in seen]
        seen.update((f.question, f.text) for f in found)
        notes.update(dict.fromkeys(f.interval for f in found if f.interval))
        parts.append(f"From [reports/{folder}]({base}):\n\n" + "\n".join(bullets))
    return "\n\n".join([*parts, "Intervals: " + "; ".join(notes) + "."])


def _file(relative: str) -> Callable[[Path], str]:
    def read(reports: Path) -> str:
        path = reports / relative
        if not path.is_file():
            raise UserError(f"{str(path)!r} is missing: run `make report` to write it")
        return path.read_text().strip()

    return read


def quick(reports: Path) -> str:
    return "```\n" + _file(f"cpu/{QUICK}")(reports) + "\n```"


def paper(reports: Path) -> str:
    """The B-NAF paper's Table 1 beside our presets' counts (reports/cpu/paper.csv)."""
    from .report.load import frame
    from .report.sections.paper import table1_markdown

    path = reports / "cpu" / PAPER
    if not path.is_file():
        raise UserError(f"{str(path)!r} is missing: run `python -m harness paper-table --out reports/cpu`")
    return table1_markdown(frame(store.read_table(path)))


def quality(reports: Path) -> str:
    """The default fit's test NLLs and the NLL-against-time figure of reports/cpu."""
    from .report.load import load_fit
    from .report.sections.quality import nll_table
    from .report.tables import markdown

    folder = reports / "cpu" / "fit"
    if not (folder / FIT).is_file():
        raise UserError(f"{str(folder / FIT)!r} is missing: run `make report` (or `make fit`) to write it")
    df, meta = load_fit(folder)
    config = meta.get("config", {})
    head = (
        f"Test NLL ± standard error from `{meta.get('command', 'python -m harness fit')}` (at most "
        f"{config.get('steps', '?')} steps or {config.get('wall_s', '?')} s per fit, commit "
        f"`{meta.get('commit', '')}`); lower is better, a toy's true entropy is its floor:"
    )
    return f"{head}\n\n{markdown(nll_table(df))}\n\n![test NLL against training time and size](reports/cpu/quality.png)"


BLOCKS: dict[str, Callable[[Path], str]] = {
    "findings": findings,
    "headline": headline,
    "solvers": _file("cpu/solvers.md"),
    "quick": quick,
    "versus": _file("cpu/peers/versus.md"),
    "paper": paper,
    "quality": quality,
}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name}:start -->\n).*?(\n<!-- {name}:end -->)", re.S)


def render(text: str, reports: Path) -> tuple[str, list[str]]:
    """The README text with every block rewritten, and the names of blocks that changed."""
    changed = []
    for name, make in BLOCKS.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise UserError(f"README has no block {name!r} (<!-- {name}:start --> ... <!-- {name}:end -->)")
        body = make(reports)
        new = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), text)
        if new != text:
            changed.append(name)
        text = new
    return text, changed


def main(readme: Path = Path("README.md"), reports: Path = Path("reports"), check: bool = False) -> list[str]:
    """Rewrites the blocks (or, with ``check``, only reports which are stale)."""
    if not (reports / "cpu" / RESULTS).is_file():
        raise UserError(f"{str(reports / 'cpu' / RESULTS)!r} is missing: run `make report` first")
    text, changed = render(readme.read_text(), reports)
    if not check and changed:
        store.write_text(readme, text)
    return changed
