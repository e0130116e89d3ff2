"""Baselines on normalised returns: random dictator, Nash welfare, generalised Gini welfare.

All three read preferences through the normalised returns ``u = C @ d + c0`` of
:func:`policyagg.solvers.occupancy.utilities` (``u_i = 0`` at agent ``i``'s worst policy, ``1`` at its
best; indifferent agents have ``u_i = 1``), so they are invariant to positive affine changes
of any agent's reward. Samples are optional: with them the result carries the volumetric
fairness report.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError
from policyagg.lottery import Lottery
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.solvers.completion import pareto_improvement
from policyagg.solvers.factored import FactoredModel
from policyagg.solvers.lp import HighsModel
from policyagg.solvers.occupancy import (
    OccupancyProgram,
    Rows,
    make_model,
    occupancy_program,
    unit_cost,
    utilities,
)
from policyagg.solvers.registry import RuleCall, choice, flag, integer, number, per_agent, register_rule

#: Tangent points of the first Nash round, in normalised-return units.
NASH_GRID = (1e-3, 1e-2, 0.1, 0.5, 1.0)
#: HiGHS's primal and dual feasibility tolerances in the cutting-plane LPs. With its defaults
#: (1e-7) the utility columns may drift 1e-7 from ``C d + c0`` and the solver's point is then up
#: to about 1e-7 below the optimum of a flat welfare, as much as the cuts' whole gap.
CUT_FEASIBILITY_TOL = 1e-9
#: ``log u`` is evaluated (and cut) at ``max(u, NASH_FLOOR)``: an agent that the constraints
#: hold at ``u = 0`` then contributes ``log(NASH_FLOOR)`` instead of ``-inf``.
NASH_FLOOR = 1e-9


# ------------------------------------------------------------------ random dictator
@register_rule(
    "random_dictator",
    options={
        "pareto": flag("lift the mixture to a Pareto-optimal policy that makes no agent worse"),
        "form": choice(
            ("mixture", "lottery"),
            help="mixture: one stationary policy (a Result); lottery: draw a dictator per episode (a Lottery)",
        ),
    },
)
def random_dictator(call: RuleCall, *, pareto: bool = True, form: str = "mixture") -> Result | Lottery:
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

    ``form="lottery"`` returns the random dictator itself, a :class:`~policyagg.lottery.Lottery`
    that draws ``d_i^*`` with probability ``w_i / sum w`` once per episode: its ex-ante returns
    are the plain mixture's (``pareto`` does not apply: lifting would replace the lottery by one
    policy). The default stays ``"mixture"``: the paper reproduction's tables report the lifted
    mixture, and a rule's return type is part of its configuration.
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
    if form == "lottery":
        return call.finish_lottery(best, share, mixture_returns=(share @ (best @ R.T)).tolist())
    mixture = share @ best
    extra = {"mixture_returns": (R @ mixture).tolist()}
    d = mixture
    if pareto:
        gap, d = pareto_improvement(problem, mixture, backend=backend, time_limit=time_limit, log=log)
        extra["mixture_pareto_gap"] = gap
    return call.finish(d, lift=pareto, **extra)


# ------------------------------------------------------------------ utility columns and cuts
def utility_rows(C: np.ndarray, c0: np.ndarray, n_d: int, n_cols: int) -> Rows:
    """Rows ``u_i - C_i d = c0_i`` that make columns ``n_d .. n_d + n - 1`` the utilities ``u = C d + c0``.

    Each agent's (dense) reward row enters the program once; every cut then names ``u_i``
    (one non-zero) instead of repeating ``C_i`` (``S*A`` non-zeros).
    """
    n = C.shape[0]
    A_u = sp.csr_array((np.ones(n), (np.arange(n), np.arange(n_d, n_d + n))), shape=(n, n_cols))
    A = sp.hstack([sp.csr_array(-C), sp.csr_array((n, n_cols - n_d))], format="csr") + A_u
    return Rows("normalised returns", sp.csr_array(A), c0, c0)


def _cut_program(
    problem: Problem, cost: np.ndarray, returns: Rows, name: str
) -> Callable[[Sequence[Rows]], OccupancyProgram]:
    """``build(cuts)``: the program ``max cost @ [d, extra]`` over ``d in O``, the utility rows
    ``returns`` and ``cuts``, with the extra columns (utilities, cut variables) free."""
    n_d = problem.mdp.n_state_actions
    col_lower = np.concatenate([np.zeros(n_d), np.full(cost.size - n_d, -np.inf)])

    def build(cuts: Sequence[Rows]) -> OccupancyProgram:
        return occupancy_program(
            problem,
            cost,
            name=name,
            maximize=True,
            extra_cols=cost.size - n_d,
            col_lower=col_lower,
            rows=[returns, *cuts],
        )

    return build


class _CutModel:
    """A warm model of an occupancy program to which rounds of cut rows are added.

    HiGHS and PuLP models take the rows in place (:meth:`~policyagg.solvers.lp.HighsModel.add_rows`,
    HiGHS keeps its basis); a model that cannot add rows (column generation) is rebuilt with all
    cuts so far, starting from the columns its pool already holds.
    """

    def __init__(self, call: RuleCall, build: Callable[[Sequence[Rows]], OccupancyProgram], cuts: Rows):
        self.call, self.build, self.cuts = call, build, [cuts]
        self.model = make_model(build(self.cuts), backend=call.backend, time_limit=call.time_limit)
        if isinstance(self.model, (HighsModel, FactoredModel)):
            self.model.set_option("dual_feasibility_tolerance", CUT_FEASIBILITY_TOL)
            self.model.set_option("primal_feasibility_tolerance", CUT_FEASIBILITY_TOL)

    def add(self, cuts: Rows) -> None:
        self.cuts.append(cuts)
        if hasattr(self.model, "add_rows"):
            self.model.add_rows(cuts.A, cuts.lower, cuts.upper, name=cuts.name)
        else:
            program = self.build([_stack(self.cuts)])
            self.model = make_model(program, backend=self.call.backend, time_limit=self.call.time_limit)

    def solve(self) -> np.ndarray:
        return self.call.log.add(self.model.solve()).x


def _stack(families: Sequence[Rows]) -> Rows:
    return Rows(
        families[0].name,
        sp.vstack([r.A for r in families], format="csr"),
        np.concatenate([r.lower for r in families]),
        np.concatenate([r.upper for r in families]),
    )


def _not_converged(call: RuleCall, rule: str, max_rounds: int, gap: float, tolerance: float, what: str = "gap") -> None:
    """Warn, and make the result's status "gap": the rule stopped before its own tolerance."""
    call.log.statuses.append("gap")
    warnings.warn(
        f"{rule}: {max_rounds} rounds left a {what} of {gap:.3g} > tolerance {tolerance:g} (status 'gap'); "
        "raise `max_rounds` or `tolerance`",
        RuntimeWarning,
        stacklevel=3,
    )


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
              \\;=\\; \\max_{d,\\, u,\\, z} \\sum_{i \\in A} w_i z_i \\quad\\text{s.t.}\\quad
              u = C d + c_0, \\quad z_i \\le \\log a + (u_i - a) / a \\quad \\forall a \\in \\mathcal{A}_i

    over the agents ``A`` with a non-flat return range (indifferent agents have ``u_i = 1``,
    ``log 1 = 0``). The utilities ``u_i`` are columns defined once by :func:`utility_rows`, so a
    cut has two non-zeros. Every cut is a tangent of the concave ``log``, so the LP
    over-estimates the welfare; it starts with the tangent points :data:`NASH_GRID` and each
    round adds a cut at the current ``u_i`` of every agent whose error ``z_i - log u_i`` exceeds
    ``tolerance``, until ``max_i (z_i - log u_i) <= tolerance``. The cuts are added to the
    solved model, which re-solves warm from its basis. At the end the welfare at ``d`` is within
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
    ``RuntimeWarning``, ``diagnostics["converged"] = False`` and status ``"gap"``.

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
    cost = np.concatenate([np.zeros(n_d + k), w])  # columns d, u, z
    build = _cut_program(problem, cost, utility_rows(C, c0, n_d, cost.size), "Nash welfare")

    cut_agent = np.repeat(np.arange(k), len(NASH_GRID))
    cut_point = np.tile(np.asarray(NASH_GRID, float), k)
    model = _CutModel(call, build, _tangent_cuts(n_d, k, cut_agent, cut_point))
    rounds, gap = 0, np.inf
    while True:
        rounds += 1
        d = np.clip(model.solve()[:n_d], 0.0, None)
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
        model.add(_tangent_cuts(n_d, k, more, u[more]))
    converged = gap <= tolerance
    if not converged:
        _not_converged(call, "nash_welfare", max_rounds, gap, tolerance, "log-gap")
    return call.finish(
        d, rounds=rounds, gap=gap, converged=converged, n_cuts=int(cut_agent.size), nash_welfare=float(w @ np.log(u))
    )


