"""``check``'s declared-cost check (reported, never required): how a flow's sampling time
grows from d = 4 to 64 against its log_prob's. A flow that says (or, without a ``cost``,
is taken to say) its sampling is one parallel pass, while its sampling grows like a
d-step loop, is told how to declare it."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from .check import Result, can
from .measure.timing import time_once
from .models.base import Measurable
from .ops import LOG_PROB, SAMPLE

COST_DIMS = (4, 64)  # the declared-cost check's dims: 16x the dimensions
GROWTH = 4.0  # sampling growing this much faster than log_prob over them is a d-step loop, not a pass


def _best_seconds(calls: dict, rounds: int = 40, most_s: float = 0.25) -> dict:
    """The fastest of each call over rounds taken in turn: a load burst hits every call
    alike, and the least of many ~0.1 ms calls is one the load left alone. At least three
    rounds, then more while they total under ``most_s``, up to ``rounds``."""
    best = dict.fromkeys(calls, math.inf)
    spent = 0.0
    for done in range(rounds):
        if done >= 3 and spent >= most_s:
            break
        for key, call in calls.items():
            seconds = time_once(call, "cpu")
            best[key], spent = min(best[key], seconds), spent + seconds
    return best


def check_cost(make: Callable[[int], Measurable], points: int = 128) -> list[Result]:
    """Reported, not required: sampling's growth in time from d = 4 to 64 over
    log_prob's (the fastest of many calls each, both dims taken in turn). Above
    :data:`GROWTH` while the flow says its sampling is one parallel pass, the note says
    how to declare it."""
    calls = {}
    for dim in COST_DIMS:
        flow = make(dim)
        if can(flow, "inverse"):
            return [Result("declared cost", dim, None, None, None, can(flow, "inverse"))]
        torch.manual_seed(2)
        x = torch.randn(points, dim, dtype=torch.float64)
        calls[SAMPLE, dim], calls[LOG_PROB, dim] = partial(flow.inverse, x), partial(flow.log_prob, x)
    with torch.no_grad():
        for call in calls.values():
            call()  # warm-up
        best = _best_seconds(calls)
    times = {dim: (best[SAMPLE, dim], best[LOG_PROB, dim]) for dim in COST_DIMS}
    (s4, l4), (s64, l64) = times[COST_DIMS[0]], times[COST_DIMS[1]]
    growth = (s64 / s4) / (l64 / l4)
    kind = flow.cost.sample if getattr(flow, "cost", None) is not None else "parallel"
    note = f"d = 4 -> 64: sample x{s64 / s4:.3g}, log_prob x{l64 / l4:.3g}; declared sample cost: {kind}"
    if kind == "parallel" and growth > GROWTH:
        note += (
            "; sampling grows like a d-step loop: if it is one, declare it "
            "(cost = harness.models.Cost(log_prob='parallel', sample='sequential'); docs/user-guide.md)"
        )
    return [Result("declared cost", COST_DIMS[1], growth, GROWTH, None, note)]
