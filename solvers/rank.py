"""Linear rank aggregation: ``n`` voters rank ``m`` candidates described by feature vectors; a
rule outputs one ranking that a single linear reward ``theta`` over the features realises.

A ranking ``sigma`` (candidates best first) is *feasible* when some ``theta`` orders the
candidates' scores ``theta @ v_c`` strictly as ``sigma`` does. The strict inequalities are
scale-free, so feasibility is one LP with a unit margin:

.. math:: \\exists\\,\\theta:\\ \\theta^\\top (v_{\\sigma_j} - v_{\\sigma_{j+1}}) \\ge 1
          \\quad (j = 1, \\dots, m - 1).

Rules (Ge, Halpern, Micha, Procaccia, Shapira, Vorobeychik, Wu 2024, "Axioms for AI alignment
from human feedback"):

* :func:`leximax_copeland` -- leximax Copeland subject to Pareto optimality: the feasible
  ranking that respects every unanimous pair and, position by position, places the candidate
  with the highest Copeland score it can. ``O(m^2)`` small LPs. Satisfies PO, pairwise
  majority consistency, majority consistency and winner monotonicity (their Theorem).
* :func:`bradley_terry` -- the ranking of the Bradley-Terry maximum-likelihood reward (the
  RLHF default); :func:`squared_hinge` -- the ranking of the reward minimising a strictly
  convex pairwise squared hinge loss. Both fail PO and PMC (their Theorem on loss-based rules).

Every rule returns a :class:`RankResult`: the ranking, a reward that realises it with margin 1
(an LP certificate, checkable by :func:`is_realized`), the candidates' scores under it.
:func:`rank_policy` gives the optimal policy of an MDP for that reward when the features are
occupancy measures; :func:`profile_from_problem` builds a profile from agents' returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import highspy
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidProblemError, SolverError, float_array
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.solvers.lp import quiet_highs

#: A pair ``(a, b)``: candidate ``a`` must be ranked above candidate ``b``.
Pair = tuple[int, int]


# --------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class RankProfile:
    """``n`` voters' rankings of ``m`` candidates with features.

    ``features`` (m, k): candidate ``c`` is described by ``features[c]`` (e.g. an occupancy
    measure, or discounted state-action counts of a trajectory); ``rankings`` (n, m): row ``i``
    lists the candidates from voter ``i``'s best to worst; ``weights`` (n,) positive.
    Build with :func:`rank_profile` (validated)."""

    features: NDArray[np.float64]
    rankings: NDArray[np.int64]
    weights: NDArray[np.float64]

    @property
    def n_candidates(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_voters(self) -> int:
        return int(self.rankings.shape[0])

    def positions(self) -> NDArray[np.int64]:
        """``positions[i, c]``: where voter ``i`` puts candidate ``c`` (0 = top)."""
        pos = np.empty_like(self.rankings)
        rows = np.arange(self.n_voters)[:, None]
        pos[rows, self.rankings] = np.arange(self.n_candidates)[None, :]
        return pos

    def majority(self) -> NDArray[np.float64]:
        """``W[a, b]``: the total weight of voters ranking ``a`` above ``b``."""
        pos = self.positions()
        above = pos[:, :, None] < pos[:, None, :]  # (n, m, m)
        return np.asarray(np.tensordot(self.weights, above.astype(float), axes=1), dtype=float)


def rank_profile(
    features: ArrayLike, rankings: ArrayLike, weights: ArrayLike | None = None, *, check_voters: bool = True
) -> RankProfile:
    """A validated :class:`RankProfile`.

    Candidates need distinct feature vectors (else no strict ranking separates them). With
    ``check_voters`` (default) every voter's ranking must itself be feasible (one LP per
    voter): the model's voters are linear, and only then can a ranking respect every unanimous
    pair (the voters' own rewards realise those pairs)."""
    V = float_array("features", features)
    if V.ndim != 2 or V.shape[0] < 2 or V.shape[1] < 1:
        raise InvalidProblemError(f"`features` must have shape (m, k) with m >= 2 candidates; got {V.shape}")
    if not np.all(np.isfinite(V)):
        raise InvalidProblemError("`features` must be finite")
    m = V.shape[0]
    duplicate = _first_duplicate(V)
    if duplicate is not None:
        raise InvalidProblemError(
            f"candidates {duplicate[0]} and {duplicate[1]} have the same features; no linear reward separates "
            "them: drop one or add a feature that tells them apart"
        )
    R = np.asarray(rankings)
    if R.ndim == 1:
        R = R[None]
    if R.ndim != 2 or R.shape[0] == 0 or R.shape[1] != m or not np.issubdtype(R.dtype, np.integer):
        raise InvalidProblemError(
            f"`rankings` must be an integer array (n, m) = (n, {m}), one ranking per row, best first; "
            f"got shape {np.shape(rankings)} of {R.dtype}"
        )
    for i, row in enumerate(R):
        if sorted(row.tolist()) != list(range(m)):
            raise InvalidProblemError(f"`rankings[{i}]` must be a permutation of 0..{m - 1}; got {row.tolist()}")
    n = R.shape[0]
    w = np.ones(n) if weights is None else float_array("weights", weights)
    if w.shape != (n,) or not np.all(np.isfinite(w) & (w > 0)):
        raise InvalidProblemError(f"`weights` must be {n} finite positive numbers, one per voter; got {w.tolist()}")
    profile = RankProfile(V, R.astype(np.int64), w)
    if check_voters:
        for i, row in enumerate(profile.rankings):
            if realizing_reward(V, chain(row)) is None:
                raise InvalidProblemError(
                    f"voter {i}'s ranking {row.tolist()} is not realised by any linear reward over the features; "
                    "linear rank aggregation assumes linear voters (pass check_voters=False to skip this check)"
                )
    return profile


def _first_duplicate(V: NDArray[np.float64]) -> tuple[int, int] | None:
    for a, b in itertools.combinations(range(V.shape[0]), 2):
        if np.array_equal(V[a], V[b]):
            return a, b
    return None


def chain(ranking: Sequence[int] | NDArray[np.int64]) -> list[Pair]:
    """The consecutive pairs of a ranking: ``[(r0, r1), (r1, r2), ...]``."""
    r = [int(c) for c in ranking]
    return list(zip(r[:-1], r[1:], strict=True))


# --------------------------------------------------------------------------- feasibility
def realizing_reward(features: NDArray[np.float64], pairs: Sequence[Pair]) -> NDArray[np.float64] | None:
    """A reward ``theta`` with ``theta @ (v_a - v_b) >= 1`` for every pair ``(a, b)`` and the
    least ``||theta||_1`` among those, or ``None`` if none exists (one LP in ``theta = p - q``).

    .. math:: \\min \\mathbf 1^\\top (p + q) \\ \\text{s.t.}\\ (V_a - V_b)^\\top (p - q) \\ge 1,\\ p, q \\ge 0
    """
    V = np.asarray(features, dtype=float)
    k = V.shape[1]
    if not pairs:
        return np.zeros(k)
    a = np.fromiter((p[0] for p in pairs), dtype=np.int64)
    b = np.fromiter((p[1] for p in pairs), dtype=np.int64)
    D = V[a] - V[b]
    x = _solve_lp(np.ones(2 * k), np.hstack([D, -D]), np.ones(len(pairs)))
    return None if x is None else np.asarray(x[:k] - x[k:], dtype=float)


def _solve_lp(cost: NDArray[np.float64], G: NDArray[np.float64], h: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """``argmin cost @ x`` s.t. ``G x >= h``, ``x >= 0`` with HiGHS (one small dense LP, no
    presolve overhead worth having); ``None`` if infeasible."""
    highs = quiet_highs()
    highs.setOptionValue("presolve", "off")
    lp = highspy.HighsLp()
    n_rows, n_cols = G.shape
    lp.num_col_, lp.num_row_ = n_cols, n_rows
    lp.col_cost_ = np.asarray(cost, dtype=float)
    lp.col_lower_ = np.zeros(n_cols)
    lp.col_upper_ = np.full(n_cols, highspy.kHighsInf)
    lp.row_lower_ = np.asarray(h, dtype=float)
    lp.row_upper_ = np.full(n_rows, highspy.kHighsInf)
    A = sp.csc_array(G)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n_cols, n_rows
    highs.passModel(lp)
    highs.run()
    status = highs.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return None
    if status != highspy.HighsModelStatus.kOptimal:
        raise SolverError(f"ranking feasibility LP failed: {highs.modelStatusToString(status)}", status="error")
    return np.asarray(highs.getSolution().col_value, dtype=float)


def is_realized(features: ArrayLike, ranking: Sequence[int], reward: ArrayLike, *, margin: float = 0.0) -> bool:
    """Whether ``reward`` orders the candidates' scores strictly as ``ranking`` does (each score
    above the next by more than ``margin``)."""
    scores = np.asarray(features, dtype=float) @ np.asarray(reward, dtype=float)
    ordered = scores[np.asarray(ranking, dtype=np.int64)]
    return bool(np.all(ordered[:-1] - ordered[1:] > margin))


def is_feasible(features: ArrayLike, ranking: Sequence[int]) -> bool:
    """Whether some linear reward over ``features`` realises ``ranking`` (one LP)."""
    return realizing_reward(np.asarray(features, dtype=float), chain(ranking)) is not None


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class RankResult:
    """A rule's ranking (candidates best first), a ``reward`` realising it with margin 1 (the LP
    certificate), the candidates' ``scores = features @ reward`` and diagnostics."""

    rule: str
    ranking: NDArray[np.int64]
    reward: NDArray[np.float64]
    scores: NDArray[np.float64]
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def top(self) -> int:
        return int(self.ranking[0])


def _extend(
    features: NDArray[np.float64], pairs: Sequence[Pair], priority: Sequence[int]
) -> tuple[NDArray[np.int64], NDArray[np.float64], int]:
    """The feasible ranking that respects ``pairs`` and places, position by position, the first
    candidate in ``priority`` order that still admits a feasible completion; with its margin-1
    reward and the number of LPs solved. At most ``m (m + 1) / 2`` LPs."""
    m = features.shape[0]
    fixed: list[Pair] = list(pairs)
    prefix: list[int] = []
    remaining = list(priority)
    n_lps = 0
    theta = realizing_reward(features, fixed)
    n_lps += 1
    if theta is None:
        raise InvalidProblemError(
            "no linear reward respects the required pairs (e.g. the unanimous ones); check that every voter's "
            "ranking is feasible (rank_profile(..., check_voters=True))"
        )
    for _ in range(m - 1):
        for c in remaining:
            trial = fixed + [(c, r) for r in remaining if r != c]
            found = realizing_reward(features, trial)
            n_lps += 1
            if found is not None:
                fixed, theta = trial, found
                prefix.append(c)
                remaining.remove(c)
                break
        else:  # cannot happen: the previous step's reward orders the remaining candidates
            raise SolverError("no candidate can be placed next; the feasibility LPs disagree with each other")
    prefix.extend(remaining)
    return np.asarray(prefix, dtype=np.int64), theta, n_lps


def copeland_scores(profile: RankProfile) -> NDArray[np.float64]:
    """Copeland scores: pairwise majority wins plus 1/2 per tie, ``c_a = sum_b [W_ab > W_ba] + [W_ab = W_ba] / 2``."""
    W = profile.majority()
    wins = W > W.T + 1e-12
    ties = np.isclose(W, W.T, rtol=1e-12, atol=1e-12) & ~np.eye(profile.n_candidates, dtype=bool)
    return np.asarray(wins.sum(axis=1) + 0.5 * ties.sum(axis=1), dtype=float)


def unanimous_pairs(profile: RankProfile) -> list[Pair]:
    """Pairs ``(a, b)`` every voter ranks ``a`` above ``b`` (what Pareto optimality keeps)."""
    W = profile.majority()
    return [(int(a), int(b)) for a, b in zip(*np.nonzero((W > 0) & (W.T == 0)), strict=True)]


def leximax_copeland(profile: RankProfile) -> RankResult:
    """Leximax Copeland subject to Pareto optimality.

    Among feasible rankings that keep every unanimous pair, the one whose sequence of Copeland
    scores (top first) is lexicographically largest; ties between equal scores go to the lower
    candidate index. Built greedily: each position takes the best-scored candidate that leaves
    a feasible completion (one LP per trial, ``O(m^2)`` in all).
    """
    scores = copeland_scores(profile)
    priority = sorted(range(profile.n_candidates), key=lambda c: (-scores[c], c))
    ranking, theta, n_lps = _extend(profile.features, unanimous_pairs(profile), priority)
    return _result("leximax_copeland", profile, ranking, theta, copeland=scores.tolist(), n_lps=n_lps)


def _voter_pairs(profile: RankProfile) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Every voter's ``m (m - 1) / 2`` pairs as feature differences ``v_a - v_b`` (a above b) with the voter's weight."""
    m = profile.n_candidates
    i_idx, j_idx = np.triu_indices(m, 1)
    D = profile.features[profile.rankings[:, i_idx]] - profile.features[profile.rankings[:, j_idx]]  # (n, P, k)
    w = np.repeat(profile.weights, i_idx.size)
    return D.reshape(-1, profile.features.shape[1]), w


def _scale(profile: RankProfile) -> float:
    return float(np.max(np.abs(profile.features))) or 1.0


def bradley_terry(profile: RankProfile, *, l2: float = 1e-3) -> RankResult:
    """The ranking by the Bradley-Terry maximum-likelihood reward (with a small ridge ``l2``,
    relative to the feature scale, so separable data still has a maximiser).

    .. math:: \\min_\\theta \\sum_i w_i \\sum_{a \\succ_i b} \\log(1 + e^{-\\theta^\\top (v_a - v_b)})
              + \\tfrac{\\lambda}{2} \\|\\theta\\|^2
    """
    D, w = _voter_pairs(profile)
    lam = float(l2) * _scale(profile) ** 2 * float(profile.weights.sum())

    theta, iterations, converged = _newton_logistic(D, w, lam)
    return _from_fit("bradley_terry", profile, theta, converged=converged, newton_iterations=iterations)


def _newton_logistic(
    D: NDArray[np.float64], w: NDArray[np.float64], lam: float, *, tol: float = 1e-10, max_iter: int = 100
) -> tuple[NDArray[np.float64], int, bool]:
    """Damped Newton on ``f(theta) = w @ log(1 + exp(-D theta)) + lam/2 ||theta||^2`` (strictly
    convex); stops when the Newton decrement squared is at most ``tol`` times ``f(0)``."""

    def f(theta: NDArray[np.float64]) -> float:
        return float(w @ np.logaddexp(0.0, -(D @ theta)) + 0.5 * lam * theta @ theta)

    theta = np.zeros(D.shape[1])
    f0 = f(theta)
    for iteration in range(1, max_iter + 1):
        z = D @ theta
        p = _sigmoid(-z)  # the probability of the wrong order
        grad = -(D.T @ (w * p)) + lam * theta
        H = (D.T * (w * p * (1 - p))) @ D + lam * np.eye(D.shape[1])
        step = np.linalg.solve(H, -grad)
        decrement = float(-grad @ step)
        if decrement <= tol * max(f0, 1.0):
            return theta, iteration, True
        t, value = 1.0, f(theta)
        while f(theta + t * step) > value - 0.25 * t * decrement and t > 1e-12:
            t *= 0.5
        theta = theta + t * step
    return theta, max_iter, False


def squared_hinge(profile: RankProfile, *, l2: float = 1e-3) -> RankResult:
    """The ranking by the reward minimising the pairwise squared hinge loss with a ridge ``l2``
    (relative to the feature scale): a strictly convex loss, so the reward is unique.

    .. math:: \\min_\\theta \\sum_i w_i \\sum_{a \\succ_i b} \\max(0, 1 - \\theta^\\top (v_a - v_b))^2
              + \\tfrac{\\lambda}{2} \\|\\theta\\|^2
    """
    D, w = _voter_pairs(profile)
    lam = float(l2) * _scale(profile) ** 2 * float(profile.weights.sum())
    theta, iterations, converged = _newton_squared_hinge(D, w, lam)
    return _from_fit("squared_hinge", profile, theta, converged=converged, newton_iterations=iterations)


def _newton_squared_hinge(
    D: NDArray[np.float64], w: NDArray[np.float64], lam: float, *, tol: float = 1e-12, max_iter: int = 200
) -> tuple[NDArray[np.float64], int, bool]:
    """Generalised Newton with backtracking on ``w @ max(0, 1 - D theta)^2 + lam/2 ||theta||^2``
    (piecewise quadratic and strictly convex; the active set settles after a few steps)."""

    def f(theta: NDArray[np.float64]) -> float:
        return float(w @ np.maximum(0.0, 1.0 - D @ theta) ** 2 + 0.5 * lam * theta @ theta)

    theta = np.zeros(D.shape[1])
    f0 = f(theta)
    for iteration in range(1, max_iter + 1):
        slack = np.maximum(0.0, 1.0 - D @ theta)
        active = slack > 0
        grad = -2.0 * D.T @ (w * slack) + lam * theta
        H = 2.0 * (D[active].T * w[active]) @ D[active] + lam * np.eye(D.shape[1])
        step = np.linalg.solve(H, -grad)
        decrement = float(-grad @ step)
        if decrement <= tol * max(f0, 1.0):
            return theta, iteration, True
        t, value = 1.0, f(theta)
        while f(theta + t * step) > value - 0.25 * t * decrement and t > 1e-12:
            t *= 0.5
        theta = theta + t * step
    return theta, max_iter, False


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(np.exp(-np.logaddexp(0.0, -z)), dtype=float)


def _from_fit(rule: str, profile: RankProfile, fitted: NDArray[np.float64], **diagnostics: Any) -> RankResult:
    """The ranking of a fitted reward's scores; candidates tied (within 1e-9 of the score scale)
    are ordered by index among the feasible completions that keep every strict order of the fit."""
    s = profile.features @ fitted
    tol = 1e-9 * max(float(np.max(np.abs(s))), 1.0)
    m = profile.n_candidates
    priority = sorted(range(m), key=lambda c: (-s[c], c))
    if np.all(-np.diff(s[priority]) > tol):  # no ties: the fit's own order, certified below
        ranking, theta, n_lps = np.asarray(priority, dtype=np.int64), fitted, 0
    else:
        strict = [(a, b) for a in range(m) for b in range(m) if s[a] > s[b] + tol]
        ranking, theta, n_lps = _extend(profile.features, strict, priority)
    return _result(rule, profile, ranking, theta, fitted_reward=fitted.tolist(), n_lps=n_lps, **diagnostics)


def _result(
    rule: str, profile: RankProfile, ranking: NDArray[np.int64], theta: NDArray[np.float64], **diagnostics: Any
) -> RankResult:
    certificate = realizing_reward(profile.features, chain(ranking))
    if certificate is None:  # the greedy's last LP proved it; a disagreement is a solver fault
        raise SolverError(f"{rule}: the output ranking {ranking.tolist()} failed its own feasibility LP")
    return RankResult(rule, ranking, certificate, profile.features @ certificate, diagnostics)


#: The rank rules by name (they take a :class:`RankProfile`).
RANK_RULES: dict[str, Callable[[RankProfile], RankResult]] = {
    "leximax_copeland": leximax_copeland,
    "bradley_terry": bradley_terry,
    "squared_hinge": squared_hinge,
}


def get_rank_rule(name: str) -> Callable[[RankProfile], RankResult]:
    """The rank rule ``name``; an unknown name lists the valid ones."""
    try:
        return RANK_RULES[name]
    except (KeyError, TypeError):
        raise InvalidProblemError(f"unknown rank rule {name!r}; choose one of: {', '.join(RANK_RULES)}") from None


# --------------------------------------------------------------------------- MDP links
def profile_from_problem(problem: Problem, occupancies: ArrayLike) -> RankProfile:
    """The profile in which each agent of ``problem`` ranks candidate policies (their
    occupancies, shape (m, S, A) or (m, S*A)) by its return ``J_i``, ties to the lower index;
    the features are the occupancies, so a rank rule's reward is a reward ``r(s, a)``."""
    D = float_array("occupancies", occupancies).reshape(np.shape(occupancies)[0], -1)
    if D.shape[1] != problem.mdp.n_state_actions:
        raise InvalidProblemError(
            f"`occupancies` must hold S*A = {problem.mdp.n_state_actions} entries per candidate; got {D.shape[1]}"
        )
    J = D @ problem.reward_matrix.T  # (m, n)
    rankings = np.stack([np.lexsort((np.arange(D.shape[0]), -J[:, i])) for i in range(problem.n_agents)])
    return rank_profile(D, rankings, problem.weights, check_voters=False)


def rank_policy(result: RankResult, problem_or_mdp: Problem | Any) -> Result:
    """The optimal policy of the MDP for the rank rule's realising reward (the features must be
    occupancy measures, ``k = S*A``): the ``utilitarian`` rule on that single reward."""
    from policyagg.solvers.welfare import utilitarian

    mdp = problem_or_mdp.mdp if isinstance(problem_or_mdp, Problem) else problem_or_mdp
    S, A = mdp.n_states, mdp.n_actions
    if result.reward.size != S * A:
        raise InvalidProblemError(
            f"the reward has {result.reward.size} features but the MDP has S*A = {S * A} state-actions; "
            "rank_policy needs occupancy features"
        )
    return cast(Result, utilitarian(Problem(mdp, result.reward.reshape(1, S, A), names=[result.rule])))
