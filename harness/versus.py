"""Ours against the peers, timed A/B in one process.

Each contest pits a reference model's op against the same work in every peer of its
family, built from the same config (see :mod:`harness.peers`) on the same inputs.
The contenders are timed in alternating rounds, one block of calls each per round in
rotating order, so that drift on a shared machine reaches all of them alike. The
ratio is the median over rounds of ours / the fastest peer of that round: at most
1.0 means ours is no slower than the best peer.

``pass`` as a peer op is one data->base pass of the peer's flow (log-det included):
the single-pass work an IAF sample does.
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from . import peers, registry, store
from .contests import (
    BATCH,
    CONTESTS,
    FRAMEWORKS,
    MAF_PEERS,
    NSF_PEERS,
    Contest,
    available,
    conditioned,
    inputs,
    rival_config,
)
from .errors import UserError
from .measure.contract import PASS, violation
from .measure.stats import ratio_interval, verdict
from .measure.timing import time_rounds
from .models import Measurable, build, run_op, unchecked
from .ops import LOG_PROB, SAMPLE
from .table import ERROR, OK, VERSUS, VERSUS_MD, Col, TableSpec

__all__ = ["BATCH", "CONTESTS", "MAF_PEERS", "NSF_PEERS", "Contest", "main", "run_contest"]


# Sampling against density evaluation, ours and zuko's NAF; zuko bisects d times per
# flow, at ~7.6 s a call at d=8 here, so only d=8 by default.
NAF_DIMS = (8,)


def call(model: Measurable, op: str, context: Tensor | None = None) -> Callable[[Tensor], object]:
    """What is timed: ``run_op``'s ``log_prob`` or ``sample``, or ``pass`` = ``model(x)``;
    given ``context`` for a conditional contest."""
    given = () if context is None else (context,)
    if op == PASS:
        return lambda x: model(x, *given)
    return lambda x: run_op(model, op, x, context)


# Rounds stop early once the interval of ours / fastest lies this far from 1 (in either
# direction); otherwise they go on to ``rounds``.
CLEAR = 0.05
MIN_ROUNDS = 5
OURS_ROLE, PEER, ENTRANT = "ours", "peer", "entrant"


def per_round(times: dict[str, list[float]], ours: str, rivals: Sequence[str]) -> tuple[list[float], list[float]]:
    """(ours, the fastest rival) of each round."""
    n = len(times[ours])
    return times[ours][:n], [min(times[p][r] for p in rivals) for r in range(n)]


def _timed(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    block_s: float,
    threads: int,
    enough=None,
    min_rounds: int = MIN_ROUNDS,
):
    # no_grad for every contender alike: zuko's monotonic transforms take autograd
    # derivatives inside log_prob, which inference mode would forbid
    with unchecked(), torch.no_grad():
        return time_rounds(
            fns, rounds=rounds, min_rounds=min(min_rounds, rounds), block_s=block_s, threads=threads, enough=enough
        )


# A contender whose checked call takes longer than this is not timed in rounds: that one
# call is its time (a peer's d-pass inverse at d=128 takes ~45 s a call here, and ours
# a fraction of a second: rounds would add minutes and no doubt), shown without interval.
ONE_CALL_S = 10.0
ONCE = "timed once: its checked call took {:.1f} s (over {:.0f} s, no rounds), so no interval"


def timed_once(seconds: float) -> bool:
    """Whether a contender's checked call took so long that it is its only timing."""
    return seconds > ONE_CALL_S


def compile_seconds(model: object) -> float:
    """Seconds ``model`` spent compiling so far (a JAX flow jits each op on its first call
    of a shape: :meth:`harness.peers.jaxflow.JaxFlow.compile_seconds`); 0 for the rest."""
    seconds = getattr(model, "compile_seconds", None)
    return float(seconds()) if callable(seconds) else 0.0


def _checked(name: str, fn: Callable[[], object], op: str, x: Tensor, model: object = None) -> tuple[str, float, float]:
    """('', seconds, compile seconds) if one call of ``fn`` keeps the contract: the
    call's seconds without what ``model`` spent compiling in it (a JAX flow's first
    call of a shape compiles: that is its ``compile_s``, never its time); else what is
    wrong (a contender that breaks it is never timed, and never named fastest)."""
    before = compile_seconds(model)
    try:
        with unchecked(), torch.no_grad():
            start = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - start
    except Exception as e:  # a user's flow may raise anything: it is reported, not timed
        return f"{type(e).__name__}: {e}".replace("\n", " ")[:300], math.nan, math.nan
    compiled = compile_seconds(model) - before
    return violation(op, out, x), seconds - compiled, compiled


