"""Did this change slow it down? ``python -m harness compare --run BASE [HEAD]``.

Two revisions of a git repository (this harness, or a user's flows with ``--repo``)
are measured in one run by randomized multiple interleaved trials: each trial is a
fresh worker process that imports both revisions' code (harness.revisions), visits
every configuration in a shuffled order and times both sides in interleaved rounds,
each round one block of calls of each side in a random order (harness.ab_trial). A
configuration's B / A is the mean over trials of each trial's median per-round log
ratio, with Student's t interval over trials (harness.intervals.over_processes); a
verdict needs the interval to clear 1 and the estimate to clear the minimum effect, and
the exit code counts only verdicts that hold under Holm's correction for all the
configurations. Every timed block is a row of ``rounds.csv`` written as measured, so an
interrupted run resumes (``--resume``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import env, revisions, store
from .ab_trial import SIDES, Plan, SideCode, Trial
from .errors import UserError
from .intervals import MIN_EFFECT, holm, over_processes
from .models.solvers import DIRECT
from .ops import EAGER
from .table import AB_MD, AB_META, AB_META_SHAPE, AB_TABLE, ERROR, Col
from .table import CONFIG_KEY as KEY  # compare --run times unconditional configurations
from .worker import Worker

# The quick default a pull request can afford (about 4 minutes on two cores).
MODELS = ("made", "maf", "iaf", "naf", "bnaf")
DIMS = (8, 32)
OPS = ("log_prob", "sample")
BATCHES = (64,)
PROCESSES = 5
ROUNDS = 20
BLOCK_S = 0.01
MAX_S = 2.0  # seconds of rounds per configuration and trial; a slow one times fewer (at least 6)
DEADLINE_S = 300.0  # one configuration of one trial, both sides, before its worker is killed
INTERVAL = "95% t interval over trials (fresh processes), each the median of its paired rounds"


@dataclass
class RunConfig:
    """What ``compare --run`` measures and how."""

    base: str
    head: str = revisions.WORKTREE
    repo: str | None = None
    models: Sequence[str] = MODELS
    dims: Sequence[int] = DIMS
    ops: Sequence[str] = OPS
    batches: Sequence[int] = BATCHES
    solvers: Sequence[str] = ("default",)
    backends: Sequence[str] = ("default",)
    processes: int = PROCESSES
    rounds: int = ROUNDS
    block_s: float = BLOCK_S
    max_s: float = MAX_S
    threads: int = 1
    seed: int = 0
    inject: float = 0.0
    min_effect: float = MIN_EFFECT
    out: str | None = None
    resume: bool = False
    fresh: bool = False
    progress: bool = True
    config: dict = field(default_factory=dict)


def _user(model: str) -> bool:
    return ":" in model


def grid_entries(cfg: RunConfig) -> list[dict]:
    """The configurations: the sweep's grid for reference models and peers (the same
    validation and expansion as ``sweep``), one direct entry per op for users' flows."""
    from . import grid

    ours = [m for m in cfg.models if not _user(m)]
    entries: list[tuple] = []
    if ours:
        config = grid.Config(
            models=ours,
            dims=cfg.dims,
            ops=cfg.ops,
            device="cpu",
            batches=cfg.batches,
            threads=cfg.threads,
            solvers=cfg.solvers,
            backends=cfg.backends,
        )
        config.validate()
        entries += grid.grid(config)
    for m in (m for m in cfg.models if _user(m)):
        entries += [
            ("cpu", m, d, op, b, DIRECT, EAGER) for op in cfg.ops for d in sorted(cfg.dims) for b in cfg.batches
        ]
    return [dict(zip(grid.GRID, e)) for e in entries]


