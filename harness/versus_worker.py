"""The worker side of ``versus`` (harness.worker runs it in a process with a deadline):
each contender's checked call on its own, then the contest's timing, then the NAF
ratios, so a contender that hangs costs its own row and the contest goes on."""

from __future__ import annotations

import functools

import torch

from . import peers, registry
from .errors import UserError
from .measure import allocator
from .table import ERROR, Col
from .versus import Contest, _checked, call, naf_ratios, run_contest, timed_once


class ContestWorker:
    """The worker side of ``versus`` (harness.worker): ``("check", contest, dim, rival)``
    builds one contender and makes its checked call ('' or what is wrong);
    ``("run", contest, dim, broken)`` times the contest; ``("naf", dims, batch)`` the
    NAF ratios. An exception is answered as ``(ERROR, line)``."""

    def __init__(self, batch: int, rounds: int):
        self.batch, self.rounds = batch, rounds
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
        torch.manual_seed(0)
        x = torch.randn(self.batch, dim)
        try:
            model = registry.build_any(rival, dim, **(contest.config if rival in peers.NAMES else {})).eval()
        except Exception as e:
            return f"cannot build it: {type(e).__name__}: {e}".replace("\n", " ")[:300]
        op = dict(contest.rivals)[rival]
        why, seconds, compiled = _checked(rival, functools.partial(call(model, op), x), op, x, model)
        return why or {"seconds": seconds, Col.COMPILE_S: compiled}


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
