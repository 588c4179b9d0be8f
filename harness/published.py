"""What the papers published, as data (no torch): the B-NAF and NSF papers' test
log-likelihoods, shown beside ours where a fit used the same data set."""

from __future__ import annotations

# Test log-likelihoods in nats per point, higher is better, on the MAF paper's normalised
# UCI sets; shown beside ours where a fit used that data set. Two papers, each with its
# own error bars (stated in PUBLISHED_SOURCE):
# - the B-NAF paper's Table 1 (top): mean +- std over 3 trainings;
# - the NSF paper's Table 1 (Durkan et al., 2019): +- two standard errors over the test
#   set, one training; its MAF row is the authors' rerun with ResMADE conditioners and
#   invertible linear layers (stronger than the MAF paper's own numbers).
PUBLISHED_SOURCE = (
    "De Cao et al., 2019, Table 1: mean ± std over 3 models; "
    "Durkan et al., 2019, Table 1: ± 2 standard errors over the test set, one model (its MAF is the authors' rerun)"
)
PUBLISHED_LL: dict[str, dict[str, str]] = {
    "power": {
        "MAF-affine": "0.24 ± .01",
        "NAF-DDSF": "0.62 ± .01",
        "B-NAF": "0.61 ± .01",
        "MAF (NSF paper)": "0.45 ± .01",
        "RQ-NSF (C)": "0.64 ± .01",
        "RQ-NSF (AR)": "0.66 ± .01",
    },
    "gas": {
        "MAF-affine": "10.08 ± .02",
        "NAF-DDSF": "11.96 ± .33",
        "B-NAF": "12.06 ± .09",
        "MAF (NSF paper)": "12.35 ± .02",
        "RQ-NSF (C)": "13.09 ± .02",
        "RQ-NSF (AR)": "13.09 ± .02",
    },
    "hepmass": {
        "MAF-affine": "-17.73 ± .02",
        "NAF-DDSF": "-15.09 ± .40",
        "B-NAF": "-14.71 ± .38",
        "MAF (NSF paper)": "-17.03 ± .02",
        "RQ-NSF (C)": "-14.75 ± .03",
        "RQ-NSF (AR)": "-14.01 ± .03",
    },
    "miniboone": {
        "MAF-affine": "-12.24 ± .45",
        "NAF-DDSF": "-8.86 ± .15",
        "B-NAF": "-8.95 ± .07",
        "MAF (NSF paper)": "-10.92 ± .46",
        "RQ-NSF (C)": "-9.67 ± .47",
        "RQ-NSF (AR)": "-9.22 ± .48",
    },
    "bsds300": {
        "MAF-affine": "155.69 ± .28",
        "NAF-DDSF": "157.43 ± .30",
        "B-NAF": "157.36 ± .03",
        "MAF (NSF paper)": "156.95 ± .28",
        "RQ-NSF (C)": "157.54 ± .28",
        "RQ-NSF (AR)": "157.31 ± .28",
    },
}