def _tangent_cuts(n_d: int, k: int, agent: np.ndarray, point: np.ndarray) -> Rows:
    """Rows ``z_j - u_j / a <= log a - 1`` (i.e. ``z_j <= log a + (u_j - a) / a``) over ``[d, u, z]``."""
    m = agent.size
    rows = np.repeat(np.arange(m), 2)
    cols = np.column_stack([n_d + agent, n_d + k + agent]).ravel()
    values = np.column_stack([-1.0 / point, np.ones(m)]).ravel()
    A = sp.csr_array((values, (rows, cols)), shape=(m, n_d + 2 * k))
    return Rows("Nash tangent cuts", A, np.full(m, -np.inf), np.log(point) - 1.0)


# ------------------------------------------------------------------ generalised Gini welfare
def gini_owa_weights(n: int) -> np.ndarray:
    """The default OWA weights ``a_k = (2 (n - k) + 1) / n^2``, ``k = 1..n`` (they sum to 1).

    With them the OWA of ``u`` sorted ascending equals ``mean(u) * (1 - gini(u))``
    (Weymark's Gini social welfare), with ``gini`` the index that every result reports.
    """
    k = np.arange(1, n + 1)
    return (2 * (n - k) + 1) / n**2


def owa(a: np.ndarray, u: np.ndarray) -> float:
    """The ordered weighted average ``sum_k a_k u_(k)`` with ``u`` sorted ascending."""
    return float(a @ np.sort(u))


