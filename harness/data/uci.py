"""The MAF paper's tabular sets (Papamakarios et al., 2017), read from the files its
preprocessed release holds, with the paper's cleaning, splits and normalisation.

Point ``--data-dir`` at the folder that holds them (nothing is downloaded)::

    power/data.npy              POWER      d = 6
    gas/ethylene_CO.pickle      GAS        d = 8   (a pandas pickle, which is unpickled: trusted files only)
    hepmass/1000_train.csv      HEPMASS    d = 21
    hepmass/1000_test.csv
    miniboone/data.npy          MINIBOONE  d = 43
    BSDS300/BSDS300.hdf5        BSDS300    d = 63  (needs h5py: pip install 'flowbench-harness[uci]')

Each loader returns (train, validation, test) as float arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UserError

Splits = tuple[np.ndarray, np.ndarray, np.ndarray]


def _split_last(data: np.ndarray) -> Splits:
    """The papers' split: the last 10% is the test set, the last 10% of the rest validation."""
    n_test = int(0.1 * len(data))
    test, rest = data[len(data) - n_test :], data[: len(data) - n_test]
    n_val = int(0.1 * len(rest))
    return rest[: len(rest) - n_val], rest[len(rest) - n_val :], test


def _normalise(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Splits:
    """Standardise with the mean and standard deviation of train and validation together."""
    both = np.vstack([train, val])
    mu, sd = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / sd, (val - mu) / sd, (test - mu) / sd


def power(root: Path) -> Splits:
    """Household power consumption: shuffle with seed 42, drop the reactive power and the
    intensity, add the release's uniform noise to break ties. The draws come in the
    release's order (voltage, then gap, then the three sub-meterings) though the columns
    are stacked gap, voltage, sub-meterings, time: the same generator state as the
    authors' loader gives the same numbers."""
    rng = np.random.RandomState(42)
    data = np.load(root / "power" / "data.npy")
    rng.shuffle(data)
    n = len(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    voltage = 0.01 * rng.rand(n, 1)
    gap = 0.001 * rng.rand(n, 1)
    sub_metering = rng.rand(n, 3)
    noise = np.hstack([gap, voltage, sub_metering, np.zeros((n, 1))])
    return _normalise(*_split_last(data + noise))


def gas(root: Path) -> Splits:
    """Gas sensors (ethylene and CO): drop the labels and time, then, one at a time, a
    column correlated above 0.98 with another; standardise."""
    import pandas as pd

    data = pd.read_pickle(root / "gas" / "ethylene_CO.pickle")
    data = data.drop(columns=["Meth", "Eth", "Time"])

    def correlated(frame: pd.DataFrame) -> np.ndarray:
        return (frame.corr() > 0.98).to_numpy().sum(axis=1)

    counts = correlated(data)
    while np.any(counts > 1):
        data = data.drop(columns=data.columns[np.where(counts > 1)[0][0]])
        counts = correlated(data)
    data = (data - data.mean()) / data.std()
    return _split_last(data.to_numpy())


def hepmass(root: Path) -> Splits:
    """HEPMASS (1000 GeV): signal events only, standardised with the training set's
    statistics; features whose smallest value recurs more than 5 times are dropped (the
    paper's rule, which removes the discrete mass and six others); validation is the
    last 10% of training."""
    import pandas as pd

    train = pd.read_csv(root / "hepmass" / "1000_train.csv", index_col=False)
    test = pd.read_csv(root / "hepmass" / "1000_test.csv", index_col=False)
    train = train[train[train.columns[0]] == 1].drop(columns=train.columns[0])
    test = test[test[test.columns[0]] == 1].drop(columns=test.columns[0])
    if test.shape[1] == train.shape[1] + 1:  # the released test file's header is one column off
        test = test.drop(columns=test.columns[-1])
    mu, sd = train.mean(), train.std()
    train_x, test_x = ((train - mu) / sd).to_numpy(), ((test.set_axis(train.columns, axis=1) - mu) / sd).to_numpy()
    keep = [i for i, column in enumerate(train_x.T) if sorted(Counter(column).items())[0][1] <= 5]
    train_x, test_x = train_x[:, keep], test_x[:, keep]
    n_val = int(0.1 * len(train_x))
    return train_x[: len(train_x) - n_val], train_x[len(train_x) - n_val :], test_x


def miniboone(root: Path) -> Splits:
    """MiniBooNE particle identification, split and standardised as the paper."""
    return _normalise(*_split_last(np.load(root / "miniboone" / "data.npy")))


def bsds300(root: Path) -> Splits:
    """8 x 8 patches of BSDS300 images (the last pixel dropped), split as released."""
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py ships with the dev extra
        raise ImportError("BSDS300 is HDF5: pip install h5py (or 'flowbench-harness[uci]')") from e
    with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "r") as f:
        return f["train"][:], f["validation"][:], f["test"][:]


LOADERS: dict[str, Callable[[Path], Splits]] = {
    "power": power,
    "gas": gas,
    "hepmass": hepmass,
    "miniboone": miniboone,
    "bsds300": bsds300,
}
DIMS = {"power": 6, "gas": 8, "hepmass": 21, "miniboone": 43, "bsds300": 63}

FILES = {
    "power": ("power/data.npy",),
    "gas": ("gas/ethylene_CO.pickle",),
    "hepmass": ("hepmass/1000_train.csv", "hepmass/1000_test.csv"),
    "miniboone": ("miniboone/data.npy",),
    "bsds300": ("BSDS300/BSDS300.hdf5",),
}


def load(name: str, root: Path) -> Splits:
    """The (train, validation, test) splits of UCI set ``name`` under ``root``, checked:
    a file that cannot be read as the release's, or splits of the wrong dimension,
    empty, or not finite, give one UserError naming the file and what is wrong. A
    missing file raises FileNotFoundError."""
    files = ", ".join(str(root / f) for f in FILES[name])
    try:
        splits = LOADERS[name](root)
    except FileNotFoundError:
        raise
    except Exception as e:  # numpy, pandas, pickle and h5py each raise their own kinds on a bad file
        why = f"{type(e).__name__}: {e}".replace("\n", " ")[:200]
        raise UserError(f"{files} cannot be read as the MAF release's {name.upper()} ({why})") from None
    for split, part in zip(("train", "validation", "test"), splits):
        part = np.asarray(part)
        if part.ndim != 2 or part.shape[1] != DIMS[name]:
            raise UserError(
                f"{files}: the {split} split has shape {part.shape}, not (n, {DIMS[name]}) as {name.upper()}"
            )
        if len(part) == 0:
            raise UserError(f"{files}: the {split} split of {name.upper()} is empty")
        if not np.issubdtype(part.dtype, np.number) or not np.isfinite(part.astype(float)).all():
            raise UserError(f"{files}: the {split} split of {name.upper()} holds values that are not finite numbers")
    return splits