def run_contest(
    contest: Contest,
    dim: int,
    *,
    batch: int = BATCH,
    rounds: int = 11,
    min_rounds: int = MIN_ROUNDS,
    block_s: float = 0.2,
    threads: int = 1,
    broken_before: dict[str, str] | None = None,
    once_before: dict[str, float] | None = None,
    compiled_before: dict[str, float] | None = None,
) -> dict:
    """Times one contest at one d: medians (s per call) per contender, ours over the
    fastest peer of each round, and ours over each contender, with bootstrap intervals.
    Rounds go on to ``rounds``, or stop after ``min_rounds`` once the interval is clearly
    off 1 (:data:`CLEAR`).

    The contest's own rivals are its peers; a flow that joined it (an entrant) is timed
    beside them and compared with ours, but is the fastest peer only if it declares the
    contest's family. A contender whose call breaks the contract is reported, not timed;
    one whose call took over :data:`ONE_CALL_S` is timed by that call alone
    (``once_before``: calls made before, in a worker's check). ``compile_s``: each
    contender's seconds of compiling (JAX's jit; ``compiled_before``: in a worker's check).
    """
    x, contexts = inputs(contest, dim, batch)
    models = {OURS_ROLE: build(contest.model, dim, **contest.config).eval()}
    ops, roles, broken = {OURS_ROLE: contest.op}, {OURS_ROLE: OURS_ROLE}, dict(broken_before or {})
    for rival, op in contest.rivals:
        torch.manual_seed(0)
        config = rival_config(contest, rival)
        ops[rival] = op
        is_peer = rival in dict(CONTESTS[contest.name].rivals) or registry.identity_or_module(rival)[0] == contest.model
        roles[rival] = PEER if is_peer else ENTRANT
        if rival in broken or rival in (once_before or {}):  # found hanging, failing or slow before
            continue
        try:
            models[rival] = registry.build_any(rival, dim, **config).eval()
        except Exception as e:  # a user's factory may raise anything
            broken[rival] = f"cannot build it: {type(e).__name__}: {e}".replace("\n", " ")[:300]
    fns = {k: functools.partial(call(m, ops[k], contexts[ops[k]]), x) for k, m in models.items()}
    once = dict(once_before or {})  # contenders too slow for rounds: their checked call's seconds
    compiled = dict(compiled_before or {})
    for k in list(fns):
        why, seconds, compiled[k] = _checked(k, fns[k], ops[k], x, models[k])
        if why:
            broken[k] = why
            del fns[k]
        elif k != OURS_ROLE and timed_once(seconds):
            once[k] = seconds
            del fns[k]
    if OURS_ROLE in broken:
        raise RuntimeError(f"our {contest.name} breaks the contract at d={dim}: {broken[OURS_ROLE]}")
    rivals = [p for p, _ in contest.rivals if p in fns and roles[p] == PEER]
    slow_rivals = [p for p, _ in contest.rivals if p in once and roles[p] == PEER]
    if not rivals and not slow_rivals:
        raise UserError(f"{contest.name} at d={dim}: no peer could be timed ({'; '.join(broken.values())})")

    def enough(times: dict[str, list[float]]) -> bool:
        if not rivals:
            return len(times[OURS_ROLE]) >= MIN_ROUNDS
        _, low, high = ratio_interval(*per_round(times, OURS_ROLE, rivals), resamples=500)
        return high < 1 - CLEAR or low > 1 + CLEAR

    times = _timed(fns, rounds, block_s, threads, enough, min_rounds)
    medians = {k: statistics.median(v) for k, v in times.items()} | once
    fastest = min(rivals + slow_rivals, key=medians.__getitem__)
    if fastest in once:  # the fastest peer was called once: ours over that call, no interval
        ratio, low, high = medians[OURS_ROLE] / once[fastest], math.nan, math.nan
    else:
        ratio, low, high = ratio_interval(*per_round(times, OURS_ROLE, rivals))
    each = {k: ratio_interval(times[OURS_ROLE], times[k]) for k in times if k != OURS_ROLE}
    each |= {k: (medians[OURS_ROLE] / s, math.nan, math.nan) for k, s in once.items()}
    return dict(
        contest=contest.name,
        dim=dim,
        batch=batch,
        context=contest.context,
        threads=threads,
        rounds=len(times[OURS_ROLE]),
        medians=medians,
        ops=ops,
        roles=roles,
        broken=broken,
        once=once,
        **{Col.COMPILE_S: {k: c for k, c in compiled.items() if c > 0}},
        each=each,
        fastest=fastest,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        verdict=verdict(low, high) if not math.isnan(low) else "",  # earned by an interval only
    )


