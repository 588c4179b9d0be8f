"""Counting what a flow costs: parameters (stored and effective), FLOPs and peak memory.

Units: parameters are scalars; FLOPs follow fvcore, where one multiply-add of a matrix
product counts as one flop, and each element-wise op registered below counts one flop
per output element (per input element for reductions); memory is bytes.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# ---- parameters --------------------------------------------------------------------


def _mask_of(module: nn.Module, name: str) -> Tensor | None:
    """The mask that holds entries of parameter ``name`` at zero, if any: by convention
    a masked layer keeps its masked parameter as ``weight`` beside a ``mask`` buffer of
    the same shape (ours, zuko, nflows, pyro's MADE); pyro's block layers keep
    ``_weight`` beside diagonal and off-diagonal masks ``mask_d`` and ``mask_o``."""
    mask = getattr(module, "mask", None)
    if name == "_weight" and isinstance(getattr(module, "mask_d", None), Tensor):
        mask = module.mask_d + module.mask_o
    elif name != "weight":
        return None
    if isinstance(mask, Tensor) and mask.shape == getattr(module, name).shape:
        return mask
    return None


def params_by_module(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{submodule name: (stored, effective)} over parameters held directly by each submodule."""
    out: dict[str, tuple[int, int]] = {}
    for prefix, module in model.named_modules():
        stored = effective = 0
        for name, p in module.named_parameters(recurse=False):
            stored += p.numel()
            mask = _mask_of(module, name)
            effective += p.numel() if mask is None else int(mask.count_nonzero())
        if stored:
            out[prefix or "."] = (stored, effective)
    return out


def params_stored(model: nn.Module) -> int:
    """numel of every parameter; works on the ``meta`` device, where masks have no values."""
    return sum(p.numel() for p in model.parameters())


def count_params(model: nn.Module) -> tuple[int, int]:
    """(stored, effective): numel of every parameter; the same without entries that
    masks hold at zero (a masked weight counts its mask's non-zeros)."""
    counts = params_by_module(model).values()
    return sum(s for s, _ in counts), sum(e for _, e in counts)


# ---- FLOPs -------------------------------------------------------------------------


def _numel(value: Any) -> int:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    n = 1
    for s in shape or ():
        n *= s
    return n if shape is not None else 0


def _per_output(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(outputs[0])


def _per_input(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(inputs[0])


# Element-wise ops the flows rely on; without a handle fvcore counts them as 0.
ELEMENTWISE = [
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
    "aten::neg", "aten::exp", "aten::log", "aten::sigmoid", "aten::log_sigmoid", "aten::softplus",
    "aten::tanh", "aten::relu", "aten::elu", "aten::square", "aten::sqrt", "aten::logaddexp",
    "aten::where", "aten::abs", "aten::maximum", "aten::clamp_min", "aten::pow", "aten::div_",
    "aten::relu_", "aten::elu_", "aten::addcmul", "aten::sub_", "aten::neg_", "aten::exp_",
]  # fmt: skip
REDUCTIONS = ["aten::logsumexp", "aten::sum", "aten::amax", "aten::norm", "aten::linalg_vector_norm"]
SOFTMAX = ["aten::softmax", "aten::log_softmax", "aten::_log_softmax"]


def flop_handles() -> dict[str, Callable[[list[Any], list[Any]], int]]:
    handles: dict[str, Callable[[list[Any], list[Any]], int]] = {op: _per_output for op in ELEMENTWISE}
    handles.update({op: _per_input for op in REDUCTIONS})
    handles.update({op: lambda i, o: 3 * _numel(o[0]) for op in SOFTMAX})  # exp, sum, divide
    return handles


class _Call(nn.Module):
    """Wraps ``fn(model, x)`` as a module so fvcore can trace it."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.model, x)


def count_flops(model: nn.Module, fn: Callable[[nn.Module, Tensor], Tensor], x: Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of one call ``fn(model, x)``, from fvcore's ``FlopCountAnalysis`` with the
    element-wise handles above; returns the total and the count per operator.

    The call is traced as executed: loops are unrolled and data-dependent iteration
    counts (numerical inversion) are those of this input.
    """
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on data-dependent branches
        analysis = (
            FlopCountAnalysis(_Call(model, fn), (x,))
            .set_op_handle(**flop_handles())
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .tracer_warnings("none")
        )
        total = int(analysis.total())
        return total, {k: int(v) for k, v in analysis.by_operator().items()}


def matmul_flops(model: nn.Module, fn: Callable[[nn.Module, Tensor], Tensor], x: Tensor) -> int:
    """Multiply-adds of the matrix products of one call, from torch's own
    ``FlopCounterMode`` (which counts 2 flops per multiply-add): a cross-check for the
    matmul part of :func:`count_flops`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(model, x)
    return counter.get_total_flops() // 2


# ---- memory ------------------------------------------------------------------------


class LiveBytes(TorchDispatchMode):
    """Tracks bytes of tensor storage created inside the mode and still alive, and their peak.

    Each new output storage adds its bytes when an aten op creates it and subtracts
    them when it is freed (a finalizer on the storage). Views and in-place results
    share a storage and count once.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self._seen:
                    self._seen.add(key)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, nbytes)
        return out


def peak_memory(fn: Callable[[], object], device: torch.device | str) -> int:
    """Peak bytes allocated during one call ``fn()``, above what was live before it.

    CUDA: ``torch.cuda.max_memory_allocated`` over the call (the caching allocator's
    view). CPU: the peak of tensor storage bytes created during the call and alive at
    once, tracked op by op by :class:`LiveBytes`. Inputs and parameters, allocated
    before the call, are not counted.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with LiveBytes() as tracker:
        fn()
    return int(tracker.peak)
