"""Data sets for fitting flows: ``load(name, seed, data_dir)``.

- the 2-D toys of :mod:`.toys` (eight_gaussians, checkerboard, two_spirals, two_moons),
  generated from the seed, with their true entropy;
- ``digits``: scikit-learn's bundled 8 x 8 digits (1,797 images, d = 64), dequantised
  with uniform noise and standardised, with a fixed split;
- the MAF paper's tabular sets (:mod:`.uci`), from the user's ``--data-dir``;
- conditional tasks with an exact posterior (:mod:`.posteriors`, ``gaussian_linear``):
  (theta, x) pairs to fit q(theta | x), judged at fixed observations.

A model is fitted to ``train`` and judged on ``test`` in the data set's model space; the
negative log-likelihood is reported in the set's own units: the model's NLL plus
``nll_offset`` (the log-Jacobian of the standardisation, and for digits of the
dequantisation's bin width).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from . import posteriors, toys, uci

TOYS = tuple(toys.TOYS)
DIGITS = "digits"
UCI = tuple(uci.LOADERS)
CONDITIONAL = tuple(posteriors.TASKS)
NAMES = (*TOYS, DIGITS, *UCI, *CONDITIONAL)

TOY_SIZES = (20000, 5000, 20000)  # train, validation, test points of a toy
PER_OBSERVATION = 2000  # test draws from each fixed observation's posterior (conditional tasks)
DIGITS_LEVELS = 17  # pixel values 0..16


@dataclass
class Dataset:
    """Train, validation and test points (n, d) float32 in the model's space; for a
    conditional task also each point's context (n, features) and each test point's
    observation index (n,), and ``truth`` takes (x, context)."""

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    nll_offset: float  # nats added to a model-space NLL to give the NLL in ``units``
    units: str
    entropy: float | None = None  # the truth's differential entropy in ``units`` (toys)
    about: str = ""
    truth: Callable[..., Tensor] | None = None  # the true log-density (m, d) [, (m, c)] -> (m,), where known
    contexts: tuple[Tensor, Tensor, Tensor] | None = None  # train, validation, test contexts
    observation: Tensor | None = None  # each test point's fixed observation

    @property
    def context_features(self) -> int:
        """The context's width; 0 for an unconditional data set."""
        return 0 if self.contexts is None else self.contexts[0].shape[1]

    def true_log_density(self) -> Tensor:
        """The truth at each test point (m,), float64 (given its context if conditional)."""
        assert self.truth is not None
        x = self.test.double()
        return self.truth(x) if self.contexts is None else self.truth(x, self.contexts[2].double())

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    def bits_per_dim(self, nll: float) -> float:
        return nll / (self.dim * math.log(2))


def _tensor(a: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32).contiguous()


def toy(name: str, seed: int) -> Dataset:
    """A toy's three splits drawn from its sampler with seeds seed, seed + 1, seed + 2."""
    t = toys.TOYS[name]
    parts = [t.sample(n, seed + i) for i, n in enumerate(TOY_SIZES)]
    return Dataset(name, *map(_tensor, parts), 0.0, "nats per point", t.entropy, t.about, t.log_density)


def conditional(name: str, seed: int) -> Dataset:
    """A conditional task: train and validation pairs from the joint (seeds seed and
    seed + 1), test draws from each fixed observation's posterior (seed + 2)."""
    task = posteriors.TASKS[name]
    (train, c_train), (val, c_val) = (
        task.simulate(n, torch.Generator().manual_seed(seed + i)) for i, n in enumerate(TOY_SIZES[:2])
    )
    test, c_test, index = posteriors.judged(task, PER_OBSERVATION, seed + 2)
    contexts = (_tensor(c_train), _tensor(c_val), _tensor(c_test))
    parts = map(_tensor, (train, val, test))
    units = "nats per point"
    return Dataset(name, *parts, 0.0, units, task.entropy, task.about, task.log_posterior, contexts, index)


def digits(seed: int) -> Dataset:
    """scikit-learn's digits: levels v in 0..16 dequantised as w = v + u, u ~ U(0, 1)^64
    (fixed per split), then standardised per pixel with the training mean and standard
    deviation. The NLL is reported for w, in nats per image (bin width 1), so bits per
    dimension bound the code length of the discrete pixels; a uniform model scores
    log2(17) = 4.09 bits. Split: 1,257 train, 180 validation, 360 test (seed 0's
    permutation, fixed whatever ``seed``, which seeds only the dequantisation)."""
    from sklearn.datasets import load_digits

    levels = load_digits().data.astype(np.float64)
    order = np.random.RandomState(0).permutation(len(levels))
    test_i, val_i, train_i = order[:360], order[360:540], order[540:]
    rng = np.random.RandomState(seed)
    w = [levels[i] + rng.rand(len(i), levels.shape[1]) for i in (train_i, val_i, test_i)]
    mu, sd = w[0].mean(axis=0), w[0].std(axis=0)
    train, val, test = ((part - mu) / sd for part in w)
    offset = float(np.log(sd).sum())
    about = "scikit-learn load_digits, 8 x 8 levels 0..16, uniform dequantisation, standardised"
    return Dataset(DIGITS, _tensor(train), _tensor(val), _tensor(test), offset, "nats per image", None, about)


def tabular(name: str, data_dir: Path) -> Dataset:
    root = Path(data_dir)
    try:
        train, val, test = uci.load(name, root)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{name}: {e.filename} not found under --data-dir {root}; the MAF paper's preprocessed files "
            "(zenodo.org/record/1161203, data.tar.gz) unpack to the layout harness.data.uci lists"
        ) from e
    about = f"the MAF paper's {name.upper()} (normalised as the paper)"
    return Dataset(name, _tensor(train), _tensor(val), _tensor(test), 0.0, "nats per point", None, about)


def load(name: str, seed: int = 0, data_dir: str | Path | None = None) -> Dataset:
    """The data set ``name`` (one of :data:`NAMES`); the UCI sets need ``data_dir``."""
    if name in toys.TOYS:
        return toy(name, seed)
    if name == DIGITS:
        return digits(seed)
    if name in posteriors.TASKS:
        return conditional(name, seed)
    if name in uci.LOADERS:
        if data_dir is None:
            raise UserError(f"{name} is read from your files: pass --data-dir (see harness.data.uci)")
        return tabular(name, Path(data_dir))
    raise UserError(f"unknown data set {name!r}; allowed: {', '.join(NAMES)}")
