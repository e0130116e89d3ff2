"""Rules over a policy-optimisation oracle (issue 16): utilitarian, egalitarian, max-quantile.

A rule here sees the environment only through an :class:`~policyagg.oracle.Oracle`
(``best_response(w)``, ``evaluate(pi)``) and returns a :class:`~policyagg.lottery.Lottery` over
the policies it found. Egalitarian and max-quantile share one engine, column generation:

.. math:: \\max_{\\lambda \\in \\Delta_K,\\, t} t \\quad\\text{s.t.}\\quad
          \\sum_k \\lambda_k M_{ik} \\ge t,\\quad \\sum_k \\lambda_k F_{ik} \\ge 0

over the lottery weights ``lambda`` of the ``K`` policies found so far (``M_ik``: agent ``i``'s
margin under policy ``k``, ``F_ik``: optional floors). This *master LP* is exact and cheap; its
duals ``y`` (on the simplex) and ``z >= 0`` price a new policy: ``best_response((y + z) / width)``.
Weak duality gives the certificate: for every lottery, ``min_i M_i <= y @ M(BR) + z @ F(BR)``,
so the best such value seen bounds the optimum from above, and the master's value bounds it
from below (Park et al., ICML 2024, do max-min MORL with a related dual method).

Inexact oracles: evaluations carry standard errors, and best responses may fall short of the
optimum by the oracle's stated ``tolerance`` (per unit ``||w||_1``; ``None`` when unknown).
The lower bound subtracts ``z_c`` standard errors of the lottery's margins and the upper
bound adds them and the tolerance, with ``z_c`` the one-sided normal quantile of
``confidence``. Without a stated tolerance the upper bound assumes exact best responses and
the result's status is ``"gap"`` (never ``"optimal"``): nothing is reported as proven that was not.

These rules take an oracle, not a :class:`~policyagg.problem.Problem`, so they are not in the
rule registry (whose rules are ``rule(problem, samples, **options) -> Result``); they are
named in :data:`ORACLE_RULES`, which the config reader and the CLI use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linprog
from scipy.stats import norm

from policyagg.errors import InvalidProblemError, SolverError, check_count, check_real
from policyagg.lottery import Lottery, build_lottery, estimated_lottery
from policyagg.oracle import Oracle, OraclePolicy
from policyagg.problem import Problem, ReturnRanges
from policyagg.samples import ReturnSamples

#: Column generation stops when the certified gap (in normalised units) is at most this.
GAP_TOL = 1e-6
#: At most this many best responses per column-generation run.
MAX_CALLS = 200
#: A threshold level counts as reached when the lottery's least margin is at least ``-FEASIBILITY_TOL``
#: (the LP rule :func:`policyagg.solvers.max_quantile` uses the same tolerance).
FEASIBILITY_TOL = 1e-9
#: Column generation stops after this many calls that raised neither bound by more than ``gap_tol``.
PATIENCE = 20
#: Default confidence of the bounds built from standard errors (one-sided).
CONFIDENCE = 0.95
#: Two evaluated policies whose returns differ by at most this (max-norm) count as one column.
SAME_RETURNS = 1e-12


# ---------------------------------------------------------------------- the policy pool
@dataclass
class PolicyPool:
    """The policies an oracle returned, each evaluated once: ``returns`` and ``errors`` (K, n)."""

    oracle: Oracle
    policies: list[OraclePolicy] = field(default_factory=list)
    rows: list[NDArray[np.float64]] = field(default_factory=list)
    error_rows: list[NDArray[np.float64]] = field(default_factory=list)
    evaluation_episodes: int = 0
    observer: Callable[[OraclePolicy, NDArray[np.float64], NDArray[np.float64]], None] | None = None

    @property
    def returns(self) -> NDArray[np.float64]:
        return np.asarray(self.rows, dtype=float).reshape(len(self.rows), len(self.oracle.names))

    @property
    def errors(self) -> NDArray[np.float64]:
        return np.asarray(self.error_rows, dtype=float).reshape(len(self.rows), len(self.oracle.names))

    def add(self, policy: OraclePolicy) -> int:
        """Evaluate ``policy`` and keep it (unless a kept policy has the same returns, exactly
        evaluated); return its row."""
        evaluation = self.oracle.evaluate(policy)
        self.evaluation_episodes += int(evaluation.episodes)
        J = np.asarray(evaluation.returns, dtype=float)
        se = np.asarray(evaluation.standard_errors, dtype=float)
        if J.shape != (len(self.oracle.names),) or not np.all(np.isfinite(J)):
            raise SolverError(f"the oracle evaluated policy {policy.key!r} to non-finite or mis-shaped returns {J}")
        for k, (row, err) in enumerate(zip(self.rows, self.error_rows, strict=True)):
            if not se.any() and not err.any() and np.max(np.abs(row - J)) <= SAME_RETURNS:
                return k
        self.policies.append(policy)
        self.rows.append(J)
        self.error_rows.append(se)
        if self.observer is not None:
            self.observer(policy, J, se)
        return len(self.rows) - 1

    def respond(self, weights: ArrayLike) -> int:
        """One oracle call: the best response to ``weights``, evaluated and kept."""
        return self.add(self.oracle.best_response(weights))


def counters(oracle: Oracle) -> tuple[int, int, int]:
    """The oracle's calls, episodes and (if it counts them) sampled transitions so far."""
    return int(oracle.calls), int(oracle.episodes), int(getattr(oracle, "transitions", 0))


