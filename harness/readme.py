"""The generated blocks of the README and of docs/*.md, written from the committed
reports and the CLI's parsers: ``python -m harness readme [--check]``.

Each block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; its text is
a function of files under ``reports/`` (and of the paper presets and the parsers), so
a block that differs from what they say is stale: ``--check`` says which and exits 1.
A document holds any of the blocks; every block is held by one document at least.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from . import store
from .errors import UserError
from .table import FIT, PAPER, REPORT, RESULTS, TIMING, Col

QUICK = "quick/output.txt"  # make report saves the quick example's console output here
COVERAGE = "coverage.md"  # a rerun's paired ratios in the first run's intervals (tools/calibrate_ab.py)
CALIBRATION = "CALIBRATION.md"  # compare --run on identical code and injected slowdowns (tools/calibrate_ab.py)


HEADLINE_DIM = 256  # the default grid's largest d


def headline(reports: Path) -> str:
    """Our models at d = 256 (every d is in the report): times with the default solver,
    sample / log_prob with its interval, % of the roofline's bound, and parameters."""
    from .ops import LOG_PROB, SAMPLE
    from .report.load import load_sources
    from .report.sections.time import time_table
    from .report.sections.work import roofline
    from .report.tables import flows, fmt, main_rows, markdown

    src = load_sources([reports / "cpu"])
    meta = src.sweeps[0][1]
    df = flows(src.rows)
    t = time_table(df[df[Col.DIM] == HEADLINE_DIM])  # its ratios' bootstraps at the one d shown
    t = t[t["d"] == HEADLINE_DIM].copy()
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
        "sample / log_prob",
        "log_prob % of bound",
        "sample % of bound",
        "params (effective)",
    ]
    keep = [k for k in keep if k in t.columns]
    cpu = " ".join(str(meta.get("cpu", "")).split()[:2])
    head = (
        f"At d = {HEADLINE_DIM} (every d: the report), milliseconds per call of 1024 points, median [IQR], "
        "1 thread, float32 (`make report` at "
        f"`{meta.get('commit', '')[:7]}`, {cpu}); sample / log_prob from the same interleaved rounds "
        "[95% CI]; `% of bound`: of the roofline's bound at the op's FLOPs per byte (docs/methodology.md)."
    )
    return head + "\n\n" + markdown(t[keep])


# findings the README leaves to the report and documents (the quality table is in the user
# guide; the front door keeps the headline questions within its 12 KB)
LONG = (
    "Quality on ",
    "Scaling",
    "B-NAF against NAF parameters",
    "A training step against",
    "How close is each",
    "JAX against PyTorch",
)


def _findings(reports: Path, folders: tuple[str, ...], skip: tuple[str, ...] = ()) -> str:
    """The Findings of each folder's findings.json, linking into its REPORT.md (anchors
    in a finding's text too); a question an earlier folder already answered is not
    repeated; questions starting with ``skip`` are left out. A folder without
    findings.json is an error, but ``cpu/compile`` (make compile's, optional)."""
    from .report.findings import FINDINGS, from_dict

    parts, seen, notes = [], set(), {}
    for folder in folders:
        path = reports / folder / FINDINGS
        if folder == "cpu/compile" and not path.is_file():
            continue
        if not path.is_file():
            raise UserError(f"{str(path)!r} is missing: run `python -m harness report` (make report) to write it")
        found = [from_dict(d) for d in store.read_json(path).get("findings", [])]
        found = [f for f in found if not (skip and f.question.startswith(skip))]
        base = f"reports/{folder}/{REPORT}"
        bullets = [f"- {f.markdown(base)}".replace("](#", f"]({base}#") for f in found if f.question not in seen]
        seen.update(f.question for f in found)
        notes.update(dict.fromkeys(f.interval for f in found if f.interval))
        parts.append(f"From [reports/{folder}]({base}):\n\n" + "\n".join(bullets))
    return "\n\n".join([*parts, "Intervals: " + "; ".join(notes) + "."])


def findings(reports: Path) -> str:
    """The README's findings: the default run's and make compile's, but the per-data-set
    quality answers (in the user guide's quality block and the report)."""
    return _findings(reports, ("cpu", "cpu/compile"), LONG)


def gpu_findings(reports: Path) -> str:
    """The GPU report's findings (the user guide's GPU section)."""
    return _findings(reports, ("gpu",))


def _file(relative: str) -> Callable[[Path], str]:
    def read(reports: Path) -> str:
        path = reports / relative
        if not path.is_file():
            raise UserError(f"{str(path)!r} is missing: run `make report` to write it")
        return path.read_text().strip()

    return read


def coverage(reports: Path) -> str:
    """How often a rerun's paired ratios fell in the first run's intervals (reports/cpu/ab/coverage.md)."""
    path = reports / "cpu" / "ab" / COVERAGE
    if not path.is_file():  # it takes three make report runs: a fresh clone has none until they are compared
        return "Not measured yet: `python tools/calibrate_ab.py --drift RUN1 RUN2`, then `--coverage RUN1 RUN3`."
    return path.read_text().strip()


