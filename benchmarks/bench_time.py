"""Time and peak memory of density evaluation and of sampling, and the time of a training
step, per model, dimension and device."""

import torch

from harness.models import run_op, train_step, unchecked
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


class TrainStep(_Op):
    """One maximum-likelihood step (log_prob, backward, Adam): what fitting a flow costs."""

    op = "train_step"

    def setup(self, name, dim, device):
        super().setup(name, dim, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def _call(self):
        with unchecked():
            train_step(self.model, self.optimizer, self.x)

    def time_train_step(self, name, dim, device):
        self._call()