def oracle_tolerance(oracle: Oracle) -> float | None:
    """The oracle's stated best-response accuracy (``None``: unknown)."""
    value = getattr(oracle, "tolerance", None)
    return None if value is None else float(value)


def confidence_quantile(confidence: float) -> float:
    """``z_c``: the one-sided standard-normal quantile of ``confidence`` in (0.5, 1)."""
    check_real("confidence", confidence)
    if not 0.5 < confidence < 1.0:
        raise InvalidProblemError(f"`confidence` must be in (0.5, 1); got {confidence}")
    return float(norm.ppf(confidence))


# ---------------------------------------------------------------------- return ranges
def oracle_ranges(pool: PolicyPool) -> tuple[ReturnRanges, list[int], list[int]]:
    """Each agent's range ``[min_k J_ik, max_k J_ik]`` over the pool after the ``2n`` oracle calls
    ``BR(-e_i)``, ``BR(e_i)`` (exact oracle: ``[J_i(BR(-e_i)), J_i(BR(e_i))]``); also the
    pool rows of the best and worst policies. ``best``/``worst`` hold occupancies for a tabular
    oracle with ``occupancy`` (else they are empty, shape (n, 0))."""
    n = len(pool.oracle.names)
    best_rows, worst_rows = [], []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        best_rows.append(pool.respond(e))
        worst_rows.append(pool.respond(-e))
    J = pool.returns
    # the extremes over every policy evaluated (for an exact oracle: J_i(BR(-e_i)) and J_i(BR(e_i)));
    # with noisy evaluations no evaluated policy then falls outside [lower, upper]
    lower, upper = J.min(axis=0), J.max(axis=0)
    occupancy = getattr(pool.oracle, "occupancy", None)
    if callable(occupancy):
        best = np.stack([np.asarray(occupancy(pool.policies[k])).ravel() for k in best_rows])
        worst = np.stack([np.asarray(occupancy(pool.policies[k])).ravel() for k in worst_rows])
    else:
        best = worst = np.zeros((n, 0))
    return ReturnRanges(lower=lower, upper=upper, best=best, worst=worst), best_rows, worst_rows


def widths(ranges: ReturnRanges) -> NDArray[np.float64]:
    """``max J_i - min J_i`` (1 for indifferent agents), the unit of every margin."""
    return np.where(ranges.flat, 1.0, ranges.width)


def egalitarian_offset(ranges: ReturnRanges) -> NDArray[np.float64]:
    """Offsets whose margins ``(J_i - offset_i) / width_i`` are the normalised returns, with
    indifferent agents at 1 (as :meth:`ReturnRanges.normalize`)."""
    return np.where(ranges.flat, ranges.lower - 1.0, ranges.lower)


def reference_samples(
    ranges_returns: ArrayLike,
    n_samples: int,
    *,
    rng: np.random.Generator | int | None = None,
    concentration: float = 1.0,
) -> ReturnSamples:
    """The optimal-mixture reference measure from the agents' optimal policies' returns
    ``J(pi*_j)`` (rows of ``ranges_returns``, (n, n)): ``J = w @ J(pi*)``, ``w ~ Dirichlet``
    (as :func:`policyagg.measures.sample_mixture_returns`, but from oracle calls only)."""
    corners = np.asarray(ranges_returns, dtype=float)
    rng = np.random.default_rng(rng)
    weights = rng.dirichlet(np.full(corners.shape[0], float(concentration)), size=int(n_samples))
    info = {"n_samples": int(n_samples), "concentration": float(concentration), "optima": corners.shape[0]}
    return ReturnSamples(weights @ corners, measure="optimal-mixture", info=info)


