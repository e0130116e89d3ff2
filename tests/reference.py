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


def ordered_leximin(R, P, rho, gamma, scale=None, offset=None):
    """The sorted leximin vector of ``u_i = (R_i d - offset_i) / scale_i`` over the polytope,
    by Ogryczak's ordered outcomes: lexicographically maximise ``theta_k``, the sum of the
    ``k`` smallest ``u_i``, with ``theta_k(u) = max_r k r - sum_i max(r - u_i, 0)``
    (Ogryczak and Sliwinski 2006). A different LP from the library's per-agent levels.
    Returns ``theta_k - theta_{k-1}`` for ``k = 1..n``.

    Each earlier ``theta_j`` is kept at its optimum up to a slack ``s_j <= 1e-6 |theta_j|``
    priced at 1e4 per unit (so it is used only where the LP's tolerance needs it; a hard
    tolerance would be spent on raising later levels, which are ill-conditioned)."""
    n, m = R.shape
    scale = np.ones(n) if scale is None else np.asarray(scale, float)
    offset = np.zeros(n) if offset is None else np.asarray(offset, float)
    U = R / scale[:, None]
    A_flow, b_flow = dense_polytope(P, rho, gamma)
    group = n + 2  # per k: r_k, e_{k, 1..n}, the slack s_k of theta_k's floor
    n_cols = m + n * group
    A_eq = np.hstack([A_flow, np.zeros((A_flow.shape[0], n * group))])
    A_ub, b_ub = [], []
    for k in range(n):
        r_col = m + k * group
        for i in range(n):  # r_k - e_ki - u_i(d) <= 0
            row = np.zeros(n_cols)
            row[:m] = -U[i]
            row[r_col], row[r_col + 1 + i] = 1.0, -1.0
            A_ub.append(row)
            b_ub.append(-offset[i] / scale[i])
    A_ub, b_ub = np.array(A_ub), np.array(b_ub)
    bounds = [(0, None)] * m + ([(None, None)] + [(0, None)] * n + [(0, 0)]) * n
    slack_cost = np.zeros(n_cols)
    theta = []
    for k in range(n):
        r_col = m + k * group
        theta_k = np.zeros(n_cols)
        theta_k[r_col], theta_k[r_col + 1 : r_col + 1 + n] = k + 1, -1.0
        res = linprog(slack_cost - theta_k, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_flow, bounds=bounds, method="highs")
        assert res.status == 0, res.message
        theta.append(theta_k @ res.x)
        floor = -theta_k
        floor[r_col + n + 1] = -1.0  # -theta_k(x) - s_k <= -theta_k*
        A_ub, b_ub = np.vstack([A_ub, floor]), np.append(b_ub, -theta[-1])
        bounds[r_col + n + 1] = (0, 1e-6 * max(1.0, abs(theta[-1])))
        slack_cost[r_col + n + 1] = 1e4
    return np.diff(np.concatenate([[0.0], theta]))


def pareto_gap(R, P, rho, gamma, returns, scale):
    """The largest total gain ``sum_i (R_i d' - returns_i) / scale_i`` of a point ``d'`` of the
    polytope that makes no agent worse than ``returns`` (0 when ``returns`` is Pareto optimal).
    Each floor is relaxed by ``1e-9 * scale_i`` so that a point on the frontier stays feasible."""
    A_eq, b_eq = dense_polytope(P, rho, gamma)
    scale = np.asarray(scale, float)
    res = linprog(
        -(R / scale[:, None]).sum(axis=0),
        A_ub=-R,
        b_ub=-(np.asarray(returns) - 1e-9 * scale),
        A_eq=A_eq,
        b_eq=b_eq,
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0, res.message
    return max(0.0, -res.fun - (np.asarray(returns) / scale).sum())


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


def owa_max(R, P, rho, gamma, a, scale=None, offset=None, method="highs"):
    """max over the polytope of the OWA ``sum_k a_k u_(k)`` (``u`` sorted ascending, ``a``
    non-increasing) of ``u_i = (R_i d - offset_i) / scale_i``, by Ogryczak's LP: with
    ``a_{n+1} = 0``, ``OWA = sum_k (a_k - a_{k+1}) S_k`` and the sum of the ``k`` smallest
    ``S_k(u) = max_t k t - sum_i max(t - u_i, 0)`` (columns ``t_k``, ``e_ki >= t_k - u_i``, ``e >= 0``).
    Sparse rows, one (k, i) at a time. Returns (value, d)."""
    import scipy.sparse as sp

    n, m = R.shape
    a = np.asarray(a, float)
    scale = np.ones(n) if scale is None else np.asarray(scale, float)
    offset = np.zeros(n) if offset is None else np.asarray(offset, float)
    U = R / scale[:, None]
    step = a - np.append(a[1:], 0.0)
    n_cols = m + n + n * n  # d, t_1..t_n, e_11..e_nn
    A_flow, b_flow = dense_polytope(P, rho, gamma)
    rows, cols, vals, b_ub = [], [], [], []
    for k in range(n):
        for i in range(n):  # t_k - e_ki - u_i(d) <= offset-free part
            r = k * n + i
            rows += [r] * (m + 2)
            cols += list(range(m)) + [m + k, m + n + r]
            vals += list(-U[i]) + [1.0, -1.0]
            b_ub.append(-offset[i] / scale[i])
    A_ub = sp.csr_array((vals, (rows, cols)), shape=(n * n, n_cols))
    A_eq = sp.hstack([sp.csr_array(A_flow), sp.csr_array((A_flow.shape[0], n + n * n))], format="csr")
    c = np.zeros(n_cols)
    for k in range(n):
        c[m + k] = -step[k] * (k + 1)
        c[m + n + k * n : m + n + (k + 1) * n] = step[k]
    bounds = [(0, None)] * m + [(None, None)] * n + [(0, None)] * (n * n)
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_flow, bounds=bounds, method=method)
    assert res.status == 0, res.message
    return -res.fun, res.x[:m]
