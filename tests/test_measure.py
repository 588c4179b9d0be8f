"""The measurement engine: timing, parameter counts, FLOPs and memory."""

import pytest
import torch

from harness.measure.counting import count_flops, count_params, matmul_flops, params_by_module, peak_memory
from harness.measure.timing import time_call, time_once
from harness.models import NAMES, build

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_timing_reports_medians_iqr_and_runs():
    x = torch.randn(128, 128)
    t = time_call(lambda: x @ x, min_run_time=0.05)
    assert t.median_s > 0 and t.iqr_s >= 0 and t.runs >= 3 and t.number_per_run >= 1


@pytest.mark.parametrize("threads", [1, 2])
def test_timing_respects_the_thread_count(threads):
    seen = set()
    before = torch.get_num_threads()
    t = time_call(lambda: seen.add(torch.get_num_threads()), threads=threads, min_run_time=0.01)
    assert seen == {threads} and t.threads == threads
    assert torch.get_num_threads() == before, "the caller's thread count is restored"


def test_slow_calls_still_get_several_runs():
    import time

    t = time_call(lambda: time.sleep(0.02), min_run_time=0.01)
    assert t.runs >= 3 and t.median_s == pytest.approx(0.02, rel=0.5)


@cuda
def test_cuda_timing_synchronises():
    # _sleep queues a kernel and returns at once; only a synchronised clock sees it
    cycles = int(5e7)
    assert time_once(lambda: torch.cuda._sleep(cycles), "cuda") > 1e-3
    t = time_call(lambda: torch.cuda._sleep(cycles), "cuda", min_run_time=0.05)
    assert t.median_s > 1e-3


def test_params_match_a_hand_count_for_made():
    m = build("made", 3, hidden=(4,))
    # 3->4 and 4->6 (2 outputs per dim): weights + biases
    assert count_params(m)[0] == 3 * 4 + 4 + 4 * 6 + 6
    # degrees: inputs 1,2,3; hidden 1,2,1,2; outputs 1,1,2,2,3,3.
    # hidden >= input: 1 + 2 + 1 + 2; output > hidden: 0 + 0 + 2 + 2 + 4 + 4
    assert count_params(m)[1] == (1 + 2 + 1 + 2) + 4 + (2 + 2 + 4 + 4) + 6


def test_params_match_a_hand_count_for_bnaf():
    m = build("bnaf", 2, flows=1, layers=1, hidden_factor=2, residual="none")
    # 2 -> 4 (blocks 2x1) and 4 -> 2 (blocks 1x2): weight, log-scale, bias each
    assert count_params(m)[0] == (4 * 2 + 4 + 4) + (2 * 4 + 2 + 2)
    # lower block triangle: 2 + 4 entries in each weight
    assert count_params(m)[1] == (6 + 4 + 4) + (6 + 2 + 2)
    gated = build("bnaf", 2, flows=1, layers=1, hidden_factor=2, residual="gated")
    assert count_params(gated)[1] == count_params(m)[1] + 1


@pytest.mark.parametrize("name", NAMES)
def test_effective_is_below_stored_where_masks_exist(name):
    stored, effective = count_params(build(name, 8))
    assert 0 < effective < stored


def test_params_per_submodule_add_up():
    m = build("naf", 4, flows=2)
    per = params_by_module(m)
    assert sum(s for s, _ in per.values()) == count_params(m)[0]
    assert any(k.endswith("made.layers.0") for k in per)


@pytest.mark.slow
@pytest.mark.parametrize("solver,passes", [("sequential", "d"), ("incremental", "one")])
def test_maf_sample_flops_follow_the_solver(solver, passes):
    """2 flops per multiply-add. log_prob is one pass: d->h, h->h, h->2d. The sequential
    solve makes d passes, each computing only the 2 output rows of its dimension; the
    incremental one computes each hidden unit once, only from the inputs it may see."""
    d, h, batch, flows = 16, 32, 8, 2
    m = build("maf", d, flows=flows, hidden=(h, h), solver=solver)
    x = torch.randn(batch, d)
    _, lp = count_flops(m, lambda m, x: m.log_prob(x), x)
    _, smp = count_flops(m, lambda m, z: m.inverse(z), x)
    assert lp["addmm"] == 2 * batch * flows * (d * h + h * h + h * 2 * d)
    if passes == "d":
        assert smp["addmm"] + smp.get("mm", 0) == 2 * batch * flows * d * (d * h + h * h + h * 2)
    else:  # unit of degree k reads k inputs (or the units of degree <= k): at most one pass
        assert 0 < smp["addmm"] + smp.get("mm", 0) < lp["addmm"]