# ---------------------------------------------------------------------- column generation
@dataclass
class MaxMin:
    """The outcome of one column-generation run: lottery weights over the pool rows, the
    certified lower and upper bounds on the optimal least margin, and the calls it made."""

    probabilities: NDArray[np.float64]  # (K,) over the pool rows at the end
    lower: float  # the lottery's least margin, minus z_c standard errors
    upper: float  # the least upper bound on the optimum seen (+inf before any pricing)
    value: float  # the master LP's value on the estimated returns
    calls: int
    converged: bool

    @property
    def gap(self) -> float:
        return max(0.0, self.upper - self.lower)


def _master(
    M: NDArray[np.float64], F: NDArray[np.float64] | None
) -> tuple[NDArray[np.float64], float, NDArray[np.float64], NDArray[np.float64]]:
    """``max t`` s.t. ``M^T lambda >= t``, ``F^T lambda >= -FEASIBILITY_TOL``, ``lambda`` in the
    simplex; ``M``, ``F`` are (K, n). Returns ``lambda``, ``t`` and the duals ``y``, ``z``."""
    K, n = M.shape
    A_ub = [np.hstack([-M.T, np.ones((n, 1))])]
    b_ub = [np.zeros(n)]
    if F is not None:
        A_ub.append(np.hstack([-F.T, np.zeros((n, 1))]))
        b_ub.append(np.full(n, FEASIBILITY_TOL))
    A_eq = np.hstack([np.ones((1, K)), np.zeros((1, 1))])
    c = np.zeros(K + 1)
    c[-1] = -1.0
    res = linprog(
        c,
        A_ub=np.vstack(A_ub),
        b_ub=np.concatenate(b_ub),
        A_eq=A_eq,
        b_eq=[1.0],
        bounds=[(0, None)] * K + [(None, None)],
        method="highs",
    )
    if res.status != 0:
        raise SolverError(f"the master LP over {K} policies failed: {res.message}")
    duals = -np.asarray(res.ineqlin.marginals, dtype=float)
    lam = np.clip(res.x[:K], 0.0, None)
    y = np.clip(duals[:n], 0.0, None)
    z = np.clip(duals[n:], 0.0, None) if F is not None else np.zeros(0)
    return lam / lam.sum(), float(-res.fun), y, z


def max_min(
    pool: PolicyPool,
    offset: NDArray[np.float64],
    width: NDArray[np.float64],
    *,
    floors: NDArray[np.float64] | None = None,
    z_c: float = 0.0,
    tolerance: float | None = 0.0,
    gap_tol: float = GAP_TOL,
    max_calls: int = MAX_CALLS,
    stop: Callable[[MaxMin], bool] | None = None,
    deadline: float | None = None,
    patience: int = PATIENCE,
) -> MaxMin:
    """Column generation for ``max_L min_i (J_i(L) - offset_i) / width_i`` over lotteries ``L``
    of the oracle's policies, optionally with floors ``J_i(L) >= floors_i``. Stops when the
    certified gap is at most ``gap_tol``, when ``stop(outcome)`` says so, after ``max_calls``
    oracle calls, after ``patience`` calls that raised neither bound by more than ``gap_tol``
    (a noisy oracle's bounds stall), or at ``deadline`` (``time.monotonic()``)."""
    tol = 0.0 if tolerance is None else tolerance
    upper, calls = math.inf, 0
    best_lower, best_upper, stalled = -math.inf, math.inf, 0
    while True:
        J, se = pool.returns, pool.errors
        M = (J - offset) / width
        F = None if floors is None else (J - floors) / width
        lam, value, y, z = _master(M, F)
        spread = np.sqrt((lam[:, None] ** 2 * (se / width) ** 2).sum(axis=0))
        lower = float(np.min(lam @ M - z_c * spread))
        outcome = MaxMin(lam, lower, upper, value, calls, converged=upper - lower <= gap_tol)
        improved = lower > best_lower + gap_tol or upper < best_upper - gap_tol
        stalled = 0 if improved else stalled + 1
        best_lower, best_upper = max(best_lower, lower), min(best_upper, upper)
        if outcome.converged or (stop is not None and stop(outcome)) or calls >= max_calls or stalled > patience:
            return outcome
        if deadline is not None and time.monotonic() >= deadline:
            return outcome
        dual = y + (z if F is not None else 0.0)
        weights = dual / width
        row = pool.respond(weights)
        calls += 1
        J_new, se_new = pool.returns[row], pool.errors[row]
        priced = float(y @ ((J_new - offset) / width))
        noise = float(np.sqrt(((y * se_new / width) ** 2).sum()))
        if F is not None:
            priced += float(z @ ((J_new - floors) / width))
            noise = float(np.sqrt((((y + z) * se_new / width) ** 2).sum()))
        upper = min(upper, priced + z_c * noise + tol * float(np.abs(weights).sum()))


