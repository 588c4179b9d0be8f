"""Scratch buffers, reused from call to call, for intermediates that never leave a call.

torch's CPU allocator keeps nothing for reuse: every large tensor a call makes is a
fresh block from the system (an mmap above glibc's threshold), and its first touch
page-faults once per 4 KiB page. On a (64, 10,000) float32 hidden layer that costs more
than the matrix product that fills it (about 0.5 ms against 0.1 ms of writing it in
cache). Inference paths write such intermediates here instead; a result the caller
keeps is never scratch. (CUDA's caching allocator already reuses its blocks; there the
buffers cost nothing either.)
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import Tensor

# the most scratch one thread keeps between calls; the least recently used goes first
LIMIT_BYTES = 256 * 2**20

_local = threading.local()


def _buffers() -> OrderedDict:
    if not hasattr(_local, "buffers"):
        _local.buffers, _local.fresh = OrderedDict(), 0
    return _local.buffers


def scratch(slot: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised buffer of ``shape`` in ``like``'s dtype and device: the same
    memory each time this thread asks for ``slot`` with that shape, dtype, device and
    inference mode (its contents are whatever the last user left). Two intermediates
    alive at once need two slots.

    A fresh buffer inside :func:`fresh` (a count of memory per call must see it) and
    while torch.compile traces (a graph holds no Python-side state).
    """
    buffers = _buffers()
    if _local.fresh or torch.compiler.is_compiling():
        return like.new_empty(shape)
    key = (slot, tuple(shape), like.dtype, like.device, torch.is_inference_mode_enabled())
    buffer = buffers.pop(key, None)
    if buffer is None:
        buffer = like.new_empty(shape)
    buffers[key] = buffer  # the most recent last
    held = sum(b.numel() * b.element_size() for b in buffers.values())
    while held > LIMIT_BYTES and len(buffers) > 1:
        _, dropped = buffers.popitem(last=False)
        held -= dropped.numel() * dropped.element_size()
    return buffer


@contextlib.contextmanager
def fresh() -> Iterator[None]:
    """Within it, :func:`scratch` allocates anew (and keeps nothing): a per-call count of
    peak memory then sees every buffer a call needs, as it sees a peer's."""
    _buffers()
    _local.fresh += 1
    try:
        yield
    finally:
        _local.fresh -= 1


def clear() -> None:
    """Frees this thread's buffers."""
    _buffers().clear()
