"""Counting what a flow costs: parameters (stored and effective), FLOPs and memory."""

from __future__ import annotations

from torch import nn


def _masked(module: nn.Module, name: str):
    """The mask that holds entries of parameter ``name`` at zero, if any: by convention
    a masked layer keeps its masked parameter as ``weight`` beside a ``mask`` buffer of
    the same shape."""
    mask = getattr(module, "mask", None)
    param = getattr(module, name)
    if name == "weight" and mask is not None and mask.shape == param.shape:
        return mask
    return None


def count_params(model: nn.Module) -> tuple[int, int]:
    """(stored, effective): numel of every parameter; the same without entries that
    masks hold at zero (a masked weight counts its mask's non-zeros)."""
    stored = effective = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            stored += p.numel()
            mask = _masked(module, name)
            effective += p.numel() if mask is None else int(mask.count_nonzero())
    return stored, effective