def prepare_sides(cfg: RunConfig) -> tuple[dict[str, revisions.Revision], dict[str, SideCode], Path]:
    """Both revisions resolved and copied (each side under its own package names)."""
    repo = revisions.repository(cfg.repo)
    revs = {"a": revisions.resolve(repo, cfg.base), "b": revisions.resolve(repo, cfg.head)}
    tops = sorted({m.partition(":")[0].partition(".")[0] for m in cfg.models if _user(m)})
    codes = {}
    for side, rev in revs.items():
        root, harness, modules = "", "", []
        has_harness = bool(revisions.paths_at(repo, rev, revisions.HARNESS))
        if has_harness:
            root_path, harness = revisions.materialize(repo, rev, side, revisions.HARNESS)
            revisions.check_harness(root_path, harness, rev)
            root = str(root_path)
        for top in tops:
            if revisions.paths_at(repo, rev, top):
                root_path, name = revisions.materialize(repo, rev, side, top)
                root, modules = str(root_path), [*modules, (top, name)]
            elif not has_harness:
                raise UserError(
                    f"revision {rev.asked!r} ({rev.commit[:12]}) of {str(repo)!r} holds no module {top!r}: name "
                    "the repository that holds your flow with --repo"
                )
        if not root:
            raise UserError(
                f"{str(repo)!r} holds neither this harness nor a flow of --models at {rev.asked!r}: compare --run "
                "compares two revisions of the harness, or of your module:factory flow with --repo"
            )
        codes[side] = SideCode(root, harness, tuple(modules))
    return revs, codes, repo


def key_of(row: dict) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in KEY)


def _shuffled(entries: list[dict], seed: int, trial: int) -> list[dict]:
    return [entries[i] for i in np.random.default_rng([seed, trial, 1]).permutation(len(entries))]


def _settings(cfg: RunConfig, revs: dict, entries: list[dict]) -> dict:
    return {
        "sides": {s: {"asked": r.asked, Col.COMMIT: r.commit, "dirty": r.dirty} for s, r in revs.items()},
        "grid": [list(key_of(e)) for e in entries],
        "processes": cfg.processes,
        "rounds": cfg.rounds,
        "block_s": cfg.block_s,
        "max_s": cfg.max_s,
        Col.SEED: cfg.seed,
        "inject": cfg.inject,
        Col.THREADS: cfg.threads,
        "min_effect": cfg.min_effect,
    }


def default_out(revs: dict) -> Path:
    return revisions.cache_root().parent / "compare" / f"{revs['a'].label}..{revs['b'].label}"


def _probe(worker: Worker, entries: list[dict], revs: dict) -> None:
    """Every configuration once on both sides before anything is written: a side that
    cannot run one is refused, one line each."""
    answer = worker.run(("probe", entries), DEADLINE_S * max(1, len(entries)))
    if answer is None:
        raise UserError(f"the check of every configuration on both sides did not finish in {DEADLINE_S:g} s each")
    if isinstance(answer, str):
        raise UserError(answer)
    if answer:
        lines = [
            f"{entries[i][Col.MODEL]} {entries[i][Col.OP]} d={entries[i][Col.DIM]} batch {entries[i][Col.BATCH]}: "
            f"side {s} ({revs[s].asked} {revs[s].label}) cannot run it: {why}"
            for i, s, why in answer
        ]
        raise UserError("\n".join(lines))


def measure(cfg: RunConfig) -> tuple[pd.DataFrame, dict, Path]:
    """Runs (or resumes) the trials; returns every round, the settings file and the folder."""
    if cfg.processes < 1 or cfg.rounds < 1:
        raise UserError("--processes and --rounds must be >= 1")
    entries = grid_entries(cfg)
    revs, codes, _ = prepare_sides(cfg)
    folder = Path(cfg.out) if cfg.out else default_out(revs)
    plan = Plan(codes, cfg.rounds, cfg.block_s, cfg.threads, cfg.seed, cfg.max_s, cfg.inject)
    settings = _settings(cfg, revs, entries)
    first = Worker(functools.partial(Trial, plan, 0), fresh=True)
    try:
        _probe(first, entries, revs)
        load_start = env.load_average()

        def meta(new: bool) -> dict:
            return {**env.environment(), "sides_resolved": {s: r.label for s, r in revs.items()}}

        run = store.Run(
            folder,
            AB_TABLE,
            what="compare --run",
            meta_name=AB_META,
            config=settings,
            meta=meta,
            resume=cfg.resume,
            fresh=cfg.fresh,
            doing=f"{revs['a'].label} against {revs['b'].label}",
        )
        with run:
            _trials(cfg, plan, entries, run, first)
            run.update_meta(load_end=env.load_average(), load_at_start=load_start)
    finally:
        first.close()
    return read_rounds(folder), store.read_json(folder / AB_META, shape=AB_META_SHAPE), folder


def read_rounds(folder: Path) -> pd.DataFrame:
    """rounds.csv with its numbers as numbers."""
    rows = pd.DataFrame(store.read_table(folder / AB_TABLE.name, AB_TABLE.columns), columns=list(AB_TABLE.columns))
    for c in (Col.TRIAL, Col.DIM, Col.BATCH, Col.ROUND, Col.POSITION, Col.CALLS, Col.CALL_S):
        rows[c] = pd.to_numeric(rows[c], errors="coerce")
    return rows