@pytest.mark.parametrize("name", NAMES)
def test_matmul_flops_are_torch_flop_counter_s(name):
    m = build(name, 8)
    x = torch.randn(16, 8)
    fn = lambda m, x: m.log_prob(x)  # noqa: E731
    total, by = count_flops(m, fn, x)
    matmuls = sum(by.get(op, 0) for op in ("mm", "addmm", "bmm", "baddbmm"))
    assert matmuls == matmul_flops(m, fn, x) > 0
    assert total > matmuls


def test_a_contexts_products_are_counted():
    """log_prob(x | c) multiplies each point's context into every layer's first hidden
    layer, in place where no graph needs the result: 2 c h more FLOPs a point and layer
    than the unconditional flow's, by both counters."""
    d, h, c, batch, flows = 3, 16, 7, 10, 2
    plain, cond = (build("maf", d, flows=flows, hidden=(h, h), context=k) for k in (0, c))
    x, given = torch.randn(batch, d), torch.randn(batch, c)
    products = ("mm", "addmm", "addmm_", "bmm", "baddbmm", "baddbmm_")
    base = sum(count_flops(plain, lambda m, x: m.log_prob(x), x)[1].get(op, 0) for op in products)
    by = count_flops(cond, lambda m, x: m.log_prob(x, given), x)[1]
    assert by.get("addmm_", 0) > 0  # the in-place product this counts
    assert sum(by.get(op, 0) for op in products) - base == 2 * batch * flows * c * h
    assert (
        matmul_flops(cond, lambda m, x: m.log_prob(x, given), x) - matmul_flops(plain, lambda m, x: m.log_prob(x), x)
        == 2 * batch * flows * c * h
    )


def test_elementwise_ops_are_counted():
    total, by = count_flops(build("bnaf", 4), lambda m, x: m.log_prob(x), torch.randn(8, 4))
    for op in ("exp", "tanh_", "amax", "log1p_", "log"):  # in place where no gradient needs them
        assert by.get(op, 0) > 0, op
    maf = count_flops(build("maf", 4), lambda m, x: m.log_prob(x), torch.randn(8, 4))[1]
    for op in ("clamp_", "exp_", "addcmul_"):  # the in-place work of the fast affine pass
        assert maf.get(op, 0) > 0, op


def test_broadcast_matmuls_count_their_batch():
    """fvcore dropped the batch of a broadcast matmul (pyro's B-NAF); dispatch sees it."""
    a, b = torch.randn(32, 4, 5), torch.randn(5, 6)
    total, _ = count_flops(torch.nn.Identity(), lambda m, x: x @ b, a)
    assert total == 2 * 32 * 4 * 5 * 6


def test_cpu_peak_memory_sees_the_allocations():
    x = torch.randn(256, 256)
    assert peak_memory(lambda: (x @ x) @ x, "cpu") >= 2 * x.numel() * 4
    m = build("maf", 16)
    with torch.inference_mode():
        assert peak_memory(lambda: m.log_prob(torch.randn(512, 16)), "cpu") > 512 * 16 * 4


@cuda
def test_cuda_peak_memory():
    x = torch.randn(1024, 1024, device="cuda")
    assert peak_memory(lambda: x @ x, "cuda") >= x.numel() * 4


def test_slow_calls_make_exactly_the_runs_measured():
    """No hidden warm-up calls: with the warm-up known, a slow call runs min_runs times."""
    import time

    calls = []
    t = time_call(lambda: (calls.append(1), time.sleep(0.02)), min_run_time=0.03, estimate_s=0.02)
    assert t.runs == 3 and len(calls) == 3


def test_ratio_intervals_and_verdicts():
    from harness.measure.stats import ratio_interval, verdict

    ratio, low, high = ratio_interval([1.0, 1.1, 0.9, 1.0, 1.05], [2.0, 2.0, 2.1, 1.9, 2.0])
    assert low <= ratio <= high < 1 and verdict(low, high) == "faster"
    assert verdict(0.9, 1.1) == "no clear difference" and verdict(1.1, 1.3) == "slower"


def test_allocator_settings_are_applied_and_reported():
    from harness.measure.allocator import SETTINGS, tune

    info = tune()
    assert info.get("applied") is True or info["allocator"].startswith("not glibc")
    if info.get("applied"):
        assert all(info[k] == v for k, v in SETTINGS.items())


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_matmuls_are_counted_under_any_grad_mode(mode):
    """Under inference mode aten.linear reaches the counter whole: counted by its parts."""
    from harness.measure.counting import count_work

    m = build("maf", 16).eval()
    x = torch.randn(32, 16)
    with getattr(torch, mode)():
        flops, _, _ = count_work(lambda: m.log_prob(x), "cpu", memory=False)
    assert flops >= matmul_flops(m, lambda m, x: m.log_prob(x), x) > 0
