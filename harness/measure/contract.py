"""The flow contract, checked on what a call returned before anything is timed.

A flow that returns less than the contract asks (a (n, 1) log-density, a half-precision
sample, a NaN) does less work or none that can be trusted: timing it would make it look
fast. So every measured call is checked once per configuration, in the sweep, the
contests, the solver A/B and the fit, and a violation is an error row that says what
was expected and what came back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import OPS

PASS = "pass"  # a data->base pass of a flow, (z, log|det|): the work of an IAF sample


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


def _tensor(what: str, value: object, shape: tuple[int, ...], like: Tensor) -> str:
    """'' if ``value`` is a finite tensor of ``shape`` with ``like``'s dtype and device."""
    if not isinstance(value, Tensor):
        return f"{what} returned {_describe(value)}, not a tensor of shape {shape}"
    if tuple(value.shape) != shape:
        return f"{what} returned shape {tuple(value.shape)}, expected {shape}"
    if value.dtype != like.dtype:
        return f"{what} returned {value.dtype}, expected {like.dtype} (the input's)"
    if value.device != like.device:
        return f"{what} returned a tensor on {value.device}, expected {like.device}"
    bad = int((~torch.isfinite(value)).sum()) if value.numel() else 0
    if bad:
        return f"{what} returned {bad} non-finite values (nan or inf) of {value.numel()}"
    return ""


def violation(op: str, out: object, x: Tensor) -> str:
    """What is wrong with ``out``, the result of ``op`` on the input ``x`` (batch, d); ''
    when it keeps the contract of what the op returns (:data:`harness.ops.OPS`): a
    density (batch,), points (batch, d), a data->base ``pass`` (z (batch, d), log|det|
    (batch,)) or a loss (); every tensor finite, of the input's dtype and device."""
    n, d = x.shape
    returns = PASS if op == PASS else OPS[op].returns
    if returns == "density":
        return _tensor(op, out, (n,), x)
    if returns == "points":
        return _tensor(op, out, (n, d), x)
    if returns == "loss":
        return _tensor(op, out, (), x)
    if not (isinstance(out, tuple) and len(out) == 2):
        return f"{op} returned {_describe(out)}, expected (z, log|det dz/dx|)"
    return _tensor(f"{op}'s z", out[0], (n, d), x) or _tensor(f"{op}'s log|det|", out[1], (n,), x)
