"""Fairness metrics of a vector of (normalised) returns."""

from __future__ import annotations

import numpy as np

from policyagg.errors import InvalidProblemError


def gini(values) -> float:
    """Gini index ``sum_{i,j} |x_i - x_j| / (2 n^2 mean(x))`` of non-negative values.

    0 means perfect equality; ``(n-1)/n`` means one agent has everything. All zeros give 0.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise InvalidProblemError("`values` must not be empty")
    if np.any(x < -1e-9) or not np.all(np.isfinite(x)):
        raise InvalidProblemError("the Gini index needs finite, non-negative values (use normalised returns)")
    x = np.sort(np.clip(x, 0.0, None))
    total = x.sum()
    if total == 0.0:
        return 0.0
    n = x.size
    # sum_{i,j} |x_i - x_j| = 2 sum_k (2k - n - 1) x_(k) for ascending x, k = 1..n
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / (n * total))
