"""JAX flows behind the harness's contract (flowjax, numpyro; the ``jax`` extra).

A JAX peer is a pytree of parameters and three pure functions of (parameters, input):
``forward`` (data->base: z and log|det dz/dx|), ``inverse`` (base->data) and
``log_prob``. :class:`JaxFlow` puts them behind :class:`~harness.peers.base.PeerFlow`:

- inputs and outputs cross between torch and JAX through DLPack (no copy on the CPU);
- each op is jitted as one function, the outermost call: compiled ahead of its first
  call for each input shape and dtype (``jax.jit(...).lower(...).compile()``), the
  seconds of that kept apart (:meth:`JaxFlow.compile_seconds`, the ``compile_s``
  column) and never inside a timing; :meth:`JaxFlow.compiles` counts the compilations,
  so a call that compiles while it is timed (a new shape) is an error row;
- every call blocks until its result is ready (``jax.block_until_ready``);
- float32 as built; :meth:`JaxFlow.double` builds the flow again in float64 under
  JAX's 64-bit mode (the exactness checks), and float64 calls run in that mode;
- sampling draws its base points with torch, as ours and the torch peers do, so the
  random numbers cost the same on both sides.

XLA runs its CPU ops on one thread (``XLA_FLAGS``, set before JAX is first imported,
unless the user set it), as torch does under the harness.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..models.base import Cost
from ..ops import TRAIN_STEP
from .base import PeerFlow

INSTALL_JAX = "pip install 'flowbench-harness[jax]'"
NO_TRAIN = (
    "a JAX flow's training step (jax.grad and an optax update) is not built: torch's autograd cannot see into JAX"
)
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@functools.cache
def jax():
    """JAX, imported on first use with XLA on one CPU thread (and its callback errors,
    which the adapter words in one line, not logged as tracebacks); once per process:
    every timed call reaches it."""
    os.environ.setdefault("XLA_FLAGS", ONE_THREAD)
    import jax as imported

    logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)

    return imported


def to_jax(t: Tensor):
    return jax().dlpack.from_dlpack(t.detach().contiguous())


def to_torch(a) -> Tensor:
    return torch.from_dlpack(a)


class Jitted:
    """One op of a JAX flow, jitted and compiled ahead of time per (shape, dtype)."""

    def __init__(self, fn: Callable):
        self.jitted = jax().jit(fn)
        self.executables: dict[tuple, Callable] = {}
        self.compile_s = 0.0

    def __call__(self, params, *args):
        key = tuple((a.shape, str(a.dtype)) for a in args)
        executable = self.executables.get(key)
        if executable is None:
            start = time.perf_counter()
            executable = self.jitted.lower(params, *args).compile()
            self.compile_s += time.perf_counter() - start
            self.executables[key] = executable
        return executable(params, *args)


class JaxModule(nn.Module):
    """A JAX flow: its parameters (the pytree every op takes), its ops (pure functions
    of (parameters, input), see :class:`JaxFlow`), and a torch copy of each array of
    ``counted`` (the trainable part of ``params``): counted as parameters, never used
    in a call. ``rebuild`` builds it again (in float64 under JAX's 64-bit mode: a
    library's constants, its masks, take the dtype JAX gives them when built)."""

    def __init__(self, params, counted, ops: dict[str, Callable], rebuild: Callable[[], JaxModule]):
        super().__init__()
        self.params, self.ops, self.rebuild = params, ops, rebuild
        leaves = jax().tree_util.tree_leaves(counted)
        arrays = [np.asarray(leaf) for leaf in leaves if np.issubdtype(np.asarray(leaf).dtype, np.floating)]
        self.copies = nn.ParameterList([nn.Parameter(torch.from_numpy(a.copy()), requires_grad=False) for a in arrays])


class JaxFlow(PeerFlow):
    """A JAX peer behind the contract. ``module.ops`` holds the pure functions
    ``forward(params, x) -> (z, ladj)``, ``inverse(params, z) -> x`` and
    ``log_prob(params, x) -> (batch,)``, each on a batch (batch, d), data->base for
    ``forward``; an op the library cannot do is left out (and in ``unsupported``)."""

    inference_mode = True
    framework = "jax"

    def __init__(
        self,
        dim: int,
        module: JaxModule,
        cost: Cost,
        unsupported: dict[str, str],
        family: str = "",
        library: str = "",
        context: int = 0,
    ):
        super().__init__(dim, module, cost, unsupported, family, library, context)
        self.unsupported.setdefault(TRAIN_STEP, NO_TRAIN)
        self.ops = {name: Jitted(fn) for name, fn in module.ops.items()}

    def double(self) -> JaxFlow:
        """The same flow in float64: built again under JAX's 64-bit mode (every array and
        constant float64), as ``check`` runs every flow."""
        with jax().enable_x64(True):
            self.module = self.module.rebuild()
        self.ops = {name: Jitted(fn) for name, fn in self.module.ops.items()}
        return self

    def compiles(self) -> int:
        """Executables compiled so far, every op and shape."""
        return sum(len(op.executables) for op in self.ops.values())

    def compile_seconds(self) -> float:
        return sum(op.compile_s for op in self.ops.values())

    def _run(self, op: str, *args: Tensor):
        wide = any(a.dtype == torch.float64 for a in args)
        try:
            with jax().enable_x64(wide):
                out = self.ops[op](self.module.params, *(to_jax(a) for a in args))
                jax().block_until_ready(out)
        except Exception as e:  # an error raised inside the compiled call: its message, not XLA's trace
            raised = re.search(r"EquinoxRuntimeError: ([^\n]+)", str(e))
            if raised is None:
                raise
            raise RuntimeError(f"{self.library} raised in {op}: {raised.group(1)}") from None
        return out

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._needs("log_prob")
        z, ladj = self._run("forward", x)
        return to_torch(z), to_torch(ladj)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        self._needs("sample")
        return to_torch(self._run("inverse", z))

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self._needs("log_prob")
        return to_torch(self._run("log_prob", x))

    def jacobian(self, x: Tensor) -> Tensor:
        """dz/dx of one point x (d,) by JAX's forward-mode autodiff (for ``check``'s
        log-det against autodiff: torch's autograd cannot see into JAX)."""
        j = jax()
        forward = self.ops["forward"].jitted

        def one(params, v):
            return forward(params, v[None])[0][0]

        with j.enable_x64(x.dtype == torch.float64):
            return to_torch(j.jit(j.jacfwd(one, argnums=1))(self.module.params, to_jax(x)))