FIELDS = [
    "contest",
    Col.DIM,
    Col.BATCH,
    Col.CONTEXT,  # features of the context every contender was conditioned on (0: none)
    Col.THREADS,
    "rounds",
    "contender",
    "role",
    Col.FAMILY,
    Col.LIBRARY,
    Col.OP,
    Col.MEDIAN_S,
    Col.COMPILE_S,  # a JAX contender's jit, apart from its time (its checked call's)
    Col.STATUS,
    Col.REASON,
    "fastest",
    "ratio",
    "ratio_low",
    "ratio_high",
    "verdict",
]
NAF_CONTEST = "naf.sample/log_prob"
VERSUS_TABLE = TableSpec(VERSUS, tuple(FIELDS), ("contest", Col.DIM, Col.CONTEXT, "contender", Col.OP))


def rows_of(results: list[dict], naf: list[dict]) -> list[dict]:
    """Tidy rows: one per contender, contest and d (ratio: ours over the fastest peer on
    our row, ours over that contender on the others'); the NAF ratios as contest
    ``naf.sample/log_prob``."""
    rows = []
    for r in results:
        for who, op in r["ops"].items():
            family, library = registry.identity_or_module(contest_model(r["contest"]) if who == OURS_ROLE else who)
            row = dict(
                contest=r["contest"],
                dim=r[Col.DIM],
                batch=r[Col.BATCH],
                context=r.get(Col.CONTEXT, 0),
                threads=r[Col.THREADS],
                rounds=r["rounds"],
                contender=who,
                role=r["roles"][who],
                family=family,
                library=library,
                op=op,
                fastest=r["fastest"],
            )
            if who in r["broken"]:
                row.update(status=ERROR, reason=r["broken"][who])
            elif who == OURS_ROLE:
                row.update(median_s=r["medians"][who], status=OK, ratio=r["ratio"], ratio_low=r["ratio_low"])
                row.update(ratio_high=r["ratio_high"], verdict=r["verdict"])
            else:
                ratio, low, high = r["each"][who]
                row.update(median_s=r["medians"][who], status=OK, ratio=ratio, ratio_low=low, ratio_high=high)
                row.update(verdict=verdict(low, high))
                if who in r.get("once", {}):  # one call, not the contest's rounds
                    row.update(rounds=1, reason=ONCE.format(r["once"][who], ONE_CALL_S), verdict="")
            if who in r.get(Col.COMPILE_S, {}):
                row[Col.COMPILE_S] = r[Col.COMPILE_S][who]
            rows.append(row)
    for r in naf:
        for op in (LOG_PROB, SAMPLE):
            rows.append(
                dict(
                    contest=NAF_CONTEST,
                    dim=r[Col.DIM],
                    batch=r[Col.BATCH],
                    context=0,
                    threads=1,
                    rounds=r["rounds"],
                    contender=r[Col.MODEL],
                    role=OURS_ROLE if r[Col.MODEL] == "naf" else PEER,
                    family=r[Col.FAMILY],
                    library=r[Col.LIBRARY],
                    op=op,
                    median_s=r[f"{op}_s"],
                    status=OK,
                    ratio=r["ratio"],
                    ratio_low=r["ratio_low"],
                    ratio_high=r["ratio_high"],
                )
            )
    return rows


def contest_model(contest: str) -> str:
    return contest.partition(".")[0]


def text_of(rows: list[dict]) -> str:
    """The contests and the NAF ratios as markdown (the report's tables)."""
    from .report.load import frame
    from .report.sections.peers import naf_table, versus_table
    from .report.tables import markdown

    df = frame(rows)
    text = markdown(versus_table(df))
    naf = naf_table(df)
    if not naf.empty:
        text += "\n\nNAF sampling against density evaluation:\n\n" + markdown(naf)
    return text