@register_rule(
    "generalized_gini",
    options={
        "owa_weights": per_agent(
            "OWA weights a_1 >= ... >= a_n > 0 on the sorted normalised returns (default: the Gini weights)"
        ),
        "tolerance": number(0.0, low_open=True, help="stop when the welfare is within this of the optimum"),
        "max_rounds": integer(1, help="rounds of cuts before giving up (with a RuntimeWarning)"),
    },
)
def generalized_gini(
    call: RuleCall, *, owa_weights: Sequence[float] | None = None, tolerance: float = 1e-9, max_rounds: int = 10_000
) -> Result:
    """Maximise the generalised Gini welfare (an ordered weighted average) of normalised returns.

    .. math:: \\max_{d \\in O \\cap C} W(u) = \\sum_{k=1}^{n} a_k\\, u_{(k)}(d), \\qquad
              u_{(1)} \\le \\dots \\le u_{(n)}, \\quad a_1 \\ge a_2 \\ge \\dots \\ge a_n > 0

    With non-increasing ``a`` the OWA is the smallest of its permuted sums,
    ``W(u) = min_pi sum_k a_k u_{pi(k)}`` (the rearrangement inequality), a concave piecewise
    linear function; it is maximised by cutting planes over the utility columns
    ``u = C d + c0`` (:func:`utility_rows`):

    .. math:: \\max_{d,\\, u,\\, z}\\ z \\quad\\text{s.t.}\\quad
              z \\le \\tfrac{\\sum_k a_k}{n} \\sum_i u_i, \\quad
              z \\le \\sum_k a_k u_{\\pi(k)} \\;\\; \\forall \\pi \\in \\Pi

    (the first cut is the average of all permuted sums). Each round adds the cut of the order
    ``pi`` that sorts the current ``u`` ascending, to the solved model (warm re-solve), until
    ``z - W(u) <= tolerance``; ``z`` bounds the optimum from above, so the result's welfare is
    within ``tolerance`` of it (plus the LP solver's own tolerances, about ``1e-7``). The
    rounds are finite (each adds a new one of the finitely many cuts, and a cut already present
    is satisfied up to the solver's feasibility tolerance: that also ends the loop).

    Default ``a``: :func:`gini_owa_weights`, which makes the objective ``mean(u) (1 - gini(u))``
    with the Gini index every result reports; ``a = (1, 0, ..., 0)`` would be max-min (strictly
    positive weights are required so that the optimum is Pareto optimal: every ``u_i`` then
    counts), equal weights the utilitarian sum.

    The OWA is anonymous: the problem's agent weights do not enter (``a`` weighs *positions*
    in the sorted returns, not agents). Indifferent agents take part with ``u_i = 1``.
    If ``max_rounds`` rounds do not reach ``tolerance`` the last point is returned with a
    ``RuntimeWarning``, ``diagnostics["converged"] = False`` and status ``"gap"``.
    Diagnostics: ``owa_value`` (the objective at the result), ``gap`` (``z - W(u)`` at the
    end), ``rounds``, ``converged``.
    """
    problem = call.problem
    n = problem.n_agents
    a = _check_owa_weights(owa_weights, n)
    C, c0 = utilities(problem, normalize=True)
    n_d = problem.mdp.n_state_actions
    cost = np.zeros(n_d + n + 1)  # columns d, u, z
    cost[-1] = 1.0
    build = _cut_program(problem, cost, utility_rows(C, c0, n_d, cost.size), "generalized Gini welfare")

    model = _CutModel(call, build, _owa_cut(n_d, np.full(n, a.sum() / n)))
    seen: set[bytes] = set()
    rounds = 0
    while True:
        rounds += 1
        x = model.solve()
        d = np.clip(x[:n_d], 0.0, None)
        u = C @ d + c0
        coefficients = np.empty(n)
        coefficients[np.argsort(u, kind="stable")] = a  # the k-th smallest u_i gets a_k
        value = float(coefficients @ u)
        gap = float(x[-1]) - value
        key = coefficients.tobytes()
        if gap <= tolerance or key in seen or rounds >= max_rounds:
            break
        seen.add(key)
        model.add(_owa_cut(n_d, coefficients))
    converged = gap <= tolerance or key in seen
    if not converged:
        _not_converged(call, "generalized_gini", max_rounds, gap, tolerance)
    return call.finish(
        d,
        options={"owa_weights": a.tolist()},
        owa_value=value,
        gap=max(gap, 0.0),
        rounds=rounds,
        converged=converged,
    )


def _owa_cut(n_d: int, coefficients: np.ndarray) -> Rows:
    """The row ``z - coefficients @ u <= 0`` over ``[d, u, z]``."""
    n = coefficients.size
    cols = np.arange(n_d, n_d + n + 1)
    A = sp.csr_array((np.append(-coefficients, 1.0), (np.zeros(n + 1, dtype=int), cols)), shape=(1, n_d + n + 1))
    return Rows("OWA cuts", A, np.array([-np.inf]), np.zeros(1))


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