# ---------------------------------------------------------------------- building the lottery
def _lottery(
    pool: PolicyPool,
    probabilities: NDArray[np.float64],
    ranges: ReturnRanges,
    *,
    rule: str,
    samples: ReturnSamples | None,
    options: dict[str, Any],
    report: dict[str, Any],
    status: str,
    started: float,
    before: tuple[int, int, int],
) -> Lottery:
    """The lottery over the pool rows with positive probability: tabular when the oracle
    knows occupancies (``build_lottery``), else from estimated returns (``estimated_lottery``)."""
    oracle = pool.oracle
    keep = np.flatnonzero(probabilities > 1e-12)
    p = probabilities[keep] / probabilities[keep].sum()
    chosen = [pool.policies[k] for k in keep]
    diagnostics: dict[str, Any] = {
        "oracle": type(oracle).__name__,
        "oracle_calls": int(oracle.calls - before[0]),
        "evaluation_episodes": int(oracle.episodes - before[1]),
        "transitions": counters(oracle)[2] - before[2],
        "pool_size": len(pool.policies),
        "support_keys": [policy.key for policy in chosen],
        "support_paths": [policy.path for policy in chosen],
        "seconds": time.monotonic() - started,
    }
    problem = getattr(oracle, "problem", None)
    occupancy = getattr(oracle, "occupancy", None)
    if isinstance(problem, Problem) and callable(occupancy) and not pool.errors[keep].any():
        tabular = problem.with_ranges(ranges) if ranges.best.shape[1] == problem.mdp.n_state_actions else None
        if tabular is not None:
            d = np.stack([np.asarray(occupancy(policy)).ravel() for policy in chosen])
            tables = [policy.table for policy in chosen if policy.table is not None]
            return build_lottery(
                tabular,
                d,
                p,
                rule=rule,
                samples=samples,
                policies=np.stack(tables) if len(tables) == len(chosen) else None,
                options=options,
                diagnostics=diagnostics,
                report=report,
                status=status,
            )
    return estimated_lottery(
        pool.returns[keep],
        p,
        ranges,
        rule=rule,
        names=oracle.names,
        standard_errors=pool.errors[keep],
        samples=samples,
        options=options,
        diagnostics=diagnostics,
        report=report,
        status=status,
    )


def _status(outcome: MaxMin, tolerance: float | None, gap_tol: float) -> str:
    if tolerance is None or outcome.gap > gap_tol:
        return "gap"
    return "optimal"


def _certificate(outcome: MaxMin, tolerance: float | None, confidence: float, z_c: float) -> dict[str, Any]:
    return {
        "certified_gap": outcome.gap if math.isfinite(outcome.upper) else None,
        "lower_bound": outcome.lower,
        "upper_bound": outcome.upper if math.isfinite(outcome.upper) else None,
        "confidence": confidence if z_c > 0 else None,
        "best_response_tolerance": tolerance,
        "certified": tolerance is not None and math.isfinite(outcome.upper),
    }


def _check_common(max_calls: int, gap_tol: float, time_limit: float | None) -> None:
    check_count("max_calls", max_calls)
    if not check_real("gap_tol", gap_tol) >= 0:
        raise InvalidProblemError(f"`gap_tol` must be >= 0; got {gap_tol}")
    if time_limit is not None and not check_real("time_limit", time_limit) > 0:
        raise InvalidProblemError(f"`time_limit` must be a positive number of seconds; got {time_limit}")


