"""Baselines on normalised returns: random dictator, Nash welfare, generalised Gini welfare.

All three read preferences through the normalised returns ``u = C @ d + c0`` of
:func:`policyagg.solvers.occupancy.utilities` (``u_i = 0`` at agent ``i``'s worst policy, ``1`` at its
best; indifferent agents have ``u_i = 1``), so they are invariant to positive affine changes
of any agent's reward. Samples are optional: with them the result carries the volumetric
fairness report.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError
from policyagg.result import Result
from policyagg.solvers.completion import pareto_improvement
from policyagg.solvers.occupancy import Rows, make_model, occupancy_program, unit_cost, utilities
from policyagg.solvers.registry import RuleCall, flag, integer, number, per_agent, register_rule

#: Tangent points of the first Nash round, in normalised-return units.
NASH_GRID = (1e-3, 1e-2, 0.1, 0.5, 1.0)
#: ``log u`` is evaluated (and cut) at ``max(u, NASH_FLOOR)``: an agent that the constraints
#: hold at ``u = 0`` then contributes ``log(NASH_FLOOR)`` instead of ``-inf``.
NASH_FLOOR = 1e-9


# ------------------------------------------------------------------ random dictator
@register_rule(
    "random_dictator",
    options={
        "pareto": flag("lift the mixture to a Pareto-optimal policy that makes no agent worse"),
    },
)
def random_dictator(call: RuleCall, *, pareto: bool = True) -> Result:
    """The expected outcome of a random dictator: agent ``i`` dictates with probability ``w_i / sum w``.

    .. math:: d_{RD} = \\sum_i \\frac{w_i}{\\sum_j w_j}\\, d_i^*, \\qquad d_i^* \\in \\arg\\max_{d \\in O \\cap C} J_i(d)

    ``O`` is convex, so the mixture is itself an occupancy measure (a stationary policy, not a
    lottery over policies). ``d_i^*`` is the optimum stored in ``problem.ranges.best`` when
    the problem has no extra constraints ``C``; otherwise it is recomputed inside
    ``O ∩ C`` (one LP per agent on one warm model, ``"random dictator"``). When an agent's
    optimum is not unique the LP picks one of its optimal vertices.

    The mixture is often not Pareto optimal (two dictators' favourites can both be beaten by
    a compromise). Every rule's default output in this library is Pareto optimal, so with
    ``pareto=True`` (default) the mixture is lifted by :func:`policyagg.solvers.completion.pareto_improvement`:
    the point of ``O ∩ C`` that maximises the sum of normalised returns among those where
    *no agent is worse off* than under the mixture. ``pareto=False`` returns the plain
    mixture (its Pareto gap is then ``report["pareto_gap"]``). Diagnostics: ``mixture_returns``
    and, with ``pareto=True``, ``mixture_pareto_gap`` (the sum of normalised gains the lift
    found; 0 if the mixture was already Pareto optimal).
    """
    problem, log, backend, time_limit = call.problem, call.log, call.backend, call.time_limit
    R = problem.reward_matrix
    if len(problem.constraints):
        lp = occupancy_program(problem, R[0], name="random dictator", maximize=True)
        model = make_model(lp, backend=backend, time_limit=time_limit)
        best = np.empty_like(R)
        for i in range(problem.n_agents):
            model.set_cost(unit_cost(R[i]))
            best[i] = np.clip(log.add(model.solve()).x, 0.0, None)
    else:
        best = problem.require_ranges().best
    share = problem.weights / problem.weights.sum()
    mixture = share @ best
    extra = {"mixture_returns": (R @ mixture).tolist()}
    d = mixture
    if pareto:
        gap, d = pareto_improvement(problem, mixture, backend=backend, time_limit=time_limit, log=log)
        extra["mixture_pareto_gap"] = gap
    return call.finish(d, lift=pareto, **extra)


# ------------------------------------------------------------------ Nash welfare
@register_rule(
    "nash_welfare",
    options={
        "tolerance": number(0.0, low_open=True, help="stop when every agent's log-welfare error is at most this"),
        "max_rounds": integer(1, help="rounds of tangent cuts before giving up (with a RuntimeWarning)"),
    },
)
def nash_welfare(call: RuleCall, *, tolerance: float = 1e-6, max_rounds: int = 50) -> Result:
    """Maximise weighted Nash welfare of normalised returns by tangent cuts (Kelley's cutting planes).

    .. math:: \\max_{d \\in O \\cap C} \\sum_{i \\in A} w_i \\log u_i(d)
              \\;=\\; \\max_{d,\\, z} \\sum_{i \\in A} w_i z_i \\quad\\text{s.t.}\\quad
              z_i \\le \\log a + (u_i(d) - a) / a \\quad \\forall a \\in \\mathcal{A}_i

    over the agents ``A`` with a non-flat return range (indifferent agents have ``u_i = 1``,
    ``log 1 = 0``). Every cut is a tangent of the concave ``log``, so the LP over-estimates
    the welfare; it starts with the tangent points :data:`NASH_GRID` and each round adds a
    cut at the current ``u_i`` of every agent whose error ``z_i - log u_i`` exceeds
    ``tolerance``, until ``max_i (z_i - log u_i) <= tolerance``. The LP is rebuilt each round
    (the LP layer cannot add rows; rounds are few). At the end the welfare at ``d`` is within
    ``sum_i w_i (z_i - log u_i)`` of the optimum.

    The optimum has every ``u_i > 0`` (the mean of the agents' optima gives ``u_i >= 1/n``),
    unless extra constraints force some ``u_i = 0``; ``log`` is then floored at
    :data:`NASH_FLOOR`. Each cut is strictly increasing in ``u_i``, so the LP optimum is
    Pareto optimal; the Nash optimum in ``u`` is unique (strict concavity).

    Accuracy: ``tolerance`` bounds the welfare error (per agent, in ``log`` units); the
    welfare is flat at its maximum, so the normalised returns themselves are only accurate to
    about ``sqrt(2 * tolerance)``, and nothing finer than the LP solver's own optimality
    tolerance (about ``1e-7`` in welfare) is reachable.

    If ``max_rounds`` rounds do not reach ``tolerance`` the last point is returned with a
    ``RuntimeWarning`` and ``diagnostics["converged"] = False``.

    Diagnostics: ``rounds``, ``gap`` (the final ``max_i (z_i - log u_i)``), ``converged``,
    ``n_cuts``, ``nash_welfare`` (``sum_i w_i log u_i`` at the result, over ``A``).
    """
    problem = call.problem
    C, c0 = utilities(problem, normalize=True)
    n_d = problem.mdp.n_state_actions
    agents = np.flatnonzero(~problem.require_ranges().flat)
    if agents.size == 0:  # everybody is indifferent: any point of O ∩ C
        d = call.maximize(np.zeros(n_d), name="Nash welfare")
        return call.finish(d, rounds=1, gap=0.0, converged=True, n_cuts=0, nash_welfare=0.0)
    C, c0, w = C[agents], c0[agents], problem.weights[agents]
    k = agents.size
    cut_agent = np.repeat(np.arange(k), len(NASH_GRID))
    cut_point = np.tile(np.asarray(NASH_GRID, float), k)
    cost = np.concatenate([np.zeros(n_d), w])
    col_lower = np.concatenate([np.zeros(n_d), np.full(k, -np.inf)])
    rounds, gap = 0, np.inf
    while True:
        rounds += 1
        lp = occupancy_program(
            problem,
            cost,
            name="Nash welfare",
            maximize=True,
            extra_cols=k,
            col_lower=col_lower,
            rows=[_tangent_cuts(C, c0, cut_agent, cut_point)],
        )
        x = call.solve(lp).x
        d = np.clip(x[:n_d], 0.0, None)
        u = np.maximum(C @ d + c0, NASH_FLOOR)
        # the cut envelope at u (rather than the solver's z, which carries its tolerance)
        tangents = np.log(cut_point) + (u[cut_agent] - cut_point) / cut_point
        envelope = np.full(k, np.inf)
        np.minimum.at(envelope, cut_agent, tangents)
        errors = envelope - np.log(u)
        gap = float(errors.max())
        if gap <= tolerance or rounds >= max_rounds:
            break
        more = np.flatnonzero(errors > tolerance)
        cut_agent = np.concatenate([cut_agent, more])
        cut_point = np.concatenate([cut_point, u[more]])
    converged = gap <= tolerance
    if not converged:
        warnings.warn(
            f"nash_welfare: {max_rounds} rounds left a log-gap of {gap:.3g} > tolerance {tolerance:g}; "
            "raise `max_rounds` or `tolerance`",
            RuntimeWarning,
            stacklevel=2,
        )
    return call.finish(
        d, rounds=rounds, gap=gap, converged=converged, n_cuts=int(cut_agent.size), nash_welfare=float(w @ np.log(u))
    )


def _tangent_cuts(C, c0, agent, point) -> Rows:
    """Rows ``z_j - C_j d / a <= log a - 1 + c0_j / a`` (i.e. ``z_j <= log a + (u_j - a) / a``)."""
    k, n_d = C.shape
    A_d = sp.csr_array(-C[agent] / point[:, None])
    A_z = sp.csr_array((np.ones(agent.size), (np.arange(agent.size), agent)), shape=(agent.size, k))
    upper = np.log(point) - 1.0 + c0[agent] / point
    return Rows("Nash tangent cuts", sp.hstack([A_d, A_z], format="csr"), np.full(agent.size, -np.inf), upper)


# ------------------------------------------------------------------ generalised Gini welfare
def gini_owa_weights(n: int) -> np.ndarray:
    """The default OWA weights ``a_k = (2 (n - k) + 1) / n^2``, ``k = 1..n`` (they sum to 1).

    With them the OWA of ``u`` sorted ascending equals ``mean(u) * (1 - gini(u))``
    (Weymark's Gini social welfare), with ``gini`` the index that every result reports.
    """
    k = np.arange(1, n + 1)
    return (2 * (n - k) + 1) / n**2


@register_rule(
    "generalized_gini",
    options={
        "owa_weights": per_agent(
            "OWA weights a_1 >= ... >= a_n > 0 on the sorted normalised returns (default: the Gini weights)"
        ),
    },
)
def generalized_gini(call: RuleCall, *, owa_weights: Sequence[float] | None = None) -> Result:
    """Maximise the generalised Gini welfare (an ordered weighted average) of normalised returns.

    .. math:: \\max_{d \\in O \\cap C} \\sum_{k=1}^{n} a_k\\, u_{(k)}(d), \\qquad
              u_{(1)} \\le \\dots \\le u_{(n)}, \\quad a_1 \\ge a_2 \\ge \\dots \\ge a_n > 0

    as one LP (Ogryczak's formulation). With ``a_{n+1} = 0`` the OWA is
    ``sum_k (a_k - a_{k+1}) S_k(u)`` with ``S_k`` the sum of the ``k`` smallest values, and

    .. math:: S_k(u) = \\max_{t_k} \\; k\\, t_k - \\sum_i \\max(t_k - u_i, 0)

    (columns ``t_k`` free, ``s_{ki} >= t_k - u_i``, ``s_{ki} >= 0``; rows for the ``k`` with
    ``a_k > a_{k+1}`` only). Default ``a``: :func:`gini_owa_weights`, which makes the
    objective ``mean(u) (1 - gini(u))`` with the Gini index every result reports;
    ``a = (1, 0, ..., 0)`` would be max-min (strictly positive weights are required so that
    the optimum is Pareto optimal: every ``u_i`` then counts), equal weights the utilitarian sum.

    The OWA is anonymous: the problem's agent weights do not enter (``a`` weighs *positions*
    in the sorted returns, not agents). Indifferent agents take part with ``u_i = 1``.
    Diagnostics: ``owa_value`` (the objective at the result).
    """
    problem = call.problem
    n = problem.n_agents
    a = _check_owa_weights(owa_weights, n)
    C, c0 = utilities(problem, normalize=True)
    n_d = problem.mdp.n_state_actions
    step = a - np.append(a[1:], 0.0)
    ks = np.flatnonzero(step > 0)  # 0-based: S_{k+1} is used with weight step[k]
    m = ks.size
    # columns: d (n_d), t (m), s (m * n) in row-major (k, i) order
    cost = np.concatenate([np.zeros(n_d), step[ks] * (ks + 1), -np.repeat(step[ks], n)])
    rows_k = np.repeat(np.arange(m), n)
    rows_i = np.tile(np.arange(n), m)
    # s_ki - t_k + C_i d >= -c0_i
    A = sp.hstack(
        [
            sp.csr_array(C[rows_i]),
            sp.csr_array((-np.ones(m * n), (np.arange(m * n), rows_k)), shape=(m * n, m)),
            sp.eye_array(m * n, format="csr"),
        ],
        format="csr",
    )
    deviations = Rows("OWA k-smallest deviations", A, -c0[rows_i], np.full(m * n, np.inf))
    col_lower = np.concatenate([np.zeros(n_d), np.full(m, -np.inf), np.zeros(m * n)])
    lp = occupancy_program(
        problem,
        cost,
        name="generalized Gini welfare",
        maximize=True,
        extra_cols=m + m * n,
        col_lower=col_lower,
        rows=[deviations],
    )
    d = np.clip(call.solve(lp).x[:n_d], 0.0, None)
    value = float(a @ np.sort(C @ d + c0))
    return call.finish(d, options={"owa_weights": a.tolist()}, owa_value=value)


def _check_owa_weights(owa_weights, n: int) -> np.ndarray:
    if owa_weights is None:
        return gini_owa_weights(n)
    try:
        a = np.array(owa_weights, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"`owa_weights` must be {n} numbers; got {owa_weights!r}") from exc
    if a.shape != (n,):
        raise InvalidProblemError(f"`owa_weights` must have one weight per agent, shape ({n},); got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InvalidProblemError(f"`owa_weights` must be finite and > 0 (so every agent counts); got {a.tolist()}")
    if np.any(np.diff(a) > 0):
        k = int(np.flatnonzero(np.diff(a) > 0)[0])
        raise InvalidProblemError(
            f"`owa_weights` must be non-increasing (a_1 >= a_2 >= ..., the worst-off weighed most); "
            f"a[{k}] = {a[k]} < a[{k + 1}] = {a[k + 1]}"
        )
    return a