def _trials(cfg: RunConfig, plan: Plan, entries: list[dict], run: store.Run, first: Worker) -> None:
    from tqdm import tqdm

    done = {(int(r[Col.TRIAL]), key_of(r)) for r in run.rows}
    todo = [(t, e) for t in range(cfg.processes) for e in _shuffled(entries, cfg.seed, t) if (t, key_of(e)) not in done]
    bar = tqdm(
        total=cfg.processes * len(entries),
        initial=cfg.processes * len(entries) - len(todo),
        unit="config",
        desc="compare --run (trials x configurations)",
        disable=not cfg.progress,
        file=sys.stderr,
    )
    worker, current = first, 0
    try:
        for trial, entry in todo:
            if trial != current:  # a fresh process per trial; the one before it leaves
                worker.close()
                worker, current = Worker(functools.partial(Trial, plan, trial), fresh=True), trial
            answer = worker.run(("measure", entry, trial), DEADLINE_S)
            if answer is None:
                answer = [{**entry, Col.TRIAL: trial, Col.STATUS: ERROR, Col.REASON: f"killed after {DEADLINE_S:g} s"}]
            elif isinstance(answer, str):
                raise UserError(answer)
            for row in answer:
                run.write(row)
            bar.update(1)
            bar.set_postfix_str(f"trial {trial + 1}/{cfg.processes}")
    finally:
        worker.close()
        bar.close()