# ---------------------------------------------------------------------- the rules
def oracle_utilitarian(
    oracle: Oracle,
    *,
    weights: ArrayLike | None = None,
    normalize: bool = False,
    confidence: float = CONFIDENCE,
    pool: PolicyPool | None = None,
) -> Lottery:
    """``max_pi sum_i w_i u_i(pi)``: one best response (``u`` raw returns, or normalised by the
    ranges from ``2n`` more calls when ``normalize``). The certificate is the oracle's stated
    tolerance ``* ||w||_1`` (in the units of ``u``) plus the evaluation noise."""
    started, before = time.monotonic(), counters(oracle)
    pool = pool or PolicyPool(oracle)
    n = len(oracle.names)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise InvalidProblemError(f"`weights` must be {n} finite positive numbers; got {weights!r}")
    z_c = confidence_quantile(confidence)
    ranges, _, _ = oracle_ranges(pool)
    width = widths(ranges)
    scaled = w / width if normalize else w
    row = pool.respond(scaled)
    tolerance = oracle_tolerance(oracle)
    noise = float(np.sqrt(((scaled * pool.errors[row]) ** 2).sum()))
    gap = None if tolerance is None else tolerance * float(np.abs(scaled).sum()) + 2 * z_c * noise
    report = {
        "certified_gap": gap,
        "welfare": float(scaled @ pool.returns[row]),
        "best_response_tolerance": tolerance,
        "certified": tolerance is not None,
    }
    probabilities = np.zeros(len(pool.policies))
    probabilities[row] = 1.0
    return _lottery(
        pool,
        probabilities,
        ranges,
        rule="oracle_utilitarian",
        samples=None,
        options={"weights": w.tolist(), "normalize": normalize, "confidence": confidence},
        report=report,
        status="optimal" if tolerance is not None else "gap",
        started=started,
        before=before,
    )


def oracle_egalitarian(
    oracle: Oracle,
    *,
    gap_tol: float = GAP_TOL,
    max_calls: int = MAX_CALLS,
    confidence: float = CONFIDENCE,
    time_limit: float | None = None,
    pool: PolicyPool | None = None,
) -> Lottery:
    """Max-min of normalised returns over lotteries, by column generation with the oracle as
    pricing:

    .. math:: \\max_L \\min_i (J_i(L) - \\min J_i) / (\\max J_i - \\min J_i)

    with each agent's range from ``best_response(+-e_i)``. Status ``"optimal"`` when the
    certified gap is at most ``gap_tol`` (and the oracle states its accuracy), else ``"gap"``
    (or ``"time-limit"``)."""
    _check_common(max_calls, gap_tol, time_limit)
    started, before = time.monotonic(), counters(oracle)
    pool = pool or PolicyPool(oracle)
    z_c = confidence_quantile(confidence)
    tolerance = oracle_tolerance(oracle)
    ranges, _, _ = oracle_ranges(pool)
    width = widths(ranges)
    deadline = None if time_limit is None else started + time_limit
    outcome = max_min(
        pool,
        egalitarian_offset(ranges),
        width,
        z_c=z_c,
        tolerance=tolerance,
        gap_tol=gap_tol,
        max_calls=max_calls,
        deadline=deadline,
    )
    status = _status(outcome, tolerance, gap_tol)
    if status == "gap" and deadline is not None and time.monotonic() >= deadline:
        status = "time-limit"
    report = _certificate(outcome, tolerance, confidence, z_c) | {"min_normalized": outcome.value}
    return _lottery(
        pool,
        outcome.probabilities,
        ranges,
        rule="oracle_egalitarian",
        samples=None,
        options={"gap_tol": gap_tol, "max_calls": max_calls, "confidence": confidence, "time_limit": time_limit},
        report=report,
        status=status,
        started=started,
        before=before,
    )


