"""The reference flows and their registry: ``build(name, dim, **config)``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from .. import ops
from ..errors import UserError
from .base import (
    OPS,
    SWEEP_OPS,
    TRAIN_STEP,
    Cost,
    Flow,
    Measurable,
    Transform,
    eager_ops,
    op_call,
    op_context,
    run_op,
    train_step,
    unchecked,
    use_kernel,
)
from .invert import InversionError

__all__ = [
    "NAMES",
    "OPS",
    "SWEEP_OPS",
    "TRAIN_STEP",
    "Cost",
    "Flow",
    "InversionError",
    "Measurable",
    "Transform",
    "build",
    "eager_ops",
    "keywords",
    "op_call",
    "op_context",
    "run_op",
    "train_step",
    "unchecked",
    "use_kernel",
]


def _builder(spec: str) -> Callable[..., Flow]:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)


# every reference family's builder, as the vocabulary names it (harness.ops.FAMILIES)
BUILDERS: dict[str, Callable[..., Flow]] = {name: _builder(f.builder) for name, f in ops.FAMILIES.items()}
NAMES: tuple[str, ...] = tuple(BUILDERS)

# Keywords that must be positive ints wherever a family accepts them (None: the default,
# where the builder's default is None), and those that must be bools.
_POSITIVE = ("flows", "layers", "hidden_factor", "ds_hidden", "ds_layers", "ds_channels")
_BOOLS = ("weight_norm", "final_affine")


def keywords(name: str) -> tuple[str, ...]:
    """The config keywords that model ``name`` accepts."""
    _check_name(name)
    params = inspect.signature(BUILDERS[name]).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_name(name: str) -> None:
    if name not in BUILDERS:
        raise UserError(f"unknown model {name!r}; allowed: {', '.join(NAMES)}")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def build(name: str, dim: int, **config: object) -> Flow:
    """Builds reference model ``name`` over ``dim`` dimensions, float32 on the CPU.

    Raises ValueError naming the bad value and the allowed ones for an unknown name,
    an unknown keyword, ``dim < 1`` or a bad config value.
    """
    _check_name(name)
    if not _positive_int(dim):
        raise UserError(f"dim must be an int >= 1, got {dim!r}")
    allowed = keywords(name)
    defaults = {p.name: p.default for p in inspect.signature(BUILDERS[name]).parameters.values()}
    for key, value in config.items():
        if key == "context" and key not in allowed:
            takers = ", ".join(n for n in NAMES if "context" in keywords(n))
            raise UserError(
                f"model {name!r} takes no context: its flow has no conditioner network for one to enter "
                f"(conditional: {takers})"
            )
        if key not in allowed:
            raise UserError(f"unknown keyword {key!r} for model {name!r}; allowed: {', '.join(allowed)}")
        if key == "context" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise UserError(f"context must be an int >= 0 (features of the context; 0: unconditional), got {value!r}")
        if key in _POSITIVE and not _positive_int(value) and not (value is None and defaults[key] is None):
            raise UserError(f"{key} must be an int >= 1, got {value!r}")
        if key in _BOOLS and not isinstance(value, bool):
            raise UserError(f"{key} must be True or False, got {value!r}")
    hidden = config.get("hidden")
    if hidden is not None:
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise UserError(f"hidden must be a non-empty sequence of ints >= 1, e.g. (64, 64); got {hidden!r}")
        config["hidden"] = tuple(hidden)  # type: ignore[arg-type]
        if not config["hidden"] or not all(_positive_int(h) for h in config["hidden"]):
            raise UserError(f"hidden must be a non-empty sequence of ints >= 1, got {hidden!r}")
    return BUILDERS[name](dim, **config)