def analyse(rows: pd.DataFrame, min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """One row per configuration: A and B ms per call (medians of all blocks), B / A over
    trials with its interval and p-value, the verdict, and whether it holds under
    Holm's correction for all the configurations (what the exit code counts)."""
    from .intervals import change_verdict

    timed = rows[rows[Col.CALL_S].notna()] if Col.CALL_S in rows else rows.iloc[0:0]
    out = []
    for key, g in timed.groupby(list(KEY), sort=False):  # rows from disk: numbers typed (read_rounds)
        logs = []
        for _, t in g.groupby(Col.TRIAL):
            wide = t.pivot_table(index=Col.ROUND, columns=Col.REVISION, values=Col.CALL_S, aggfunc="first").dropna()
            if set(SIDES) <= set(wide.columns) and len(wide):
                logs.append(list(np.log(wide["b"].astype(float) / wide["a"].astype(float))))
        found = over_processes(logs)
        side = {s: g.loc[g[Col.REVISION] == s, Col.CALL_S].astype(float) for s in SIDES}
        out.append(
            {
                **dict(zip(KEY, key)),
                "A ms": float(side["a"].median()) * 1e3,
                "B ms": float(side["b"].median()) * 1e3,
                "B / A": found.value,
                "low": found.low,
                "high": found.high,
                "p": found.p,
                "trials": found.processes,
                "rounds": found.rounds,
                "verdict": change_verdict(found, min_effect),
            }
        )
    table = pd.DataFrame(out)
    if not table.empty:
        table = table.sort_values([Col.DEVICE, Col.BATCH, Col.OP, Col.MODEL, Col.DIM], kind="stable", ignore_index=True)
        table["holds"] = holm(table["p"].fillna(1.0).tolist())
    return table


def failures(rows: pd.DataFrame) -> list[str]:
    bad = rows[rows[Col.STATUS].astype(str) == str(ERROR)] if Col.STATUS in rows else rows.iloc[0:0]
    return [
        f"trial {int(r[Col.TRIAL])}: {r[Col.MODEL]} {r[Col.OP]} d={r[Col.DIM]}: {r[Col.REASON]}"
        for _, r in bad.iterrows()
    ]


def describe_sides(meta: dict) -> list[str]:
    """Each side's revision and the machine, load and settings of the run."""
    config = meta.get("config", {})
    sides = config.get("sides", {})
    lines = [
        f"{s.upper()} = {v.get('asked')} ({meta.get('sides_resolved', {}).get(s, v.get(Col.COMMIT, '?')[:12])})"
        for s, v in sides.items()
    ]
    same = len(sides) == 2 and len({(v.get(Col.COMMIT), v.get("dirty")) for v in sides.values()}) == 1
    same = same and not config.get("inject")  # an injected slowdown makes B another program
    if same:
        lines.append("A/A run: both sides are the same code (each imported under its own name): any verdict is false")
    loads = [meta.get("load_at_start") or meta.get("load_start"), meta.get("load_end")]
    lines.append(
        f"machine: {meta.get('cpu', '?')}, {meta.get('cpu_count', '?')} cores, torch {meta.get('torch', '?')}; "
        f"load (1-min average) {' -> '.join(f'{x[0]:.2f}' for x in loads if x)}; {config.get('threads')} "
        "intra-op thread(s), float32"
    )
    busy = env.overloaded(loads, meta.get("cpu_count"))
    if busy:
        lines.append(f"{busy}: both sides alike, round by round")
    lines.append(
        f"settings: {config.get('processes')} trials x {config.get('rounds')} rounds, blocks of about "
        f"{config.get('block_s', 0) * 1e3:.0f} ms, minimum effect {config.get('min_effect', MIN_EFFECT):.0%}"
        + (f", injected slowdown of B {config['inject']:.0%} (calibration)" if config.get("inject") else "")
    )
    return lines


def render(table: pd.DataFrame, meta: dict, min_effect: float) -> tuple[str, str]:
    """(markdown table, summary)."""
    from .compare import shown as ratio_columns
    from .report.tables import markdown

    if table.empty:
        return "", "no configuration was timed on both sides"
    shown = table.assign(
        **ratio_columns(table),
        **{
            "p": table["p"].map(lambda p: f"{p:.2g}"),
            "trials x rounds": [f"{t} x {r // max(t, 1)}" for t, r in zip(table["trials"], table["rounds"])],
            "holds for all": table["holds"].map({True: "yes", False: "no"}),
        },
    )
    columns = [*KEY, "A ms", "B ms", "B / A [95% CI]", "trials x rounds", "p", "verdict", "holds for all"]
    counts = table["verdict"].value_counts()
    slower = int(((table["verdict"] == "slower") & table["holds"]).sum())
    summary = [
        *describe_sides(meta),
        f"{len(table)} configurations: {counts.get('slower', 0)} slower, {counts.get('faster', 0)} faster, "
        f"{counts.get('no clear difference', 0)} no clear difference"
        + "".join(f", {n} {v}" for v, n in counts.items() if v not in ("slower", "faster", "no clear difference"))
        + f"; {slower} slower verdict(s) hold under Holm's correction for all {len(table)} (the exit code's)",
        f"B / A: {INTERVAL}; a verdict needs the interval to clear 1 and the estimate to clear "
        f"{min_effect:.0%}; p: two-sided, of no change",
    ]
    return markdown(shown[columns]), "\n".join(summary)


VERDICT_COLORS = {"slower": "C3", "faster": "C2", "no clear difference": "0.5"}


def figure(table: pd.DataFrame, folder: Path) -> list[str]:
    """B / A of every configuration as a forest plot: its 95% interval over trials, the
    line of no change, red where B is slower, green where faster."""
    from .report import plots

    if table.empty:
        return []

    rows = [
        (
            f"{r[Col.MODEL]} {r[Col.OP]} d={r[Col.DIM]}, {r[Col.DEVICE]}, batch {r[Col.BATCH]}",
            float(r["B / A"]),
            float(r["low"]),
            float(r["high"]),
            VERDICT_COLORS.get(str(r["verdict"]), "0.5"),
        )
        for _, r in table.iterrows()
        if pd.notna(r["B / A"])
    ]
    title = "B / A per configuration (95% interval over trials)"
    return plots.forest(rows, folder, "compare", title, "B / A (> 1: B is slower)", VERDICT_COLORS)


def main(cfg: RunConfig) -> int:
    rows, meta, folder = measure(cfg)
    table = analyse(rows, cfg.min_effect)
    text, summary = render(table, meta, cfg.min_effect)
    broken = failures(rows)
    if broken:
        summary += "\nnot timed: " + "; ".join(broken)
    print(text + "\n\n" + summary)
    drawn = "".join(f"\n![B / A per configuration]({name})\n" for name in figure(table, folder)[:1])
    store.write_text(folder / AB_MD, text + "\n\n" + summary + "\n" + drawn)
    print(f"\nrounds: {folder / AB_TABLE.name}; table: {folder / AB_MD}", file=sys.stderr)
    slower = bool(((table.get("verdict") == "slower") & table.get("holds", False)).any()) if len(table) else False
    return 1 if slower else 0