def oracle_max_quantile(
    oracle: Oracle,
    samples: ReturnSamples | None = None,
    *,
    n_samples: int = 1000,
    concentration: float = 1.0,
    seed: int = 0,
    gap_tol: float = GAP_TOL,
    max_calls: int = MAX_CALLS,
    confidence: float = CONFIDENCE,
    time_limit: float | None = None,
    pool: PolicyPool | None = None,
) -> Lottery:
    """Max-quantile over lotteries: the largest ``q = k/N`` such that some lottery gives every
    agent ``J_i >= t_i(q)`` (the ``k``-th smallest sampled return; ``t_i(0) = min J_i``), then
    the egalitarian lottery among those (max-min normalised return above the thresholds).

    ``samples`` is the reference measure (e.g. :func:`policyagg.measures.sample_returns` for
    the paper's random policies); without it, ``n_samples`` draws of the optimal-mixture measure
    built from the agents' optimal policies (:func:`reference_samples`, seeded by ``seed``).
    Level ``k`` is decided by column generation on the margin ``min_i (J_i - t_i) / width_i``:
    reached when the lottery's margin is ``>= -FEASIBILITY_TOL`` (minus ``z_c`` standard errors),
    unreachable when the certified upper bound is below that; a level left undecided (by the
    call budget) counts as unreachable, so the ``q*`` reported is always achieved."""
    _check_common(max_calls, gap_tol, time_limit)
    started, before = time.monotonic(), counters(oracle)
    pool = pool or PolicyPool(oracle)
    n = len(oracle.names)
    z_c = confidence_quantile(confidence)
    tolerance = oracle_tolerance(oracle)
    ranges, best_rows, _ = oracle_ranges(pool)
    width = widths(ranges)
    if samples is None:
        samples = reference_samples(pool.returns[best_rows], n_samples, rng=seed, concentration=concentration)
    samples.check_agents(n)
    N = samples.n_samples
    deadline = None if time_limit is None else started + time_limit

    def thresholds(k: int) -> NDArray[np.float64]:
        return samples.sorted_values[:, k - 1] if k > 0 else ranges.lower

    def decided(outcome: MaxMin) -> bool:
        return outcome.lower >= -FEASIBILITY_TOL or outcome.upper < -FEASIBILITY_TOL

    undecided: list[int] = []
    results: dict[int, MaxMin] = {}

    def reachable(k: int) -> bool:
        outcome = max_min(
            pool,
            thresholds(k),
            width,
            z_c=z_c,
            tolerance=tolerance,
            gap_tol=gap_tol,
            max_calls=max_calls,
            stop=decided,
            deadline=deadline,
        )
        results[k] = outcome
        if outcome.lower >= -FEASIBILITY_TOL:
            return True
        if not outcome.upper < -FEASIBILITY_TOL:
            undecided.append(k)
        return False

    low, high = (
        0,
        N,
    )  # level `low` is reached (k = 0: every policy is above the ranges' lower ends), levels above `high` are not
    while low < high:
        mid = (low + high + 1) // 2
        if reachable(mid):
            low = mid
        else:
            high = mid - 1
    k_star = low
    floors = thresholds(k_star)
    completion = max_min(
        pool,
        egalitarian_offset(ranges),
        width,
        floors=floors,
        z_c=z_c,
        tolerance=tolerance,
        gap_tol=gap_tol,
        max_calls=max_calls,
        deadline=deadline,
    )
    status = _status(completion, tolerance, gap_tol)
    if undecided or tolerance is None:
        status = "gap"
    if deadline is not None and time.monotonic() >= deadline and status != "optimal":
        status = "time-limit"
    above = k_star + 1
    report = _certificate(completion, tolerance, confidence, z_c) | {
        "q_star": k_star / N,
        "q_upper": (min(undecided) - 1) / N if undecided else k_star / N,
        "undecided_levels": sorted(undecided),
        "margin_at_q_star": results[k_star].lower if k_star in results else None,
        "margin_above_bound": (
            results[above].upper if above in results and math.isfinite(results[above].upper) else None
        ),
        "min_normalized": completion.value,
        "measure": samples.measure,
        "n_samples": N,
    }
    if undecided:
        # an undecided level may be reachable: q* lies in [q_star, the highest undecided level]
        report["q_upper"] = max(undecided) / N
    return _lottery(
        pool,
        completion.probabilities,
        ranges,
        rule="oracle_max_quantile",
        samples=samples,
        options={
            "n_samples": N,
            "concentration": concentration,
            "seed": seed,
            "gap_tol": gap_tol,
            "max_calls": max_calls,
            "confidence": confidence,
            "time_limit": time_limit,
        },
        report=report,
        status=status,
        started=started,
        before=before,
    )


#: Rules over oracles by name: ``rule(oracle, **options) -> Lottery`` (max-quantile also takes samples).
ORACLE_RULES: dict[str, Callable[..., Lottery]] = {
    "oracle_utilitarian": oracle_utilitarian,
    "oracle_egalitarian": oracle_egalitarian,
    "oracle_max_quantile": oracle_max_quantile,
}

__all__ = [
    "ORACLE_RULES",
    "MaxMin",
    "PolicyPool",
    "max_min",
    "oracle_egalitarian",
    "oracle_max_quantile",
    "oracle_ranges",
    "oracle_utilitarian",
    "reference_samples",
]
