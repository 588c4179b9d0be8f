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

import dataclasses
import functools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import peers, registry, store
from .errors import UserError
from .measure import allocator
from .measure.stats import ratio_interval, verdict
from .measure.timing import time_rounds
from .models import Measurable, build, run_op, unchecked
from .table import VERSUS, VERSUS_MD, Col, TableSpec


@dataclass(frozen=True)
class Contest:
    """Reference ``model``'s ``op`` against each (peer, peer op), at ``config``."""

    model: str
    op: str
    rivals: tuple[tuple[str, str], ...]
    config: dict = field(default_factory=dict)
    dims: tuple[int, ...] = (8, 32, 128)

    @property
    def name(self) -> str:
        return f"{self.model}.{self.op}"

    def joined(self, entrants: Sequence[str]) -> Contest:
        """This contest with more rivals: any model names (a user's ``module:factory``,
        a plugin, a peer), each doing the contest's op on the same inputs."""
        rivals = self.rivals + tuple((e, self.op) for e in entrants if (e, self.op) not in self.rivals)
        return dataclasses.replace(self, rivals=rivals)


CONTESTS: dict[str, Contest] = {
    c.name: c
    for c in (
        Contest("maf", "log_prob", (("zuko.maf", "log_prob"), ("nflows.maf", "log_prob"))),
        Contest("maf", "sample", (("zuko.maf", "sample"), ("nflows.maf", "sample"))),
        Contest("iaf", "sample", (("pyro.iaf", "sample"), ("zuko.maf", "pass"), ("nflows.maf", "pass"))),
        Contest("bnaf", "log_prob", (("pyro.bnaf", "log_prob"),), {"hidden_factor": 8}),
    )
}
# Sampling against density evaluation, ours and zuko's NAF; zuko bisects d times per
# flow, at ~7.6 s a call at d=8 here, so only d=8 by default.
NAF_DIMS = (8,)
BATCH = 1024


def call(model: Measurable, op: str) -> Callable[[Tensor], object]:
    """What is timed: ``run_op``'s ``log_prob`` or ``sample``, or ``pass`` = ``model(x)``."""
    if op == "pass":
        return model
    return lambda x: run_op(model, op, x)


# Rounds stop early once the interval of ours / fastest lies this far from 1 (in either
# direction); otherwise they go on to ``rounds``.
CLEAR = 0.05
MIN_ROUNDS = 5


def per_round(times: dict[str, list[float]], ours: str, rivals: Sequence[str]) -> tuple[list[float], list[float]]:
    """(ours, the fastest rival) of each round."""
    n = len(times[ours])
    return times[ours][:n], [min(times[p][r] for p in rivals) for r in range(n)]


def _timed(fns: dict[str, Callable[[], object]], rounds: int, block_s: float, threads: int, enough=None):
    # no_grad for every contender alike: zuko's monotonic transforms take autograd
    # derivatives inside log_prob, which inference mode would forbid
    with unchecked(), torch.no_grad():
        return time_rounds(fns, rounds=rounds, min_rounds=MIN_ROUNDS, block_s=block_s, threads=threads, enough=enough)


