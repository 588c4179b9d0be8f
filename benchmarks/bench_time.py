"""Time and peak memory of every op the harness times (harness.ops: density evaluation,
sampling, a training step), per model, dimension and device: one class per op, made
from the vocabulary, so a new op is benchmarked without an edit here."""

from harness import ops
from harness.models import op_call, op_context, unchecked
from harness.table import Col

from . import common


class _Op:
    params = (common.MODELS, common.DIMS, common.DEVICES)
    param_names = [Col.MODEL, Col.DIM, Col.DEVICE]
    timer = common.timer
    op_name = ""

    def setup(self, name, dim, device):
        self.model, x = common.setup_model(name, dim, device, self.op_name)
        self.call = op_call(self.model, self.op_name, x)
        for _ in range(common.WARMUP_CALLS):  # outside the timed region: the numba loop compiles, caches fill
            self._call()

    def _call(self):
        with op_context(self.model, self.op_name), unchecked():
            self.call()


def _benchmark(op: ops.Op) -> type:
    def time_op(self, name, dim, device):
        self._call()

    def peakmem_op(self, name, dim, device):
        self._call()

    time_op.__name__, peakmem_op.__name__ = op.asv, f"peakmem_{op.name}"
    return type(op.asv_class, (_Op,), {"op_name": op.name, time_op.__name__: time_op, peakmem_op.__name__: peakmem_op})


for _op in ops.OPS.values():
    globals()[_op.asv_class] = _benchmark(_op)
