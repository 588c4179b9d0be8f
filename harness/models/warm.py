"""Compiles every numba kernel of the reference flows into numba's on-disk cache:
``python -m harness.models.warm``.

numba compiles a kernel the first time a process calls it with a new signature, and
keeps the machine code beside the source (``__pycache__``) for later processes. On a
fresh clone every process that reaches a kernel before one has written it compiles it
again; ``make test`` runs this first, so the test workers and the processes they start
all load the kernels instead of compiling them each (about 20 s of CPU per process).
"""

from __future__ import annotations

import time

import torch

from ..errors import UserError
from ..ops import FAMILIES
from . import build

DIM, POINTS, CONTEXT = 3, 4, 2


def warm() -> list[str]:
    """Calls every kernel of every family in each signature it has (float32, float64;
    no context, one context for all points, one per point); returns what it called."""
    called = []
    with torch.no_grad():
        for name, family in FAMILIES.items():
            for solver in family.kernels:
                for dtype in (torch.float32, torch.float64):
                    for context in (0, CONTEXT):
                        try:
                            given = {"context": context} if context else {}
                            flow = build(name, DIM, solver=solver, **given).to(dtype)
                        except UserError:  # a family that takes no context
                            continue
                        x = torch.randn(POINTS, DIM, dtype=dtype)
                        if context:
                            shared, rows = torch.randn(context, dtype=dtype), torch.randn(POINTS, context, dtype=dtype)
                            flow.sample(POINTS, shared), flow.inverse(x, rows), flow.log_prob(x, rows)
                        else:
                            flow.sample(POINTS), flow.log_prob(x)
                        called.append(f"{name}/{solver}/{str(dtype)[6:]}/context {context}")
    return called


if __name__ == "__main__":
    start = time.perf_counter()
    done = warm()
    print(f"numba kernels ready: {len(done)} configurations in {time.perf_counter() - start:.1f} s")
