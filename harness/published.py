"""What the papers published, as data (no torch): the B-NAF paper's test
log-likelihoods, shown beside ours where a fit used the same data set."""

from __future__ import annotations

# The B-NAF paper's Table 1 (top): test log-likelihood in nats per point, higher is
# better, mean over 3 trainings (the paper's +- std in the text), on the MAF paper's
# normalised UCI sets. Shown beside ours where a fit used that data set.
PUBLISHED_SOURCE = "De Cao et al., 2019, Table 1: mean ± std over 3 models"
PUBLISHED_LL: dict[str, dict[str, str]] = {
    "power": {"MAF-affine": "0.24 ± .01", "NAF-DDSF": "0.62 ± .01", "B-NAF": "0.61 ± .01"},
    "gas": {"MAF-affine": "10.08 ± .02", "NAF-DDSF": "11.96 ± .33", "B-NAF": "12.06 ± .09"},
    "hepmass": {"MAF-affine": "-17.73 ± .02", "NAF-DDSF": "-15.09 ± .40", "B-NAF": "-14.71 ± .38"},
    "miniboone": {"MAF-affine": "-12.24 ± .45", "NAF-DDSF": "-8.86 ± .15", "B-NAF": "-8.95 ± .07"},
    "bsds300": {"MAF-affine": "155.69 ± .28", "NAF-DDSF": "157.43 ± .30", "B-NAF": "157.36 ± .03"},
}
