"""What every rule shares after its own optimisation: threshold regions, completion inside
the rule's optimal set, and Pareto optimality.

A rule typically reduces to a region ``R = {d in O : J_i(d) >= t_i for i in T}`` (plus the
problem's constraints). Such a region is *upward closed* in return space, so a Pareto
improvement of any point of ``R`` stays in ``R``; a completion that is Pareto optimal
inside ``R`` (leximin, or positive-weight utilitarian) is therefore Pareto optimal in ``O``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InfeasibleError, InvalidProblemError, InvalidSamplesError
from policyagg.mdp import DeliveryWarning, DerivedPolicy
from policyagg.metrics import approvals, borda_score, pvc_epsilon, pvc_method
from policyagg.polytope import forced_zero
from policyagg.problem import Problem
from policyagg.result import Result, make_result
from policyagg.samples import ReturnSamples
from policyagg.solvers.occupancy import Rows, SolveLog, make_model, occupancy_program, utilities

#: Leximin keeps each fixed agent's floor ``u_i / w_i >= v_i - s_i`` with a priced slack
#: ``0 <= s_i <= LEVEL_SLACK`` (in the leximin's own units: the largest ``|C_i| / w_i`` is 1),
#: so that solver tolerances never make a later round infeasible; a round that still is
#: infeasible widens it tenfold, up to ``MAX_LEVEL_SLACK``.
LEVEL_SLACK = 1e-6
MAX_LEVEL_SLACK = 1e-3
#: The price of a unit of that slack against a unit of the round's level: above any
#: trade-off rate between agents' levels, so the slack is used only where tolerance needs it.
LEVEL_PRICE = 1e4
#: A dual value above this marks an agent's floor as binding in every optimum.
DUAL_TOL = 1e-9
COMPLETIONS = ("egalitarian", "utilitarian", "utilitarian-raw")
#: A completion raises a rule's floors by at most half this (in units of each agent's return
#: range): far above solver tolerances and the samples' tie tolerance (1e-6 of the sampled range),
#: small enough not to move a result in any reported digit.
MARGIN_CAP = 2e-5
#: Pareto gaps (sum of normalised improvements) below this count as Pareto optimal.
PARETO_TOL = 1e-6
#: A result's policy delivers its returns when its exact evaluation differs from every agent's
#: return by at most this many units of the agent's return range (``report["policy_return_gap"]``).
#: Measured on the paper's experiments (120 results): at most 5.7e-7, from the LP's own
#: feasibility tolerance on the flow rows; a trapped policy is off by O(1).
POLICY_RETURN_TOL = 1e-5
#: The status of a result whose solves were optimal but whose policy does not deliver its returns.
POLICY_GAP_STATUS = "policy-gap"
#: The Pareto check's price per unit of normalised return an agent falls short of its
#: floor. Exact-penalty argument: above the frontier's trade-off rates (the floors' dual
#: values) no loss pays, so the LP answers the constrained question, while a point a hair
#: outside ``O`` (LP tolerance) still gets a feasible check without trading one agent's
#: loss for another's gain.
LOSS_PENALTY = 1e4


def require_samples(samples: ReturnSamples | None, problem: Problem, rule: str) -> ReturnSamples:
    """The samples a volumetric rule needs, checked against the problem."""
    if samples is None:
        raise InvalidSamplesError(
            f"rule {rule!r} ranks policies by volume and needs sampled returns: pass "
            "`samples=sample_policy_returns(problem, N)` or `ReturnSamples(values)` with values of shape (N, n)"
        )
    if not isinstance(samples, ReturnSamples):
        raise InvalidSamplesError(
            f"`samples` must be a ReturnSamples; got {type(samples).__name__} (wrap an (N, n) array of returns "
            "with `ReturnSamples(values)`)"
        )
    samples = samples.check_agents(problem.n_agents)
    if problem.ranges is not None:
        ranges = problem.ranges
        slack = SAMPLE_RANGE_TOL * np.maximum(ranges.width, np.maximum(np.abs(ranges.lower), np.abs(ranges.upper)))
        above = samples.sorted_values[:, 0] > ranges.upper + slack
        below = samples.sorted_values[:, -1] < ranges.lower - slack
        outside = np.flatnonzero(above | below)
        if outside.size:
            i = int(outside[0])
            raise InvalidSamplesError(
                f"rule {rule!r}: every sampled return of agent {problem.names[i]!r} lies outside its range on "
                f"this problem's polytope [{ranges.lower[i]:.6g}, {ranges.upper[i]:.6g}] (samples "
                f"[{samples.sorted_values[i, 0]:.6g}, {samples.sorted_values[i, -1]:.6g}]): they are not returns of "
                "its policies; sample this problem (e.g. `sample_returns(problem, N)`) or check the agents' order"
            )
    return samples


#: Sampled returns further than this (relative to the agent's range or returns) outside
#: ``[min_O J_i, max_O J_i]`` cannot be returns of the problem's policies.
SAMPLE_RANGE_TOL = 1e-6


def threshold_rows(problem: Problem, agents, thresholds, name: str) -> Rows:
    """Rows ``J_i(d) >= t_i`` for ``i`` in ``agents`` over the ``d`` columns.

    A threshold at or below ``min_O J_i`` holds everywhere and gets no row (lower bound
    ``-inf``), so a completion's margin never moves a point for it. Each row is divided by
    the agent's return range, so the solver's feasibility tolerance
    (about 1e-7) is relative to the range and stays within the rank tie tolerance of
    :class:`ReturnSamples`.
    """
    agents = np.asarray(agents, dtype=int)
    scale = 1.0 / range_widths(problem)[agents]
    R = problem.reward_matrix[agents] * scale[:, None]
    thresholds = np.asarray(thresholds, dtype=float)
    vacuous = thresholds <= problem.require_ranges().lower[agents]  # every point of O meets it
    lower = np.where(vacuous, -np.inf, thresholds * scale)
    return Rows(name, sp.csr_array(R), lower, np.full(agents.size, np.inf))


def range_widths(problem: Problem) -> np.ndarray:
    """``max_O J_i - min_O J_i`` (1 for indifferent agents), for scaling rows."""
    ranges = problem.require_ranges()
    return np.where(ranges.flat, 1.0, ranges.width)


def complete(
    problem: Problem,
    rows: list[Rows],
    *,
    how: str = "egalitarian",
    backend: str = "highs",
    time_limit: float | None = None,
    log: SolveLog | None = None,
) -> np.ndarray:
    """A Pareto-optimal point of ``{d in O : rows}`` chosen by ``how`` on normalised returns.

    ``rows`` are a rule's floors in units of each agent's return range (as built by
    :func:`threshold_rows`). The completion first finds how far inside its floors the region
    reaches (:func:`region_margin`) and raises every floor by the margin ``m``, so the point it
    returns is strictly above each threshold whenever the region has an interior, not on it
    (where solver tolerance could put it a hair below, and its rank one sample short).
    Raised floors are still upward closed, so the completion stays Pareto optimal.

    ``egalitarian``: leximin of the weighted normalised returns; ``utilitarian``: max of
    their weighted sum; ``utilitarian-raw``: max of the weighted sum of raw returns
    ``sum_i w_i J_i(d)`` (the paper's code's approval completion; it depends on the reward
    scales). Returns the flattened occupancy; ``m`` is ``log.region_margin``.
    """
    if how not in COMPLETIONS:
        raise InvalidProblemError(f"`completion` must be one of {', '.join(COMPLETIONS)}; got {how!r}")
    log = log if log is not None else SolveLog(backend)
    margin = region_margin(problem, rows, backend=backend, time_limit=time_limit, log=log)
    log.region_margin = margin if log.region_margin is None else min(log.region_margin, margin)
    rows = [Rows(r.name, r.A, r.lower + margin, r.upper) for r in rows]
    C, c0 = utilities(problem, normalize=how != "utilitarian-raw")
    if how == "egalitarian":
        d, _, _ = leximin(problem, C, c0, rows=rows, backend=backend, time_limit=time_limit, log=log)
        return d
    lp = occupancy_program(problem, problem.weights @ C, name="utilitarian completion", maximize=True, rows=list(rows))
    return log.add(make_model(lp, backend=backend, time_limit=time_limit).solve()).x


def region_margin(
    problem: Problem, rows: list[Rows], *, backend: str = "highs", time_limit: float | None = None, log: SolveLog
) -> float:
    """The margin a completion keeps: ``min(s*/2, MARGIN_CAP/2)`` (0 if ``s* <= 0``), with

    .. math:: s^* = \\max_{d \\in O,\\, s \\le \\mathrm{MARGIN\\_CAP}} s \\quad\\text{s.t.}\\quad A d - s \\ge \\ell

    over every row with a finite lower bound ``l`` (rows in return-range units). Half of
    ``s*`` keeps the completion room to choose; the cap keeps the point within ``MARGIN_CAP``
    of the rule's own region, while staying above the samples' tie tolerance (``TIE_TOL``).
    """
    blocks, lowers = [], []
    for r in rows:
        finite = np.isfinite(r.lower)
        blocks.append(sp.csr_array(r.A)[np.flatnonzero(finite)])
        lowers.append(r.lower[finite])
    if not blocks or sum(b.shape[0] for b in blocks) == 0:
        return 0.0
    A = sp.vstack(blocks, format="csr")
    lp = margin_program(
        problem,
        A,
        np.concatenate(lowers),
        name="completion margin",
        family="margin to the rule's floors",
        cap=MARGIN_CAP,
    )
    best = log.add(make_model(lp, backend=backend, time_limit=time_limit).solve()).objective
    return float(min(max(best, 0.0), MARGIN_CAP) / 2)


def margin_program(problem: Problem, A, lower, *, name: str, family: str, cap: float = np.inf):
    """The LP ``max s`` over ``d in O`` (and the problem's constraints) with ``A d - s >= lower``
    and ``s <= cap``: how far inside the floors ``A d >= lower`` a point can reach (rows in
    return-range units, the row family ``family``; the last column is ``s``). Rows with a
    ``-inf`` bound are switched off."""
    n_d = problem.mdp.n_state_actions
    A = sp.csr_array(A)
    floors = Rows(family, sp.hstack([A, -np.ones((A.shape[0], 1))], format="csr"), lower, np.full(A.shape[0], np.inf))
    cost = np.zeros(n_d + 1)
    cost[-1] = 1.0
    return occupancy_program(
        problem,
        cost,
        name=name,
        maximize=True,
        extra_cols=1,
        col_lower=np.concatenate([np.zeros(n_d), [-np.inf]]),
        col_upper=np.concatenate([np.full(n_d, np.inf), [cap]]),
        rows=[floors],
    )


def pareto_improvement(
    problem: Problem, d, *, backend: str = "highs", time_limit: float | None = None, log: SolveLog | None = None
) -> tuple[float, np.ndarray]:
    """How far ``d`` is from the Pareto frontier, and a Pareto-optimal point that dominates it.

    .. math:: \\max_{d' \\in O \\cap C} \\sum_i u_i(d') - u_i(d) \\quad\\text{s.t.}\\quad J_i(d') \\ge J_i(d)\\ \\forall i

    with ``u`` the normalised returns (indifferent agents contribute 0). The gap is 0 exactly
    when ``d`` is Pareto optimal; the maximiser is Pareto optimal (an improvement on it would
    raise the objective) and makes no agent worse.
    """
    log = log if log is not None else SolveLog(backend)
    d = np.asarray(d, dtype=float).ravel()
    C, c0 = utilities(problem, normalize=True)
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    # floors u_i(d') + shortfall_i >= u_i(d), each unit of shortfall priced LOSS_PENALTY
    floor = threshold_rows(problem, np.arange(n), problem.reward_matrix @ d, "keep every agent's return")
    floor = Rows(floor.name, sp.hstack([floor.A, sp.eye_array(n)], format="csr"), floor.lower, floor.upper)
    cost = np.concatenate([C.sum(axis=0), np.full(n, -LOSS_PENALTY)])
    lp = occupancy_program(problem, cost, name="Pareto check", maximize=True, extra_cols=n, rows=[floor])
    solution = log.add(make_model(lp, backend=backend, time_limit=time_limit).solve())
    better = np.clip(solution.x[:n_d], 0.0, None)
    gap = float(max(0.0, (C @ better - C @ d).sum()))
    return gap, better


def leximin(
    problem: Problem,
    C,
    c0,
    *,
    rows: Sequence[Rows] = (),
    backend="highs",
    time_limit=None,
    active=None,
    log: SolveLog | None = None,
):
    """Leximin of ``u = C @ d + c0`` (entitlements ``u_i / w_i``) over the occupancy LP.

    ``rows`` are extra row families over the ``d`` columns only (a completion step uses them
    to stay inside a rule's optimal set). ``active`` masks the agents that take part
    (default: all). Solves are recorded in ``log`` (a new one if omitted). Returns ``(d, log, levels)``
    where ``levels[i]`` is the level at which agent ``i`` was fixed (NaN if not active).

    Round ``k`` solves ``max t - LEVEL_PRICE * sum_i s_i`` over ``d in O`` and the rows

    .. math:: u_i(d) \\ge w_i (t_i - s_i), \\quad t_i \\ge t \\;(i \\text{ free}),
              \\quad t_i \\ge v_i,\\; 0 \\le s_i \\le \\sigma \\;(i \\text{ fixed at } v_i),

    then fixes every free agent whose level row is binding (non-zero dual) at ``v_i = t``.
    The slack ``s_i`` keeps each fixed floor a margin ``sigma`` wide: a round's solution
    meets its rows only to the solver's tolerance, and with many agents the fixed floors pin
    ``d`` to a region that thin, so a hard floor would make the next round infeasible. Its
    price is far above any trade-off rate between levels, so a solution uses it only where
    tolerance needs it. If a round is still infeasible, ``sigma`` grows tenfold (at most
    :data:`MAX_LEVEL_SLACK`). The largest slack used is ``log.floor_violation`` (in units
    of ``u / w``), reported as ``diagnostics["max_floor_violation"]``.

    The LP works on ``(u - K) / unit`` with one common shift ``K`` (equal weights only) and
    scale ``unit`` (the largest ``|C_i| / w_i``): the leximin order is unchanged, and the
    tolerances above are relative to the agents' own scale.
    """
    C = np.asarray(C, dtype=float)
    n, n_d = C.shape
    w = problem.weights
    active = np.ones(n, bool) if active is None else np.asarray(active, bool)
    C, c0, shift, unit = _level_units(C, np.asarray(c0, dtype=float), w)
    n_cols = n_d + 2 * n + 1
    t_col, slack_cols = n_d + n, n_d + n + 1 + np.arange(n)
    floor = Rows(
        "agent floor",
        sp.hstack([sp.csr_array(C), -sp.diags_array(w), sp.csr_array((n, 1)), sp.diags_array(w)], format="csr"),
        -c0,
        np.full(n, np.inf),
    )
    level = Rows(
        "leximin level",
        sp.hstack([sp.csr_array((n, n_d)), sp.eye_array(n), -np.ones((n, 1)), sp.csr_array((n, n))], format="csr"),
        np.where(active, 0.0, -np.inf),
        np.full(n, np.inf),
    )
    widened = [
        Rows(r.name, sp.hstack([r.A, sp.csr_array((r.A.shape[0], 2 * n + 1))], format="csr"), r.lower, r.upper)
        for r in rows
    ]
    cost = np.zeros(n_cols)
    cost[t_col] = 1.0
    cost[slack_cols] = -LEVEL_PRICE
    lp = occupancy_program(
        problem,
        cost,
        name="egalitarian (leximin)",
        maximize=True,
        extra_cols=2 * n + 1,
        col_lower=np.concatenate([np.zeros(n_d), np.full(n + 1, -np.inf), np.zeros(n)]),
        col_upper=np.concatenate([np.full(n_d + n + 1, np.inf), np.zeros(n)]),
        rows=[*widened, floor, level],
    )
    level_rows = lp.row_families[-1][1] + np.arange(n)
    model = make_model(lp, backend=backend, time_limit=time_limit)
    log = log if log is not None else SolveLog(backend)
    levels = np.full(n, np.nan)
    free = active.copy()
    if not free.any():  # nobody to balance: any feasible point
        model.set_cost(np.zeros(n_cols))
        return log.add(model.solve()).x[:n_d], log, levels
    sigma = LEVEL_SLACK
    used = 0.0
    while free.any():
        solution, sigma = _solve_round(model, ~free & active, slack_cols, sigma, log)
        used = max(used, float(solution.x[slack_cols].max()))
        t = solution.x[t_col]
        binding = free & _binding(solution.row_duals, level_rows)
        if not binding.any():
            binding = free & _saturated(model, free, t, n_d, n, log, t_col, cost)
        fix = np.flatnonzero(binding)
        levels[fix] = t
        free[fix] = False
        model.set_col_bounds(n_d + fix, np.full(fix.size, t), np.full(fix.size, np.inf))
        model.set_col_bounds(slack_cols[fix], np.zeros(fix.size), np.full(fix.size, sigma))
        model.set_row_bounds(level_rows[fix], np.full(fix.size, -np.inf), np.full(fix.size, np.inf))
    log.floor_violation = max(log.floor_violation or 0.0, used * unit)
    return solution.x[:n_d], log, levels * unit + shift / w


def _level_units(C, c0, w):
    """``(C', c0', K, unit)`` with ``C' d + c0' = (C d + c0 - K) / unit`` for every ``d`` with
    ``sum(d) = 1`` (each row of ``C`` is centred into ``c0``)."""
    centre = (C.max(axis=1) + C.min(axis=1)) / 2
    C, c0 = C - centre[:, None], c0 + centre
    shift = float(np.median(c0)) if np.all(w == w[0]) else 0.0
    spread = np.abs(C).max(axis=1) / w
    unit = float(spread.max()) if spread.max() > 0 else 1.0
    return C / unit, (c0 - shift) / unit, shift, unit


def _solve_round(model, fixed, slack_cols, sigma, log):
    """Solve one leximin round; while it is infeasible and agents are fixed, widen their
    floors' slack tenfold (up to :data:`MAX_LEVEL_SLACK`). Returns ``(solution, sigma)``."""
    while True:
        try:
            return log.add(model.solve()), sigma
        except InfeasibleError:
            if not fixed.any() or sigma >= MAX_LEVEL_SLACK:
                raise
            sigma *= 10
            cols = slack_cols[fixed]
            model.set_col_bounds(cols, np.zeros(cols.size), np.full(cols.size, sigma))


def _binding(row_duals, rows) -> np.ndarray:
    if row_duals is None:
        return np.zeros(rows.size, bool)
    return np.abs(np.asarray(row_duals)[rows]) > DUAL_TOL


def _saturated(model, free, t, n_d, n, log, t_col, cost) -> np.ndarray:
    """Without usable duals: agent ``i`` is saturated if ``t_i`` cannot exceed ``t`` while
    every free agent keeps level ``t`` (one LP per free agent)."""
    model.set_col_bounds([t_col], [t - LEVEL_SLACK], [np.inf])
    out = np.zeros(n, bool)
    for i in np.flatnonzero(free):
        probe = np.where(cost < 0, cost, 0.0)  # the slack stays priced
        probe[n_d + i] = 1.0
        model.set_cost(probe)
        out[i] = log.add(model.solve()).x[n_d + i] <= t + LEVEL_SLACK
    model.set_cost(cost)
    model.set_col_bounds([t_col], [-np.inf], [np.inf])
    return out


#: Approval levels reported for every result.
REPORT_ALPHAS = (0.5, 0.8, 0.9)


def finish(
    problem: Problem,
    d,
    *,
    rule: str,
    samples: ReturnSamples | None,
    options: dict,
    log: SolveLog,
    started: float,
    time_limit: float | None = None,
    lift: bool = True,
    **extra,
) -> Result:
    """Assemble a rule's :class:`Result` with its fairness report.

    The result is what its policy does: the policy is derived from the rule's occupancy ``d``
    (:meth:`~policyagg.mdp.TabularMDP.derive_policy`) and the result reports that policy's
    *exact* occupancy ``d_pi`` (an exact point of ``O``; ``d`` meets ``O`` only to the solver's
    tolerance), so ``evaluate(result.policy)`` gives ``result.returns``.
    ``report["policy_return_gap"]`` is how far ``d_pi``'s returns are from ``d``'s, in units
    of each agent's range. Where ``d`` mixes closed classes (average reward) that no stationary
    policy mixes alike, the gap is real: the status becomes ``"policy-gap"``, a
    :class:`DeliveryWarning` quotes ``d``'s returns (``diagnostics["optimizer_returns"]``) and
    no Pareto optimality is claimed. Otherwise it is the solver's feasibility error, amplified by
    the chain's conditioning, and ``d_pi`` is the exact point the solver approximated.

    The Pareto gap of the reported point costs one more LP. If it exceeds :data:`PARETO_TOL`
    (a rule's point left short of the frontier by solver tolerances), the point is lifted with
    :func:`pareto_improvement`, which makes no agent worse, and ``diagnostics["pareto_lift"]``
    records the gap that was closed. ``lift=False`` reports the gap as it is.
    """
    d = _normalised(d)
    derived = _derive(problem, d, extra)
    gap, better = pareto_improvement(
        problem, derived.occupancy.ravel(), backend=log.backend, time_limit=time_limit, log=log
    )
    if lift and gap > PARETO_TOL:
        # solver tolerances left the rule's point short of the frontier: lift it (no agent loses)
        extra["pareto_lift"] = gap
        extra.pop("class_mixing", None)  # the lifted point is derived afresh
        d = _normalised(better)
        derived = _derive(problem, d, extra)
        gap, _ = pareto_improvement(
            problem, derived.occupancy.ravel(), backend=log.backend, time_limit=time_limit, log=log
        )
    optimizer_returns = problem.reward_matrix @ d
    d = derived.occupancy.ravel()
    returns = problem.reward_matrix @ d
    policy_gap = delivery_gap(problem, returns, optimizer_returns)
    delivers = derived.classes <= 1 or policy_gap <= POLICY_RETURN_TOL
    report: dict[str, Any] = {
        "pareto_gap": gap,
        "pareto_optimal": gap <= PARETO_TOL and delivers,
        "policy_return_gap": policy_gap,
    }
    if samples is not None:
        ranks = samples.cdf(returns)
        report |= {
            "min_rank": float(ranks.min()),
            "borda": borda_score(ranks),
            "approvals": {str(alpha): approvals(ranks, alpha) for alpha in REPORT_ALPHAS},
            # returns within the rank tie tolerance of a sample do not strictly prefer it
            "pvc_epsilon": pvc_epsilon(returns + samples.tolerance, samples.values, pvc_method(problem.n_agents)),
            "pvc_epsilon_method": pvc_method(problem.n_agents),
        }
    status = log.status
    if not delivers:
        status = POLICY_GAP_STATUS if status == "optimal" else status
        warnings.warn(
            f"{rule}: no stationary policy delivers the rule's point: its returns "
            f"{np.array2string(optimizer_returns, precision=6)} mix {derived.classes} closed classes of states; "
            f"the result reports what its policy does, {np.array2string(returns, precision=6)} (largest "
            f"difference {policy_gap:.3g} of an agent's return range), no Pareto optimality is claimed and the "
            f"status is {status!r}. Use `gamma` < 1, or an MDP whose actions connect its closed classes "
            "(then a stationary policy that moves between them delivers the point).",
            DeliveryWarning,
            stacklevel=3,
        )
    diagnostics = (
        log.as_dict()
        | {
            "wall_time": time.perf_counter() - started,
            "optimizer_returns": optimizer_returns.tolist(),
            "policy_occupancy_distance": derived.distance,
            "policy_noise_level": derived.noise_level,
            "policy_classes": derived.classes,
        }
        | extra
    )
    return make_result(
        problem,
        d,
        rule=rule,
        samples=samples,
        options=options | {"backend": log.backend},
        diagnostics=diagnostics,
        report=report,
        status=status,
        policy=derived.policy,
    )


#: Where a rule's point mixes closed classes of a communicating MDP (average reward), the result's
#: policy is derived from ``(1 - CLASS_MIXING) d + CLASS_MIXING y``, ``y`` the occupancy of the
#: uniformly random policy (positive everywhere): one closed class, hence a stationary policy that
#: delivers it, within ``CLASS_MIXING`` of ``d``'s returns in units of each agent's range.
CLASS_MIXING = 1e-6


def _derive(problem: Problem, d: np.ndarray, extra: dict) -> DerivedPolicy:
    """The policy of the occupancy ``d`` (:meth:`~policyagg.mdp.TabularMDP.derive_policy`); where
    ``d`` mixes closed classes that the MDP's actions connect, that of ``d`` mixed with a little
    of the uniform policy's occupancy (:data:`CLASS_MIXING`, then recorded in ``extra``): its
    chain has one closed class, so it delivers that point. Such a policy moves between the
    classes rarely (of the order of once in ``1 / CLASS_MIXING`` steps or less often), so its
    average is the long-run one; shorter runs see one class at a time.

    State-actions that the problem's constraints force to zero (prohibitions, ``forbid``) are
    never taken, not even in states ``d`` does not visit (transient ones under average
    reward): the filler and the uniform policy use the other actions only."""
    mdp = problem.mdp
    shape = (mdp.n_states, mdp.n_actions)
    allowed = allowed_actions(problem)
    derived = mdp.derive_policy(d, allowed)
    if derived.classes > 1 and mdp.structure.communicating:
        mask = np.ones(shape, dtype=bool) if allowed is None else allowed | ~allowed.any(axis=1, keepdims=True)
        uniform = mdp.occupancy(mask / mask.sum(axis=1, keepdims=True)).ravel()
        mixed = mdp.derive_policy((1.0 - CLASS_MIXING) * d + CLASS_MIXING * uniform, allowed)
        if mixed.classes == 1:
            extra["class_mixing"] = {"classes": derived.classes, "weight": CLASS_MIXING}
            return mixed
    return derived


def allowed_actions(problem: Problem) -> np.ndarray | None:
    """``(S, A)`` mask of the state-actions that the problem's constraints do not force to zero
    (:func:`~policyagg.polytope.forced_zero`), for :meth:`~policyagg.mdp.TabularMDP.derive_policy`;
    ``None`` without constraints."""
    if not len(problem.constraints):
        return None
    return ~forced_zero(problem.constraints).reshape(problem.mdp.n_states, problem.mdp.n_actions)


def _normalised(d) -> np.ndarray:
    """``d`` flattened, clipped at 0 and scaled to sum 1 (solver noise can leave it a hair off)."""
    d = np.clip(np.asarray(d, dtype=float).ravel(), 0.0, None)
    return d / d.sum()


def delivery_gap(problem: Problem, delivered: np.ndarray, returns: np.ndarray) -> float:
    """``max_i |J_i(pi) - J_i(d)| / w_i``: how far the policy's exact returns ``delivered`` are
    from the occupancy's ``returns``, in units of each agent's return range ``w_i`` (an
    indifferent agent: of its largest ``|r_i|``, or 1)."""
    ranges = problem.require_ranges()
    scale = np.abs(problem.reward_matrix).max(axis=1)
    scale = np.where(ranges.flat, np.where(scale > 0, scale, 1.0), ranges.width)
    return float(np.max(np.abs(np.asarray(delivered) - np.asarray(returns)) / scale, initial=0.0))


def pareto_check(problem: Problem, result_or_occupancy, *, backend: str = "highs") -> tuple[bool, float]:
    """Whether a result (or an occupancy) is Pareto optimal, and the Pareto gap: the largest
    total gain in normalised returns available without making any agent worse."""
    from policyagg.solvers.occupancy import with_ranges

    problem = with_ranges(problem, backend=backend)
    gap, _ = pareto_improvement(problem, _occupancy(result_or_occupancy), backend=backend)
    return gap <= PARETO_TOL, gap


def pareto_complete(
    problem: Problem,
    result_or_occupancy,
    samples: ReturnSamples | None = None,
    *,
    backend: str = "highs",
    time_limit: float | None = None,
) -> Result:
    """Lift a result (or an occupancy) to a Pareto-optimal one that makes no agent worse."""
    from policyagg.solvers.occupancy import with_ranges

    started = time.perf_counter()
    problem = with_ranges(problem, backend=backend)
    log = SolveLog(backend)
    _, better = pareto_improvement(
        problem, _occupancy(result_or_occupancy), backend=backend, time_limit=time_limit, log=log
    )
    rule = getattr(result_or_occupancy, "rule", "occupancy")
    return finish(
        problem,
        better,
        rule=f"{rule}+pareto",
        samples=samples,
        options={},
        log=log,
        started=started,
        time_limit=time_limit,
    )


def _occupancy(result_or_occupancy) -> np.ndarray:
    return np.asarray(getattr(result_or_occupancy, "occupancy", result_or_occupancy), dtype=float).ravel()
