"""Shared set-up for the asv suite: parameters, seeded models, skip rules and a timer.

A thin layer over ``harness``: models come from its registry, counts from
``harness.measure``; nothing here reimplements a model or a timer.
"""

import torch
import torch.utils.benchmark

from harness import models, ops
from harness.models import build

THREADS = 1
torch.set_num_threads(THREADS)  # fixed, so results compare across commits and machines

MODELS = list(models.NAMES)
DIMS = [2, 8, 32, 128]
DEVICES = ["cpu", "cuda"]
OPS = list(ops.OPS)
BATCH = 256
SEED = 0
# calls each benchmark's setup makes before asv times anything: a first call compiles the
# numba loop and fills caches, which would make a --quick sample 100x a steady call
WARMUP_CALLS = 2

# Sequential and iterative directions make d passes per flow; above these dims one call
# outlasts what asv can time within its default 60 s timeout, so they are skipped.
MAX_DIM = {"parallel": max(DIMS), "sequential": 128, "iterative": 32}

# torch's benchmark clock synchronises the accelerator before reading the time.
timer = staticmethod(torch.utils.benchmark.timer)


def setup_model(name: str, dim: int, device: str, op: str | None = None):
    """A seeded model and its input on ``device``; NotImplementedError marks a skip."""
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    torch.manual_seed(SEED)
    model = build(name, dim).to(device).eval()
    if op is not None and dim > MAX_DIM[model.cost[op]]:
        raise NotImplementedError(f"{name} {op} is {model.cost[op]}: d={dim} exceeds asv's timeout")
    x = torch.randn(BATCH, dim, device=device)
    return model, x