def run_contest(
    contest: Contest, dim: int, *, batch: int = BATCH, rounds: int = 11, block_s: float = 0.2, threads: int = 1
) -> dict:
    """Times one contest at one d; returns medians (s per call) per contender and the ratio."""
    torch.manual_seed(0)
    x = torch.randn(batch, dim)
    models = {"ours": build(contest.model, dim, **contest.config).eval()}
    ops = {"ours": contest.op}
    for rival, op in contest.rivals:
        torch.manual_seed(0)
        # a peer is built from the contest's config, as its family's reference; another
        # flow (a user's) from its own factory's defaults
        config = contest.config if rival in peers.NAMES else {}
        models[rival] = registry.build_any(rival, dim, **config).eval()
        ops[rival] = op
    fns = {k: functools.partial(call(m, ops[k]), x) for k, m in models.items()}
    rivals = [p for p, _ in contest.rivals]

    def enough(times: dict[str, list[float]]) -> bool:
        _, low, high = ratio_interval(*per_round(times, "ours", rivals), resamples=500)
        return high < 1 - CLEAR or low > 1 + CLEAR

    times = _timed(fns, rounds, block_s, threads, enough)
    ratio, low, high = ratio_interval(*per_round(times, "ours", rivals))
    medians = {k: statistics.median(v) for k, v in times.items()}
    fastest = min(rivals, key=medians.__getitem__)
    return dict(
        contest=contest.name,
        dim=dim,
        batch=batch,
        threads=threads,
        rounds=len(times["ours"]),
        medians=medians,
        ops=ops,
        fastest=fastest,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        verdict=verdict(low, high),
    )


def naf_ratios(
    dims: Sequence[int] = NAF_DIMS, *, batch: int = BATCH, rounds: int = 5, block_s: float = 0.2, threads: int = 1
) -> list[dict]:
    """sample / log_prob time of our NAF and of zuko's, A/B, at each d."""
    out = []
    for dim in dims:
        x = torch.randn(batch, dim)
        fns = {}
        for name in ("naf", "zuko.naf"):
            torch.manual_seed(0)
            m = (build(name, dim) if name == "naf" else peers.build(name, dim)).eval()
            for op in ("log_prob", "sample"):
                fns[f"{name} {op}"] = functools.partial(call(m, op), x)
        times = _timed(fns, rounds, block_s, threads)
        med = {k: statistics.median(v) for k, v in times.items()}
        for name in ("naf", "zuko.naf"):
            lp, s = med[f"{name} log_prob"], med[f"{name} sample"]
            out.append(dict(model=name, dim=dim, batch=batch, log_prob_s=lp, sample_s=s, ratio=s / lp))
    return out


def table(results: list[dict]) -> str:
    """Markdown: one row per contest and d, times in ms, ratio ours / fastest peer."""
    from tabulate import tabulate

    rows = []
    for r in results:
        peers_ms = ", ".join(f"{p} {r['ops'][p]} {r['medians'][p] * 1e3:.3g}" for p in r["medians"] if p != "ours")
        rows.append(
            [
                r["contest"],
                r[Col.DIM],
                f"{r['medians']['ours'] * 1e3:.3g}",
                peers_ms,
                r["fastest"],
                f"{r['ratio']:.3f} [{r['ratio_low']:.3f}, {r['ratio_high']:.3f}]",
                r["rounds"],
                r["verdict"],
            ]
        )
    headers = [
        "ours (model.op)",
        "d",
        "ours (ms)",
        "peers (ms)",
        "fastest peer",
        "ours / fastest [95% CI]",
        "rounds",
        "ours is",
    ]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def naf_table(results: list[dict]) -> str:
    from tabulate import tabulate

    rows = [
        [r[Col.MODEL], r[Col.DIM], f"{r['log_prob_s'] * 1e3:.3g}", f"{r['sample_s'] * 1e3:.3g}", f"{r['ratio']:.3g}"]
        for r in results
    ]
    headers = [Col.MODEL, "d", "log_prob (ms)", "sample (ms)", "sample / log_prob"]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


FIELDS = [
    "contest",
    Col.DIM,
    Col.BATCH,
    Col.THREADS,
    "rounds",
    "contender",
    Col.OP,
    Col.MEDIAN_S,
    "fastest",
    "ratio",
    "ratio_low",
    "ratio_high",
    "verdict",
]


VERSUS_TABLE = TableSpec(VERSUS, tuple(FIELDS), ("contest", Col.DIM, "contender", Col.OP))