def ab_calibration(reports: Path) -> str:
    """The counts table of compare --run's calibration (reports/cpu/ab/CALIBRATION.md)."""
    path = reports / "cpu" / "ab" / CALIBRATION
    if not path.is_file():
        return "Not measured yet: `python tools/calibrate_ab.py --out reports/cpu/ab`."
    tables = [b for b in path.read_text().split("\n\n") if b.startswith("|")]
    return tables[0] if tables else ""


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
        f"Test NLL, the median over seeds [min, max] with the fits' standard error (a diverged seed's value "
        f"after it), from `{meta.get('command', 'python -m harness fit')}` (at most "
        f"{config.get('steps', '?')} steps or {config.get('wall_s', '?')} s per fit, commit "
        f"`{meta.get('commit', '')}`); lower is better, a toy's true entropy is its floor:"
    )
    return f"{head}\n\n{markdown(nll_table(df))}\n\n![test NLL against training time and size](reports/cpu/quality.png)"


def commands(reports: Path) -> str:
    """Each make target with the wall time and load of its last recorded run
    (reports/timing.json: each target's job writes its entry; make test-timed for the tests)."""
    path = reports / TIMING
    runs = store.read_json(path, missing={})
    lines = ["| command | what it makes | wall time | load (start, end) | commit |", "| --- | --- | --- | --- | --- |"]
    made = {
        "make report": "the default CPU sweep and reports/cpu/REPORT.md",
        "make test": "the test suite (pytest, three workers)",
        "make peers": "the PyTorch and JAX peers, and the contests",
        "make solvers": "every slow-direction solver against its reference",
        "make checks": "correctness of every model and peer",
        "make fit": "every model on four 2-D toys and digits, three seeds",
        "make conditional": "conditional flows and peers at sbibm's shapes",
        "make compile": "eager against numba and torch.compile",
    }
    machines = set()
    for name, what in made.items():
        run = runs.get(name)
        if run:
            machines.add(run["cpu"])
            said = f"{run['seconds'] / 60:.1f} min | {run['load_start']}, {run['load_end']} | `{run[Col.COMMIT]}`"
        else:
            said = "not recorded | | "
        lines.append(f"| `{name}` | {what} | {said} |")
    on = "; ".join(sorted(machines)) or "no machine recorded"
    lines.append(f"\nLast runs on {on}, `.venv` set-up not included; 1-minute load averages.")
    return "\n".join(lines)


def cli(reports: Path) -> str:
    """Every command's ``--help``, from the parsers themselves (100 columns)."""
    import os

    from .cli import parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        top = parser()
        parts = ["```", top.format_help().rstrip(), "```"]
        commands = next(a for a in top._subparsers._group_actions if a.choices)  # noqa: SLF001
        for name, sub in commands.choices.items():
            parts += ["", f"### {name}", "", "```", sub.format_help().rstrip(), "```"]
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before
    return "\n".join(parts)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "commands": commands,
    "cli": cli,
    "findings": findings,
    "gpu-findings": gpu_findings,
    "headline": headline,
    "solvers": _file("cpu/solvers/solvers.md"),
    "quick": quick,
    "versus": _file("cpu/peers/versus.md"),
    "paper": paper,
    "quality": quality,
    "coverage": coverage,
    "ab-calibration": ab_calibration,
}


def _pattern(name: str) -> re.Pattern:
    # the body may be empty (a fresh document) or any lines
    return re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)


def render(text: str, reports: Path, made: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The text with every block it holds rewritten, and the names of blocks that
    changed; ``made`` caches block bodies across documents."""
    made = {} if made is None else made
    changed = []
    for name, make in BLOCKS.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            continue
        if name not in made:
            made[name] = make(reports)
        new = pattern.sub(lambda m, body=made[name]: m.group(1) + body + "\n" + m.group(2), text)
        if new != text:
            changed.append(name)
        text = new
    return text, changed


def documents(readme: Path) -> list[Path]:
    """The README and every markdown file of the docs/ folder beside it."""
    docs = readme.parent / "docs"
    return [readme, *sorted(docs.glob("*.md"))] if docs.is_dir() else [readme]


def main(readme: Path = Path("README.md"), reports: Path = Path("reports"), check: bool = False) -> list[str]:
    """Rewrites the blocks of the README and docs/ (or, with ``check``, only says which
    are stale, as ``FILE: BLOCK``)."""
    if not (reports / "cpu" / RESULTS).is_file():
        raise UserError(f"{str(reports / 'cpu' / RESULTS)!r} is missing: run `make report` first")
    made: dict[str, str] = {}
    stale, held = [], set()
    for path in documents(readme):
        text = path.read_text()
        held.update(name for name in BLOCKS if _pattern(name).search(text))
        new, changed = render(text, reports, made)
        label = path.name if path == readme else f"docs/{path.name}"
        stale += [f"{label}: {name}" for name in changed]
        if not check and changed:
            store.write_text(path, new)
    missing = [name for name in BLOCKS if name not in held]
    if missing:
        raise UserError(
            f"no document holds the block(s) {', '.join(missing)} (<!-- NAME:start --> ... <!-- NAME:end -->)"
        )
    return stale
