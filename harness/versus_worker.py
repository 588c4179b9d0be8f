"""The worker side of ``versus`` (harness.worker runs it in a process with a deadline):
each contender's checked call on its own, then the contest's timing, then the NAF
ratios, so a contender that hangs costs its own row and the contest goes on."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence

import torch

from . import peers, registry
from .contests import BATCH, inputs, rival_config
from .errors import UserError
from .measure import allocator
from .measure.stats import ratio_interval
from .models import build
from .ops import LOG_PROB, SAMPLE
from .table import ERROR, Col
from .versus import NAF_DIMS, Contest, _checked, _timed, call, run_contest, timed_once


class ContestWorker:
    """The worker side of ``versus`` (harness.worker): ``("check", contest, dim, rival)``
    builds one contender and makes its checked call ('' or what is wrong);
    ``("run", contest, dim, broken)`` times the contest; ``("naf", dims, batch)`` the
    NAF ratios. An exception is answered as ``(ERROR, line)``."""

    def __init__(self, batch: int, rounds: int, min_rounds: int):
        self.batch, self.rounds, self.min_rounds = batch, rounds, min_rounds
        allocator.tune()

    def __call__(self, task: tuple):
        from .measure.call import one_line

        try:
            if task[0] == "check":
                return self.check(*task[1:])
            if task[0] == "run":
                return run_contest(
                    task[1],
                    task[2],
                    batch=self.batch,
                    rounds=self.rounds,
                    min_rounds=self.min_rounds,
                    broken_before=task[3],
                    once_before=task[4],
                    compiled_before=task[5],
                )
            return naf_ratios(task[1], batch=task[2])
        except Exception as e:
            return (ERROR, one_line(e))

    def check(self, contest: Contest, dim: int, rival: str) -> str | dict[str, float]:
        """What is wrong with the rival's checked call, or the call's ``seconds`` and the
        seconds it spent compiling apart from them (``compile_s``)."""
        x, contexts = inputs(contest, dim, self.batch)
        torch.manual_seed(0)
        try:
            model = registry.build_any(rival, dim, **rival_config(contest, rival)).eval()
        except Exception as e:
            return f"cannot build it: {type(e).__name__}: {e}".replace("\n", " ")[:300]
        op = dict(contest.rivals)[rival]
        why, seconds, compiled = _checked(rival, functools.partial(call(model, op, contexts[op]), x), op, x, model)
        return why or {"seconds": seconds, Col.COMPILE_S: compiled}


def naf_ratios(
    dims: Sequence[int] = NAF_DIMS, *, batch: int = BATCH, rounds: int = 5, block_s: float = 0.2, threads: int = 1
) -> list[dict]:
    """sample / log_prob of our NAF and of zuko's, the four calls timed in alternating
    rounds at each d: each ratio is the median over rounds with a bootstrap interval."""
    out = []
    for dim in dims:
        x = torch.randn(batch, dim)
        fns = {}
        for name in ("naf", "zuko.naf"):
            torch.manual_seed(0)
            m = (build(name, dim) if name == "naf" else peers.build(name, dim)).eval()
            for op in (LOG_PROB, SAMPLE):
                fns[f"{name} {op}"] = functools.partial(call(m, op), x)
        times = _timed(fns, rounds, block_s, threads)
        for name in ("naf", "zuko.naf"):
            lp, s = times[f"{name} {LOG_PROB}"], times[f"{name} {SAMPLE}"]
            ratio, low, high = ratio_interval(s, lp)
            family, library = registry.identity(name)
            out.append(
                dict(
                    model=name,
                    family=family,
                    library=library,
                    dim=dim,
                    batch=batch,
                    rounds=len(lp),
                    log_prob_s=statistics.median(lp),
                    sample_s=statistics.median(s),
                    ratio=ratio,
                    ratio_low=low,
                    ratio_high=high,
                )
            )
    return out


def contest_in(worker, contest: Contest, dim: int, deadline_s: float) -> dict:
    """One contest in the worker: each contender's checked call under the deadline (a
    hang is that contender's error, and the worker starts anew), then the timing of
    those that kept the contract under the deadline again."""
    broken, once, compiled = {}, {}, {}
    for rival, _ in contest.rivals:
        why = worker.run(("check", contest, dim, rival), deadline_s)
        if why is None:
            broken[rival] = f"killed after {deadline_s:g} s (its checked call did not return)"
        elif isinstance(why, tuple):
            broken[rival] = why[1]
        elif isinstance(why, str):
            broken[rival] = why
        elif timed_once(why["seconds"]):  # that call is its time: not called again (nor compiled)
            once[rival], compiled[rival] = why["seconds"], why[Col.COMPILE_S]
    limit = deadline_s * (1 + len(contest.rivals))  # the timing: a deadline's worth per contender
    answer = worker.run(("run", contest, dim, broken, once, compiled), limit)
    if answer is None:
        raise UserError(f"{contest.name} at d={dim}: the timing outlived its deadline of {limit:g} s (killed)")
    if isinstance(answer, tuple):
        raise UserError(f"{contest.name} at d={dim}: {answer[1]}")
    return answer