def write_csv(results: list[dict], naf: list[dict], folder: Path) -> None:
    """Tidy rows: one per contender, contest and d; the NAF ratios as contest ``naf.sample/log_prob``."""
    rows = [
        dict(
            contest=r["contest"],
            dim=r[Col.DIM],
            batch=r[Col.BATCH],
            threads=r[Col.THREADS],
            rounds=r["rounds"],
            contender=who,
            op=r["ops"][who],
            median_s=median,
            fastest=r["fastest"],
            ratio=r["ratio"],
            ratio_low=r["ratio_low"],
            ratio_high=r["ratio_high"],
            verdict=r["verdict"],
        )
        for r in results
        for who, median in r["medians"].items()
    ]
    rows += [
        dict(
            contest="naf.sample/log_prob",
            dim=r[Col.DIM],
            batch=r[Col.BATCH],
            threads=1,
            contender=r[Col.MODEL],
            op=op,
            median_s=r[f"{op}_s"],
            ratio=r["ratio"],
        )
        for r in naf
        for op in ("log_prob", "sample")
    ]
    with store.lock(folder, "versus"):
        store.write_table(folder / VERSUS, rows, FIELDS)


def main(
    contests: Sequence[str] | None = None,
    dims: Sequence[int] | None = None,
    naf_dims: Sequence[int] = NAF_DIMS,
    *,
    batch: int = BATCH,
    rounds: int = 11,
    out: Path | None = None,
    progress: bool = True,
    entrants: Sequence[tuple[str, str]] = (),
) -> tuple[list[dict], list[dict]]:
    """Runs the contests (all by default, or those ``entrants`` join) at their dims (or
    ``dims``) and the NAF ratios; prints both tables; writes ``out/versus.csv`` and
    ``out/versus.md`` if ``out``. ``entrants``: (model name, contest) pairs, each adding
    a flow (a user's ``module:factory`` or any registered name) to a contest's rivals."""
    for spec, contest in entrants:
        if contest not in CONTESTS:
            raise UserError(f"unknown contest {contest!r} for {spec!r}; allowed: {', '.join(CONTESTS)}")
        if not registry.known(spec):
            registry.factory(spec)  # raises, naming the allowed forms
    names = list(contests or dict.fromkeys(c for _, c in entrants) or CONTESTS)
    bad = [n for n in names if n not in CONTESTS]
    if bad:
        raise UserError(f"unknown contest {bad[0]!r}; allowed: {', '.join(CONTESTS)}")
    chosen = {n: CONTESTS[n].joined([s for s, c in entrants if c == n]) for n in names}
    needed = {p for n in names for p, _ in chosen[n].rivals if p in peers.NAMES}
    needed |= {"zuko.naf"} if naf_dims else set()
    missing = {p: why for p in sorted(needed) if (why := peers.unavailable(p))}
    if missing:
        raise UserError("peers unavailable: " + "; ".join(f"{p}: {why}" for p, why in missing.items()))
    from tqdm.auto import tqdm

    allocator.tune()
    results = []
    todo = [(name, dim) for name in names for dim in dims or chosen[name].dims]
    bar = tqdm(todo, desc="versus", unit="contest", disable=not progress, dynamic_ncols=True)
    for name, dim in bar:
        bar.set_postfix_str(f"{name} d={dim}")
        r = run_contest(chosen[name], dim, batch=batch, rounds=rounds)
        results.append(r)
        bar.write(
            f"{name} d={dim}: ours / {r['fastest']} = {r['ratio']:.3f} "
            f"[{r['ratio_low']:.3f}, {r['ratio_high']:.3f}], {r['verdict']} ({r['rounds']} rounds)"
        )
    bar.close()
    naf = naf_ratios(naf_dims, batch=batch) if naf_dims else []
    text = table(results)
    if naf:
        text += "\n\nNAF sampling against density evaluation:\n\n" + naf_table(naf)
    print(text)
    if out is not None:
        write_csv(results, naf, out)
        store.write_text(out / VERSUS_MD, text + "\n")
    return results, naf
