"""Counting what a flow costs: parameters (stored and effective), FLOPs, bytes moved and
peak memory.

Units: parameters are scalars; FLOPs are floating-point operations, two per
multiply-add of a matrix product and one per element of each element-wise op (per
input element for reductions); bytes moved are the bytes each dispatched op reads
(its tensor inputs) and writes (its outputs), summed over ops, views moving none;
memory is bytes.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

# ---- parameters --------------------------------------------------------------------


def _mask_of(module: nn.Module, name: str) -> Tensor | None:
    """The mask that holds entries of parameter ``name`` at zero, by the usual
    convention: a masked layer keeps its masked parameter as ``weight`` beside a ``mask``
    buffer of the same shape (ours, zuko, nflows, pyro's MADE). Flows that mask otherwise
    say so through their ``masks()`` (harness.models.Measurable)."""
    mask = dict(module.named_buffers(recurse=False)).get("mask") if name == "weight" else None
    if mask is not None and mask.shape == module.get_parameter(name).shape:
        return mask
    return None


def params_by_module(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> dict[str, tuple[int, int]]:
    """{submodule name: (stored, effective)} over parameters held directly by each
    submodule; ``masks`` (full parameter name -> mask) adds masks the convention misses."""
    masks = masks or {}
    out: dict[str, tuple[int, int]] = {}
    for prefix, module in model.named_modules():
        stored = effective = 0
        for name, p in module.named_parameters(recurse=False):
            stored += p.numel()
            mask = masks.get(f"{prefix}.{name}" if prefix else name)
            mask = _mask_of(module, name) if mask is None else mask
            effective += p.numel() if mask is None else int(mask.count_nonzero())
        if stored:
            out[prefix or "."] = (stored, effective)
    return out


def params_stored(model: nn.Module) -> int:
    """numel of every parameter; works on the ``meta`` device, where masks have no values."""
    return sum(p.numel() for p in model.parameters())


def count_params(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> tuple[int, int]:
    """(stored, effective): numel of every parameter; the same without entries that
    masks hold at zero (a masked weight counts its mask's non-zeros). ``masks``: a
    flow's own ``masks()``, for masks the ``weight`` + ``mask`` convention misses."""
    counts = params_by_module(model, masks).values()
    return sum(s for s, _ in counts), sum(e for _, e in counts)


# ---- FLOPs -------------------------------------------------------------------------

FLOPS_METHOD = "torch-dispatch"  # the flops_method column: counted op by op as dispatched


def tensors(value: Any, found: list[Tensor] | None = None) -> list[Tensor]:
    """The tensors in an op's arguments or outputs (nested lists, tuples and dicts), in
    order: a plain walk, several times faster than a pytree flatten on every op."""
    found = [] if found is None else found
    if isinstance(value, Tensor):
        found.append(value)
    elif isinstance(value, list | tuple):
        for v in value:
            tensors(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            tensors(v, found)
    return found


def _first_tensor(value: Any) -> Tensor | None:
    found = tensors(value)
    return found[0] if found else None


def _per_output(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    out = _first_tensor(out_val)
    return 0 if out is None else out.numel()


def _per_input(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    first = _first_tensor(args)
    return 0 if first is None else first.numel()


def _softmax(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return 3 * _per_output(out_val=out_val)  # exp, sum, divide


for _f in (_per_output, _per_input, _softmax):
    _f._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode passes tensors, not shapes

# Element-wise ops: one flop per output element (a transcendental counts one too), in-place
# variants alike. Matrix products come from torch's own formulas: 2 flops per multiply-add.
ELEMENTWISE = [
    "add",
    "sub",
    "rsub",
    "mul",
    "div",
    "neg",
    "exp",
    "log",
    "log1p",
    "expm1",
    "sigmoid",
    "tanh",
    "relu",
    "elu",
    "softplus",
    "log_sigmoid_forward",
    "square",
    "sqrt",
    "rsqrt",
    "pow",
    "abs",
    "maximum",
    "minimum",
    "clamp",
    "clamp_min",
    "clamp_max",
    "where",
    "logaddexp",
    "addcmul",
    "addcdiv",
    "reciprocal",
    "sign",
    "lerp",
    "erf",
    "sin",
    "cos",
    "atan",
    "leaky_relu",
    "gelu",
    "silu",
    "hardtanh",
    "threshold",
]
REDUCTIONS = ["sum", "mean", "amax", "amin", "max", "min", "logsumexp", "norm", "linalg_vector_norm", "cumsum", "prod"]
SOFTMAX = ["_softmax", "_log_softmax"]


def _packets(names: list[str]) -> list[Any]:
    out = []
    for name in names:
        for variant in (name, name + "_"):
            packet = getattr(torch.ops.aten, variant, None)
            if packet is not None:
                out.append(packet)
    return out


# In-place matrix products (``out.addmm_(a, b)``: a term multiplied into a buffer): torch's
# registry has only the out-of-place ops, so these would count 0; their formulas are the same.
IN_PLACE_PRODUCTS = {"addmm_": "addmm", "baddbmm_": "baddbmm"}


def flop_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas added to torch's ``FlopCounterMode`` registry, by aten op."""
    from torch.utils.flop_counter import flop_registry

    formulas: dict[Any, Callable[..., int]] = {op: _per_output for op in _packets(ELEMENTWISE)}
    formulas.update({op: _per_input for op in _packets(REDUCTIONS)})
    formulas.update({op: _softmax for op in _packets(SOFTMAX)})
    for in_place, product in IN_PLACE_PRODUCTS.items():
        formulas[getattr(torch.ops.aten, in_place)] = _tensors_in(flop_registry[getattr(torch.ops.aten, product)])
    return formulas


def _tensors_in(formula: Callable[..., int]) -> Callable[..., int]:
    """A registry formula (already taking tensors) marked so, for FlopCounterMode's custom
    mapping, which would otherwise wrap it once more."""

    def counted(*args: Any, **kwargs: Any) -> int:
        return formula(*args, **kwargs)

    counted._get_raw = True  # type: ignore[attr-defined]
    return counted


def touched_bytes(t: Tensor) -> int:
    """Bytes of the distinct elements a tensor argument spans: a broadcast dimension
    (stride 0) is read once, not once per use."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        n *= size if stride else min(size, 1)
    return n * t.element_size()


# ops that allocate without touching the memory or alias their input (views torch does
# not mark as such), and ops that write their first argument without reading it
NO_TRAFFIC = frozenset(
    {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_unsafe_view", "detach", "lift_fresh"}
)
WRITE_ONLY = frozenset({"copy_", "fill_", "zero_"})


def moved_bytes(name: str, args: tuple, kwargs: dict, out: Any) -> int:
    """Bytes one op reads (its tensor arguments) and writes (its tensor outputs)."""
    if name in NO_TRAFFIC:
        return 0
    touched = tensors(out, tensors(kwargs, tensors(args[1:] if name in WRITE_ONLY else args)))
    return sum(touched_bytes(t) for t in touched)


class WorkCounter(TorchDispatchMode):
    """Counts, op by op as they dispatch, the FLOPs of a call (torch's ``FlopCounterMode``
    formulas and :func:`flop_formulas`), the bytes each op reads and writes (its tensor
    inputs and outputs; a view moves none) and, with ``memory``, the peak of tensor
    bytes created and alive at once.

    The bytes are each op's own traffic, as eager execution runs it: an op reads its
    inputs from memory or cache and writes its outputs, with no fusion across ops. That
    is the intensity the roofline (FLOPs per byte) is read at.

    One mode for both, without ``FlopCounterMode``'s module tracking, which costs
    several times a call made of many small ops (a root-find): here the count costs
    about what any dispatch mode does.
    """

    def __init__(self, memory: bool = False, flops: bool = True):
        super().__init__()
        self.flops = flops
        from torch.utils.flop_counter import flop_registry

        self.formulas = {**flop_registry, **flop_formulas()}
        self.by_op: dict[str, int] = {}
        self.live = self.peak = self.moved = 0
        self.memory = memory
        self._seen: set[int] = set()
        self._atomic: set = set()  # ops that do not decompose
        self._names: dict = {}  # op -> its name without "aten."

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = self.formulas.get(func._overloadpacket) if self.flops else None
        if formula is None and self.flops and func not in self._atomic:
            # a composite op (aten.linear under inference mode) is counted by its parts,
            # as FlopCounterMode does; an op that does not decompose is remembered
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
            self._atomic.add(func)
        out = func(*args, **kwargs)
        if self.flops and not func.is_view:
            name = self._names.get(func) or self._names.setdefault(func, str(func._overloadpacket)[5:])
            self.moved += moved_bytes(name, args, kwargs, out)
            if formula is not None:
                n = int(formula(*args, **kwargs, out_val=out))
                if n:
                    self.by_op[name] = self.by_op.get(name, 0) + n
        if self.memory:
            for t in tensors(out):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self._seen:
                    self._seen.add(key)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, nbytes)
        return out

    @property
    def total(self) -> int:
        return sum(self.by_op.values())


def count_flops(model: nn.Module, fn: Callable[[nn.Module, Tensor], Tensor], x: Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of one call ``fn(model, x)``: 2 per multiply-add of every matrix product
    (torch's ``FlopCounterMode`` formulas, broadcasting included) and 1 per element of
    each element-wise op, 1 per input element of each reduction. Returns the total and
    the count per aten op.

    Counted op by op as the call dispatches them, so loops are as executed and
    data-dependent iteration counts (numerical inversion) are those of this input;
    autograd work a library does inside the call is counted too.
    """
    from ..models import eager_ops  # a compiled loop runs no op the counter sees

    with eager_ops(model), WorkCounter() as counter, torch.no_grad():
        fn(model, x)
    return counter.total, dict(counter.by_op)


class Work(NamedTuple):
    """What one call costs: FLOPs, peak bytes allocated, bytes its ops read and wrote."""

    flops: int | None
    peak: int | None
    moved: int | None


def count_work(
    fn: Callable[[], object], device: torch.device | str, *, flops: bool = True, memory: bool = True
) -> Work:
    """FLOPs (as :func:`count_flops`), bytes moved (:class:`WorkCounter`) and peak memory
    (as :func:`peak_memory`) of one call ``fn()``, counted in the same pass; None for
    what is not asked (bytes come with the FLOPs)."""
    cpu = torch.device(device).type == "cpu"
    counter = WorkCounter(memory=memory and cpu, flops=flops)
    if memory and not cpu:
        with counter:
            peak = peak_memory(fn, device)
    else:
        with counter, fresh_scratch():
            fn()
        peak = counter.peak if memory else None
    return Work(counter.total if flops else None, peak, counter.moved if flops else None)


def matmul_flops(model: nn.Module, fn: Callable[[nn.Module, Tensor], Tensor], x: Tensor) -> int:
    """FLOPs of the matrix products of one call alone, from torch's ``FlopCounterMode``
    with its own registry (2 per multiply-add; the in-place products' formulas added):
    a cross-check for :func:`count_flops`."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import eager_ops

    in_place = {op: f for op, f in flop_formulas().items() if str(op)[5:] in IN_PLACE_PRODUCTS}
    with eager_ops(model), FlopCounterMode(display=False, custom_mapping=in_place) as counter, torch.no_grad():
        fn(model, x)
    return counter.get_total_flops()


# ---- memory ------------------------------------------------------------------------


def peak_memory(fn: Callable[[], object], device: torch.device | str) -> int:
    """Peak bytes allocated during one call ``fn()``, above what was live before it.

    CUDA: ``torch.cuda.max_memory_allocated`` over the call (the caching allocator's
    view). CPU: the peak of tensor storage bytes created during the call and alive at
    once, tracked op by op by :class:`WorkCounter` (each new storage adds its bytes, a
    finalizer subtracts them when it is freed; views and in-place results share a
    storage and count once). Inputs and parameters, allocated before the call, are not
    counted.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with fresh_scratch():
            fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with WorkCounter(memory=True, flops=False) as tracker, fresh_scratch():
        fn()
    return int(tracker.peak)


def fresh_scratch() -> contextlib.AbstractContextManager:
    """Scratch buffers allocated anew for the call counted (harness.models.workspace): the
    buffers a flow keeps from call to call count in its peak, as a peer's allocations do."""
    from ..models import workspace

    return workspace.fresh()
