"""Fairness metrics of a vector of (normalised) returns."""

from __future__ import annotations

import math

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


#: Up to this many agents the verifier enumerates the 2^n coalitions; beyond, it solves a min cut.
MAX_PVC_AGENTS = 20

#: The verifier's methods: exact superset sums over 2^n coalitions, or an exact min cut (any n).
PVC_METHODS = ("enumeration", "min_cut")


def pvc_method(n_agents: int) -> str:
    """The method :func:`pvc_epsilon` uses by default for ``n_agents``: ``"enumeration"`` up to
    :data:`MAX_PVC_AGENTS` agents, ``"min_cut"`` beyond (both exact)."""
    return "enumeration" if n_agents <= MAX_PVC_AGENTS else "min_cut"


def pvc_epsilon(returns: ArrayLike, sample_values: ArrayLike, method: str | None = None) -> float:
    """Smallest ``eps`` such that ``d`` (with returns ``J``) is in the eps-proportional veto core.

    .. math:: \\varepsilon(d) = \\max_{\\emptyset \\ne T \\subseteq N} \\mu(B_T) - 1 + |T| / n,
              \\qquad B_T = \\{k : V_{k,i} > J_i \\ \\forall i \\in T\\}

    ``mu(B_T)`` is the share of samples every member of ``T`` strictly prefers to ``d``.
    ``method`` (default :func:`pvc_method`): ``"enumeration"`` (:func:`pvc_epsilon_enumeration`,
    ``2^n`` coalitions, ``n <=`` :data:`MAX_PVC_AGENTS`) or ``"min_cut"``
    (:func:`pvc_epsilon_min_cut`, polynomial, any ``n``); both are exact. Negative values never
    occur (``T = N`` gives ``mu(B_N) >= 0``); ``0`` is the exact sampled core.
    """
    values = np.asarray(sample_values, dtype=float)
    returns = np.asarray(returns, dtype=float)
    if values.ndim != 2 or values.shape[0] == 0:
        raise InvalidProblemError(f"`sample_values` must be a non-empty (N, n) array; got shape {values.shape}")
    n = values.shape[1]
    if returns.shape != (n,):
        raise InvalidProblemError(f"`returns` must have shape ({n},); got {returns.shape}")
    method = pvc_method(n) if method is None else method
    if method == "enumeration":
        return pvc_epsilon_enumeration(returns, values)
    if method == "min_cut":
        return pvc_epsilon_min_cut(returns, values)
    raise InvalidProblemError(f"`method` must be one of {PVC_METHODS} or None; got {method!r}")


def pvc_epsilon_enumeration(returns: NDArray[np.float64], values: NDArray[np.float64]) -> float:
    """:func:`pvc_epsilon` by enumeration: one bit-mask per sample, a histogram over the ``2^n``
    masks and a superset-sum transform give every ``mu(B_T)`` at once (``n <=`` :data:`MAX_PVC_AGENTS`)."""
    N, n = values.shape
    if n > MAX_PVC_AGENTS:
        raise InvalidProblemError(
            f"the PVC enumeration visits 2^n coalitions; n = {n} > {MAX_PVC_AGENTS} agents (use method='min_cut')"
        )
    prefers = values > returns[None, :]
    masks = prefers.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64))
    count = np.bincount(masks, minlength=1 << n).astype(np.int64)
    for i in range(n):  # superset sums: count[T] = #{k : mask_k contains T}
        view = count.reshape(-1, 2, 1 << i)
        view[:, 0, :] += view[:, 1, :]
    sizes = np.bitwise_count(np.arange(1 << n, dtype=np.uint64)).astype(float)
    slack = count[1:] / N - 1.0 + sizes[1:] / n
    return float(slack.max())


def pvc_epsilon_min_cut(returns: NDArray[np.float64], values: NDArray[np.float64]) -> float:
    """:func:`pvc_epsilon` exactly in polynomial time: ``1 - (min cut) / (n N)`` on a bipartite network.

    **Claim.** Let ``G`` be the bipartite graph with an edge ``(k, i)`` when sample ``k`` is
    strictly preferred by agent ``i`` (``V_{k,i} > J_i``); give a sample weight ``1/N`` and an
    agent weight ``1/n``. Then ``eps(d) = W* - 1`` with ``W*`` the largest weight of a
    biclique ``(S, T)`` of ``G`` (every ``k`` in ``S`` joined to every ``i`` in ``T``).

    *Proof.* (i) For ``T != {}``, ``(B_T, T)`` is a biclique of weight ``mu(B_T) + |T|/n``, so
    ``W* - 1 >= eps``. (ii) Any biclique ``(S, T)`` with ``T != {}`` has ``S ⊆ B_T``, so its
    weight is at most ``mu(B_T) + |T|/n <= eps + 1``; one with ``T = {}`` weighs ``|S|/N <= 1
    <= mu(B_N) + 1`` (the biclique ``(B_N, N)``), which is again ``<= eps + 1``. ∎

    A biclique of ``G`` is an independent set of the bipartite complement ``H`` (edge ``(k, i)``
    when ``V_{k,i} <= J_i``), so ``W* = 2 - c*`` with ``c*`` the minimum weight vertex cover of
    ``H``, which (König / max-flow min-cut) is the min ``s-t`` cut of the network
    ``s -> k`` (capacity ``n``), ``k -> i`` for edges of ``H`` (capacity ∞), ``i -> t``
    (capacity ``N``), scaled by ``1/(n N)``. Hence ``eps = 1 - cut / (n N)``.

    Reductions that keep the cut: samples with the same preference mask merge (capacities
    add); samples no agent prefers are dropped (an independent set holding one holds no agent,
    weighs ``<= 1`` and is never better than ``(B_N, N)``, by (ii); their weight ``D/N`` leaves the
    total, so ``eps = 1 - D/N - cut / (n N)``). The max flow is
    :func:`scipy.sparse.csgraph.maximum_flow` (Dinic) on ``<= N n`` arcs, integer capacities
    (int32: ``n N / gcd(n, N) < 2^31``, which holds whenever the ``(N, n)`` float matrix fits in 16 GiB).
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    N, n = values.shape
    prefers = values > returns[None, :]
    prefers = prefers[prefers.any(axis=1)]
    dropped = N - prefers.shape[0]
    if prefers.shape[0] == 0:
        return 0.0  # nobody prefers any sample: every T has B_T = {} and the best is T = N
    masks, counts = np.unique(prefers, axis=0, return_counts=True)
    scale = math.gcd(n, N)
    sample_cap, agent_cap = n // scale, N // scale
    infinite = agent_cap * n + 1  # more than the cut {all agents}
    if infinite >= 2**31 - 1:
        raise InvalidProblemError(f"the PVC min cut needs n N / gcd(n, N) < 2^31; got n = {n}, N = {N}")
    U = masks.shape[0]
    source, sink = 0, U + n + 1
    rows_h, cols_h = np.nonzero(~masks)  # edges of H: sample class u does not prefer agent i
    tails = np.concatenate([np.zeros(U, np.int64), 1 + rows_h, U + 1 + np.arange(n)])
    heads = np.concatenate([1 + np.arange(U), U + 1 + cols_h, np.full(n, sink)])
    caps = np.concatenate([sample_cap * counts, np.full(rows_h.size, infinite), np.full(n, agent_cap)])
    network = csr_array((caps.astype(np.int32), (tails, heads)), shape=(U + n + 2, U + n + 2))
    cut = int(maximum_flow(network, source, sink).flow_value)
    return float(1.0 - dropped / N - cut * scale / (n * N))


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
