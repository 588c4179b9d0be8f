"""Time and peak memory of density evaluation and of sampling, per model, dimension and device."""

import torch

from harness.models import run_op, unchecked
from harness.table import Col

from . import common


class _Op:
    params = (common.MODELS, common.DIMS, common.DEVICES)
    param_names = [Col.MODEL, Col.DIM, Col.DEVICE]
    timer = common.timer
    op = ""

    def setup(self, name, dim, device):
        self.model, self.x = common.setup_model(name, dim, device, self.op)

    def _call(self):
        with torch.inference_mode(), unchecked():
            run_op(self.model, self.op, self.x)


class LogProb(_Op):
    op = "log_prob"

    def time_log_prob(self, name, dim, device):
        self._call()

    def peakmem_log_prob(self, name, dim, device):
        self._call()


class Sample(_Op):
    op = "sample"

    def time_sample(self, name, dim, device):
        self._call()

    def peakmem_sample(self, name, dim, device):
        self._call()