def main(
    contests: Sequence[str] | None = None,
    dims: Sequence[int] | None = None,
    naf_dims: Sequence[int] = NAF_DIMS,
    *,
    batch: int = BATCH,
    rounds: int = 11,
    min_rounds: int = MIN_ROUNDS,
    contexts: Sequence[int] = (0,),
    out: Path | None = None,
    progress: bool = True,
    entrants: Sequence[tuple[str, str]] = (),
    deadline_s: float = 600.0,
    resume: bool = False,
    frameworks: Sequence[str] = FRAMEWORKS,
) -> tuple[list[dict], list[dict]]:
    """Runs the contests (all by default, or those ``entrants`` join) at their dims (or
    ``dims``) and the NAF ratios; prints both tables; writes ``out/versus.csv`` and
    ``out/versus.md`` if ``out`` (with ``resume``, the contests and d its versus.csv
    holds are kept, not measured again). ``entrants``: (model name, contest) pairs, each adding
    a flow (a user's ``module:factory`` or any registered name) to a contest's rivals.
    ``contexts``: each contest runs once per context size, every contender conditioned
    on it (0: unconditional); rivals that take no context are named and left out
    (:func:`harness.contests.conditioned`)."""
    for spec, contest in entrants:
        if contest not in CONTESTS:
            raise UserError(f"unknown contest {contest!r} for {spec!r}; allowed: {', '.join(CONTESTS)}")
        registry.factory(spec)  # an unknown name, or a module that does not import: one line, before any timing
    names = list(contests or dict.fromkeys(c for _, c in entrants) or CONTESTS)
    bad = [n for n in names if n not in CONTESTS]
    if bad:
        raise UserError(f"unknown contest {bad[0]!r}; allowed: {', '.join(CONTESTS)}")
    joined = {n: CONTESTS[n].joined([s for s, c in entrants if c == n]) for n in names}
    chosen: dict[tuple[str, int], Contest] = {}  # per contest and context
    for context in contexts:
        dropped: set[str] = set()  # rivals that take no context, each once
        for n in names:
            try:
                chosen[n, context], left_out = conditioned(joined[n], context)
            except UserError as e:  # our flow takes no context: an error where the contest was named
                if contests:
                    raise
                print(f"{e}; not run", file=sys.stderr)
                continue
            dropped |= set(left_out)
            if not chosen[n, context].rivals:
                print(f"{n} with a context of {context}: no rival left; not run", file=sys.stderr)
                del chosen[n, context]
        if dropped:
            print(
                f"left out of the contests with a context of {context}: {'; '.join(sorted(dropped))}", file=sys.stderr
            )
    needed = {p for c in chosen.values() for p, _ in c.rivals if p in peers.NAMES}
    needed |= {"zuko.naf"} if naf_dims else set()
    chosen = available(chosen, needed, frameworks)
    from tqdm.auto import tqdm

    from .versus_worker import ContestWorker, contest_in
    from .worker import Worker

    results: list[dict] = []
    naf: list[dict] = []
    kept: list[dict] = []
    todo = [(name, context, dim) for (name, context), c in chosen.items() for dim in dims or c.dims]
    worker = Worker(functools.partial(ContestWorker, batch, rounds, min_rounds))
    with store.lock(out, "versus") if out is not None else contextlib.nullcontext():
        if out is not None and resume:
            kept = store.kept_rows(out / VERSUS, FIELDS, {Col.BATCH: batch}, ("contest", Col.CONTEXT, Col.DIM))
            measured = {(r["contest"], r[Col.CONTEXT], r[Col.DIM]) for r in kept}
            todo = [t for t in todo if tuple(map(str, t)) not in measured]
            naf_dims = [] if any(r["contest"] == NAF_CONTEST for r in kept) else naf_dims
        elif out is not None:  # the folder is ours before anything is measured; an old table goes aside
            aside = store.move_aside(out, (VERSUS, VERSUS_MD))
            if aside is not None:
                print(f"moved the earlier contests of {out} aside into {aside}", file=sys.stderr)
        bar = tqdm(todo, desc="versus", unit="contest", disable=not progress, dynamic_ncols=True)
        try:
            for name, context, dim in bar:
                at = f"d={dim}" + (f" context {context}" if context else "")
                bar.set_postfix_str(f"{name} {at}")
                r = contest_in(worker, chosen[name, context], dim, deadline_s)
                results.append(r)
                bar.write(
                    f"{name} {at}: ours / {r['fastest']} = {r['ratio']:.3f} "
                    f"[{r['ratio_low']:.3f}, {r['ratio_high']:.3f}], {r['verdict']} ({r['rounds']} rounds)"
                    + "".join(f"; {k} not timed: {why}" for k, why in r["broken"].items())
                )
                _write(out, kept + rows_of(results, naf))  # every contest as it is measured
            if naf_dims:
                answer = worker.run(("naf", list(naf_dims), batch), deadline_s * len(naf_dims))
                if answer is None or isinstance(answer, tuple):  # killed, or (ERROR, why)
                    why = f"killed after {deadline_s * len(naf_dims):g} s" if answer is None else answer[1]
                    warnings.warn(f"the NAF ratios were not measured: {why}", stacklevel=2)
                else:
                    naf = answer
        finally:
            bar.close()
            worker.close()
        rows = kept + rows_of(results, naf)
        text = text_of(rows)
        print(text)
        _write(out, rows, text)
    return results, naf


def _write(out: Path | None, rows: list[dict], text: str | None = None) -> None:
    if out is not None:
        store.write_table(out / VERSUS, rows, FIELDS)
        if text is not None:
            store.write_text(out / VERSUS_MD, text + "\n")
