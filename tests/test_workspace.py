"""Scratch buffers (harness.models.workspace) and the inference paths that use them:
the same memory call after call, never a result the caller keeps, and a per-call count
of peak memory that still sees them."""

import threading

import pytest
import torch

from harness.measure.counting import count_work, peak_memory
from harness.models import build, workspace

AFFINE = ["made", "maf", "iaf"]  # the families whose fast direction runs on columns (MADE.columns)


def test_a_slot_is_the_same_memory_until_its_shape_or_mode_changes():
    workspace.clear()
    like = torch.zeros(1)
    a = workspace.scratch("t", (3, 4), like)
    assert workspace.scratch("t", (3, 4), like).data_ptr() == a.data_ptr()
    assert workspace.scratch("u", (3, 4), like).data_ptr() != a.data_ptr()  # two alive at once: two slots
    assert workspace.scratch("t", (3, 4), like.double()).dtype == torch.float64
    with torch.inference_mode():
        assert workspace.scratch("t", (3, 4), like).is_inference()
    assert not workspace.scratch("t", (3, 4), like).is_inference()  # usable in place outside inference mode
    with workspace.fresh():
        assert workspace.scratch("t", (3, 4), like).data_ptr() != a.data_ptr()
    other = []
    thread = threading.Thread(target=lambda: other.append(workspace.scratch("t", (3, 4), like).data_ptr()))
    thread.start(), thread.join()
    assert other[0] != a.data_ptr()  # a thread has buffers of its own


def test_what_a_thread_keeps_is_bounded(monkeypatch):
    workspace.clear()
    monkeypatch.setattr(workspace, "LIMIT_BYTES", 1000)
    like = torch.zeros(1)
    first = workspace.scratch("a", (100,), like)  # 400 bytes
    workspace.scratch("b", (100,), like)
    workspace.scratch("c", (100,), like)  # 1200 bytes: the least recent goes
    assert workspace.scratch("a", (100,), like).data_ptr() != first.data_ptr()
    big = workspace.scratch("d", (1000,), like)  # over the limit alone: kept while it is the only one
    assert workspace.scratch("d", (1000,), like).data_ptr() == big.data_ptr()
    workspace.clear()


@pytest.mark.parametrize("name", AFFINE)
@pytest.mark.parametrize("context", [0, 3])
def test_the_inference_path_computes_what_autograd_does_and_keeps_no_scratch(name, context):
    """log_prob and the inverse without a graph (points as columns, scratch hidden units)
    against the same flow with autograd, in float64; an earlier result is not changed by
    a later call, and what is returned is contiguous."""
    torch.manual_seed(0)
    flow = build(name, 5, context=context).double()
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 5, dtype=torch.float64)
    given = (torch.randn(64, context, dtype=torch.float64),) if context else ()
    with torch.no_grad():
        first, z = flow.log_prob(x, *given), flow(x, *given)[0]
        kept, kept_z = first.clone(), z.clone()
        flow.log_prob(y, *given), flow(y, *given)
        back = flow.inverse(z, *given)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)
    torch.testing.assert_close(z, kept_z, rtol=0, atol=0)
    torch.testing.assert_close(first, flow.log_prob(x, *given).detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    assert z.is_contiguous() and back.is_contiguous()
    if context:  # one context for all points, as sampling takes it: folded into the first layer's bias
        shared = given[0][:1]
        with torch.no_grad():
            once = flow.inverse(z, shared[0])
        torch.testing.assert_close(once, flow.inverse(z, shared.expand(64, -1)).detach(), rtol=1e-12, atol=1e-12)


def test_a_count_of_peak_memory_sees_the_scratch_every_time():
    flow = build("maf", 16)
    x = torch.randn(2048, 16)
    with torch.inference_mode():
        flow.log_prob(x)  # its scratch now exists
        peaks = [peak_memory(lambda: flow.log_prob(x), "cpu") for _ in range(2)]
        work = count_work(lambda: flow.log_prob(x), "cpu")
    hidden = 64 * 2048 * 4  # one (64, batch) float32 hidden layer
    assert peaks[0] == peaks[1] == work.peak and peaks[0] >= 2 * hidden
