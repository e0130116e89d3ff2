"""The state visits of the ``volume`` sampler compiled with numba (the optional ``fast`` extra).

:func:`visit_states` does what :func:`policyagg.volume_chain.visit_states` does in numpy, visit by
visit on the same pre-drawn proposals and thresholds, without the ~20 numpy calls per visit
that dominate the numpy version's time on attention-sized problems. Its floating-point sums
run in another order than BLAS's, so the two agree to rounding, not bit for bit.

Imported lazily (compiling it takes seconds the first time; numba caches the machine code
next to this file, or in its user cache when that is not writable).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

_SIGNATURE = (
    "Tuple((int64, float64))("
    "int64[::1], float64[:, :, ::1], float64[:, ::1], float64[:, ::1], "  # order, candidates, log_q_shift, thresholds
    "float64[:, ::1], float64[:, ::1], float64[::1], float64[::1], float64, "  # policy, G, mu, inv_mu, logdet
    "int64[::1], int64[::1], float64[:, ::1], float64)"  # support_ptr, support_index, blocks, am1
)


@numba.njit("float64(float64[::1], float64)", cache=True, nogil=True)
def _product_of_ratios(y: NDArray[np.float64], scale: float) -> float:  # pragma: no cover - compiled
    """``prod_j (1 + y_j scale)`` in four interleaved partial products (a single running
    product is bound by the multiplier's latency; numba does not reorder it without fastmath)."""
    p0 = p1 = p2 = p3 = 1.0
    n = y.size
    head = n - n % 4
    for j in range(0, head, 4):
        p0 *= y[j] * scale + 1.0
        p1 *= y[j + 1] * scale + 1.0
        p2 *= y[j + 2] * scale + 1.0
        p3 *= y[j + 3] * scale + 1.0
    for j in range(head, n):
        p0 *= y[j] * scale + 1.0
    return (p0 * p1) * (p2 * p3)


@numba.njit(_SIGNATURE, cache=True, nogil=True)
def visit_states(
    order: NDArray[np.int64],
    candidates: NDArray[np.float64],
    log_q_shift: NDArray[np.float64],
    thresholds: NDArray[np.float64],
    policy: NDArray[np.float64],
    G: NDArray[np.float64],
    mu: NDArray[np.float64],
    inv_mu: NDArray[np.float64],
    logdet: float,
    support_ptr: NDArray[np.int64],
    support_index: NDArray[np.int64],
    blocks: NDArray[np.float64],
    am1: float,
) -> tuple[int, float]:  # pragma: no cover - compiled
    """Visit the states ``order`` in turn; update ``policy``, ``G``, ``mu`` and ``inv_mu`` in
    place; return ``(moves, logdet)``. ``support_index[support_ptr[s]:support_ptr[s + 1]]``
    are the states ``P(.|s, .)`` reaches and ``blocks`` (same rows, (k, A)) the change of
    column ``s`` of ``A_pi`` per unit of each action (see :class:`policyagg.volume_chain.VolumeSampler`)."""
    S, A = policy.shape
    n_candidates = candidates.shape[1]
    W = np.empty((A, S))
    Y = np.empty((n_candidates, S))
    step = np.empty(A)
    denom = np.empty(n_candidates)
    scale = np.empty(n_candidates)
    log_target = np.empty(n_candidates)
    column = np.empty(S)
    x = np.empty(S)
    moves = 0
    for i in range(order.size):
        s = order[i]
        # W = (A^{-1} U_s)^T / mu: row a is x / mu for a unit move of the row to action a
        W[:, :] = 0.0
        for t in range(support_ptr[s], support_ptr[s + 1]):
            g = G[support_index[t]]
            for a in range(A):
                b = blocks[t, a]
                if b != 0.0:
                    for j in range(S):
                        W[a, j] += b * g[j]
        for a in range(A):
            for j in range(S):
                W[a, j] *= inv_mu[j]
        # Y = x / mu for every candidate; mu'/mu = 1 + Y * scale, det A'/det A = denom
        for c in range(n_candidates):
            Y[c, :] = 0.0
            for a in range(A):
                step[a] = candidates[i, c, a] - policy[s, a]
                for j in range(S):
                    Y[c, j] += step[a] * W[a, j]
            denom[c] = 1.0 + Y[c, s] * mu[s]
            if denom[c] == 0.0:  # singular (only through rounding): never accepted
                denom[c] = np.inf
            scale[c] = -mu[s] / denom[c]
            product = _product_of_ratios(Y[c], scale[c])
            if product > 0.0:
                log_target[c] = am1 * math.log(product) - math.log(abs(denom[c]))
            else:
                log_target[c] = -np.inf
        # one random-walk step (candidate 0, Hastings term in its threshold), then the
        # independence steps, each against the candidate reached so far
        current, current_w = -1, 0.0
        if thresholds[i, 0] < log_target[0]:
            current, current_w = 0, log_target[0] - log_q_shift[i, 0]
        for c in range(1, n_candidates):
            w = log_target[c] - log_q_shift[i, c]
            if thresholds[i, c] < w - current_w:
                current, current_w = c, w
        if current < 0:
            continue
        for j in range(S):  # mu' > 0 for rows with full support; refuse rounding artefacts
            if Y[current, j] * scale[current] + 1.0 <= 0.0:
                current = -1
                break
        if current < 0:
            continue
        # Sherman-Morrison on G = (A^{-1})^T: G += (-1 / denom) G[:, s] (x)^T, x = Y mu
        for j in range(S):
            column[j] = G[j, s]
            x[j] = Y[current, j] * mu[j]
        coefficient = -1.0 / denom[current]
        for r in range(S):
            factor = coefficient * column[r]
            for j in range(S):
                G[r, j] += factor * x[j]
        for j in range(S):
            mu[j] *= Y[current, j] * scale[current] + 1.0
            inv_mu[j] = 1.0 / mu[j]
        logdet += math.log(abs(denom[current]))
        for a in range(A):
            policy[s, a] = candidates[i, current, a]
        moves += 1
    return moves, logdet
