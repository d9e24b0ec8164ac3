"""Loss-threshold membership inference (method.md section 8).

The attacker guesses "member" when a sample's loss is below a threshold.  Over every
threshold, its success is the area under the ROC curve of the score ``-loss``:

    AUC = P(loss(member) < loss(non-member)) + 1/2 P(equal)

0.5 means the model treats the forgotten samples like samples it never saw; 1.0 means
every forgotten sample still has a lower loss than every unseen one.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["mia_auc"]


def mia_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the loss-threshold attack (Mann-Whitney statistic of ``-loss``); NaN if a side is empty."""
    members = np.asarray(member_losses, dtype=np.float64).ravel()
    others = np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if len(members) == 0 or len(others) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([-members, -others]))  # average ranks for ties
    n_m, n_o = len(members), len(others)
    return float((ranks[:n_m].sum() - n_m * (n_m + 1) / 2) / (n_m * n_o))
