"""Independent reference computations for tests: dense, loop-based, via scipy.optimize.linprog.

Written from the SPEC's formulas directly, sharing no code with the package.
"""

import numpy as np
from scipy.optimize import linprog


def dense_polytope(P, rho, gamma):
    """Flow equations of the occupancy polytope, one (s', s, a) at a time."""
    S, A, _ = P.shape
    rows, rhs = [], []
    for t in range(S):
        row = np.zeros(S * A)
        for s in range(S):
            for a in range(A):
                row[s * A + a] -= (gamma if gamma < 1 else 1.0) * P[s, a, t]
                if s == t:
                    row[s * A + a] += 1.0
        rows.append(row)
        rhs.append((1 - gamma) * rho[t] if gamma < 1 else 0.0)
    rows.append(np.ones(S * A))
    rhs.append(1.0)
    return np.array(rows), np.array(rhs)


def lp_max(c, P, rho, gamma, A_ub=None, b_ub=None):
    """max c @ d over the polytope; returns (value, d)."""
    A_eq, b_eq = dense_polytope(P, rho, gamma)
    res = linprog(-np.asarray(c), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    return -res.fun, res.x


def max_min(R, P, rho, gamma, scale=None, offset=None):
    """max_d min_i (R_i d - offset_i) / scale_i, an LP in (d, t)."""
    n, m = R.shape
    scale = np.ones(n) if scale is None else scale
    offset = np.zeros(n) if offset is None else offset
    A_eq, b_eq = dense_polytope(P, rho, gamma)
    A_eq = np.hstack([A_eq, np.zeros((A_eq.shape[0], 1))])
    # t - (R_i d - offset_i) / scale_i <= 0
    A_ub = np.hstack([-R / scale[:, None], np.ones((n, 1))])
    b_ub = -offset / scale
    c = np.zeros(m + 1)
    c[-1] = -1.0
    bounds = [(0, None)] * m + [(None, None)]
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    assert res.status == 0, res.message
    return -res.fun


def occupancy_by_dense_solve(P, rho, gamma, policy):
    """State-action occupancy of a policy with a unique stationary distribution (gamma = 1)."""
    S = P.shape[0]
    P_pi = np.einsum("sa,sat->st", policy, P)
    if gamma < 1:
        mu = np.linalg.solve(np.eye(S) - gamma * P_pi.T, (1 - gamma) * rho)
    else:
        mu = np.full(S, 1.0 / S)
        for _ in range(20000):  # power iteration on the lazy chain
            mu = 0.5 * mu + 0.5 * mu @ P_pi
    return mu[:, None] * policy
