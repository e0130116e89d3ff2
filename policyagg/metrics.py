"""Fairness metrics of a vector of (normalised) returns."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidProblemError


def gini(values: ArrayLike) -> float:
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


def approvals(ranks: ArrayLike, alpha: float) -> int:
    """Number of agents that approve: ``#{i : rank_i >= alpha}``."""
    return int(np.count_nonzero(np.asarray(ranks) >= alpha - 1e-12))


def borda_score(ranks: ArrayLike) -> float:
    """Volumetric Borda score ``sum_i rank_i`` (each rank in [0, 1])."""
    return float(np.sum(ranks))


#: The verifier enumerates 2^n coalitions; beyond this it refuses.
MAX_PVC_AGENTS = 20


def pvc_epsilon(returns: ArrayLike, sample_values: ArrayLike) -> float:
    """Smallest ``eps`` such that ``d`` (with returns ``J``) is in the eps-proportional veto core.

    .. math:: \\varepsilon(d) = \\max_{\\emptyset \\ne T \\subseteq N} \\mu(B_T) - 1 + |T| / n,
              \\qquad B_T = \\{k : V_{k,i} > J_i \\ \\forall i \\in T\\}

    ``mu(B_T)`` is the share of samples every member of ``T`` strictly prefers to ``d``. One
    bit-mask per sample, a histogram over the ``2^n`` masks and a superset-sum transform give
    every ``mu(B_T)`` at once (``n`` up to :data:`MAX_PVC_AGENTS`). Negative values mean
    ``d`` is in the core with room to spare.
    """
    values = np.asarray(sample_values, dtype=float)
    returns = np.asarray(returns, dtype=float)
    N, n = values.shape
    if returns.shape != (n,):
        raise InvalidProblemError(f"`returns` must have shape ({n},); got {returns.shape}")
    if n > MAX_PVC_AGENTS:
        raise InvalidProblemError(f"the PVC verifier enumerates 2^n coalitions; n = {n} > {MAX_PVC_AGENTS} agents")
    prefers = values > returns[None, :]
    masks = prefers.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64))
    count = np.bincount(masks, minlength=1 << n).astype(np.int64)
    for i in range(n):  # superset sums: count[T] = #{k : mask_k contains T}
        view = count.reshape(-1, 2, 1 << i)
        view[:, 0, :] += view[:, 1, :]
    sizes = np.bitwise_count(np.arange(1 << n, dtype=np.uint64)).astype(float)
    slack = count[1:] / N - 1.0 + sizes[1:] / n
    return float(slack.max())


def window_mass(normalized: ArrayLike, width: float = 0.06) -> NDArray[np.float64]:
    """Per agent, the largest share of samples inside any window of ``width`` (a fraction of
    the agent's LP return range) of its normalised sampled returns ``(N, n)``.

    Near 1 means the measure concentrates: almost every policy gives the agent nearly the
    same return, so ranks jump from ~0 to ~1 across that thin band.
    """
    x = np.sort(np.asarray(normalized, dtype=float), axis=0)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidProblemError(f"`normalized` must be a non-empty (N, n) array; got shape {np.shape(normalized)}")
    if not 0 < width <= 1:
        raise InvalidProblemError(f"`width` must be in (0, 1]; got {width}")
    N = x.shape[0]
    # For each sample as the window's left end, count samples <= left + width.
    ends = np.stack([np.searchsorted(col, col + width, side="right") for col in x.T], axis=1)
    mass: NDArray[np.float64] = (ends - np.arange(N)[:, None]).max(axis=0) / N  # numpy types axis reductions as Any
    return mass
