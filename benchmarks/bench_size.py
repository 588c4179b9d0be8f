"""Size and work per model and dimension: parameters and FLOPs."""

from harness.measure.counting import count_params, count_work
from harness.models import eager_ops, op_call, op_context
from harness.table import Col

from . import common


class Params:
    params = (common.MODELS, common.DIMS)
    param_names = [Col.MODEL, Col.DIM]

    def setup(self, name, dim):
        self.model, _ = common.setup_model(name, dim, "cpu")

    def track_params_stored(self, name, dim):
        return count_params(self.model)[0]

    track_params_stored.unit = "parameters"

    def track_params_effective(self, name, dim):
        return count_params(self.model)[1]

    track_params_effective.unit = "parameters"


class Flops:
    params = (common.MODELS, [2, 8, 32], common.OPS)
    param_names = [Col.MODEL, Col.DIM, Col.OP]

    def setup(self, name, dim, op):
        self.model, self.x = common.setup_model(name, dim, "cpu", op)

    def track_flops(self, name, dim, op):
        with op_context(self.model, op), eager_ops(self.model):  # a compiled loop's ops are not seen
            return count_work(op_call(self.model, op, self.x), "cpu", memory=False).flops

    track_flops.unit = "flops"
