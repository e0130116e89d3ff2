"""Volumetric Borda: maximise the sum of the agents' ranks.

.. math:: \\max_{d \\in O} \\sum_i w_i F_i(J_i(d)), \\qquad J_i(d) = \\langle r_i, d \\rangle

with ``F_i`` the empirical CDF of agent ``i``'s sampled returns (``samples.values[:, i]``).
``F_i`` is a step function, so the problem is solved on a piecewise-linear (PL) version of it.
Both solvers build their PL functions from the same *quantile knots*: the order statistics of
agent ``i``'s samples at the quantile levels ``k / K`` (``k = 0..K``, the sample minimum and
maximum included), each with the empirical CDF ``F_i`` at that value (``samples.cdf``, so ties
count as in the fairness report); knots with equal ``F_i`` (equal returns up to the samples'
tie tolerance) are merged into the first. Order statistics move with a positive affine change
``a v + b`` of an agent's returns and the CDF values do not, so every construction below, and
hence the chosen policy, is invariant to positive affine changes of one agent's reward.

``solver="lp"`` (the paper's concave-region LP), ``K = tangents``:
    ``F~_i`` is the PL function through the knots; its density (slope) is piecewise constant.
    The *mode* ``m_i`` is the left end of ``F~_i``'s steepest segment (the smallest point
    where its density is maximal; the first segment on ties, up to ``MODE_TIE``): the start of
    the shortest of the ``K`` quantile intervals, each holding about ``1/K`` of the samples (a
    shorth-type estimator; ``K`` trades resolution against sampling noise). Above the mode
    ``F~_i`` is concave when the density is unimodal; where sampling noise (or a second bump)
    breaks that, ``F~_i`` is replaced by its concave envelope (upper hull) on
    ``[m_i, max sample]``, which lies above it, so the LP stays an outer approximation. The
    tangents are the lines of the envelope's segments (the supporting lines at its knots), so
    their minimum *is* the envelope:

    .. math:: \\max \\sum_i w_i z_i \\quad\\text{s.t.}\\quad d \\in O,\\; J_i(d) \\ge m_i,\\;
              z_i \\le F~_i(v_k) + f~_i(v_k) (J_i(d) - v_k),\\; 0 \\le z_i \\le 1

    If no policy puts every agent at or above its mode the region is empty and an
    :class:`InfeasibleError` says so; ``fallback="milp"`` then solves the MILP instead.

``solver="milp"`` (exact for the PL interpolation ``F^_i``), ``K = breakpoints``:
    ``F^_i`` interpolates ``F_i`` at the knots ``b_0 < ... < b_m``, extended by
    ``F^_i(min_O J_i) = 0`` below the smallest sample (``F^_i = 1`` above the largest).
    Incremental formulation with ``delta_ik in [0, 1]``:

    .. math:: \\max \\sum_i w_i \\Big(F^_i(b_{i0}) + \\sum_k \\delta_{ik} (F^_i(b_{ik}) - F^_i(b_{i,k-1}))\\Big)
              \\quad\\text{s.t.}\\quad J_i(d) \\ge b_{i0} + \\sum_k \\delta_{ik} (b_{ik} - b_{i,k-1}),
              \\quad \\delta_{i,k+1} \\le \\delta_{ik}

    plus a binary ``y`` with ``delta_{i,k+1} <= y <= delta_{ik}`` only at the *convex* kinks
    (where the slope goes up). ``F^_i`` is non-decreasing, so the inequality linking ``J_i`` is
    exact at the optimum; inside a concave run of segments the LP fills the steeper segment
    first by itself, and a binary at the kink that ends a run forces the whole run to be full
    before the next run starts (through the chain), so the model's value is exactly ``F^_i``.

Both programs work in normalised returns ``(J_i - min_O J_i) / (max_O J_i - min_O J_i)``, so
slopes and breakpoint gaps do not depend on the reward scale.

Either way a completion then picks a Pareto-optimal point (leximin or utilitarian on
normalised returns) among those that keep every agent's term of the objective: ``J_i >=
J_i*`` at the optimum ``d*``, or only ``J_i >=`` the agent's largest sample when ``J_i*`` is
above it (its rank is 1 from there on), each up to :data:`COMPLETION_SLACK` of the samples'
tie tolerance. The objectives are non-decreasing in every ``J_i``, so this region lies in the
optimal set, and it is upward closed, so the completion is Pareto optimal. The solver's own objective
is ``diagnostics["objective"]``; the achieved Borda score under the empirical CDFs is
``report["borda"]`` (unweighted, like every rank in the report).

Example
-------
>>> import numpy as np
>>> from policyagg.mdp import TabularMDP
>>> from policyagg.problem import Problem
>>> from policyagg.sampling import sample_policy_returns
>>> problem = Problem(TabularMDP(np.ones((1, 3, 1)), gamma=0.9), np.eye(3)[:2, None, :])
>>> samples = sample_policy_returns(problem, 1000, rng=0)
>>> result = borda(problem, samples, solver="milp", breakpoints=16)
>>> result.diagnostics["solver"], bool(result.report["pareto_optimal"])
('milp', True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InfeasibleError
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.solvers.completion import COMPLETIONS, complete, range_widths, threshold_rows
from policyagg.solvers.occupancy import Rows, SolveLog, make_model, occupancy_program, utilities
from policyagg.solvers.registry import RuleCall, choice, integer, register_rule

SOLVERS = ("lp", "milp")
FALLBACKS = (None, "milp")
#: Relative MIP gap at which the MILP stops (HiGHS' default 1e-4 would leave up to
#: 1e-4 * n of Borda score on the table).
MIP_REL_GAP = 1e-7
#: Segments whose density is within this relative tolerance of the steepest tie for the mode
#: (the first one wins), so rounding cannot move the mode of an evenly spread sample.
MODE_TIE = 1e-9
#: The completion's floors sit this fraction of the samples' tie tolerance below the optimum's
#: returns: solver tolerances cannot make the region empty, and no agent loses a rank.
COMPLETION_SLACK = 0.2


@register_rule(
    "borda",
    needs_samples=True,
    options={
        "solver": choice(
            SOLVERS, help="lp: tangent LP on the concave region; milp: exact on the piecewise-linear CDFs"
        ),
        "breakpoints": integer(1, help="MILP: quantile intervals per agent"),
        "tangents": integer(1, help="LP: quantile intervals per agent (at most this many tangents)"),
        "fallback": choice(FALLBACKS, help="with solver='lp': solve the MILP when the concave region is empty"),
        "completion": choice(COMPLETIONS, help="how a Pareto-optimal policy is chosen among those keeping every rank"),
    },
)
def borda(
    call: RuleCall,
    *,
    solver: str = "lp",
    breakpoints: int = 32,
    tangents: int = 32,
    fallback: str | None = None,
    completion: str = "egalitarian",
) -> Result:
    """Maximise the weighted sum of the agents' ranks (module docstring: both formulations).

    Parameters
    ----------
    problem : Problem
    samples : ReturnSamples (N, n)
        Sampled returns defining each agent's CDF ``F_i``; required.
    solver : {"lp", "milp"}
        ``"lp"``: the paper's tangent LP on the region where every agent is at or above the
        mode of its return density; ``"milp"``: exact for the PL interpolation of ``F_i``.
    breakpoints : int >= 1
        MILP: quantile intervals ``K`` of each PL CDF (knots at the levels ``k / K``).
    tangents : int >= 1
        LP: quantile intervals of the smoothed CDF ``F~_i``, hence at most this many tangents
        per agent; it also sets the resolution of the mode estimate.
    fallback : {None, "milp"}
        With ``solver="lp"``: solve the MILP when the concave region is empty (recorded as
        ``diagnostics["fallback"]``) instead of raising :class:`InfeasibleError`.
    completion : {"egalitarian", "utilitarian"}
        How a Pareto-optimal point is chosen among those keeping every agent's optimal return.
    constraints, backend, time_limit
        As for every rule. A MILP that hits ``time_limit`` raises
        :class:`SolverTimeLimitError` carrying the incumbent.

    Returns
    -------
    Result
        ``diagnostics`` add ``solver`` (the one that produced ``d``), ``objective``,
        ``fallback``, and ``modes`` (LP) or ``n_binaries`` / ``mip_gap`` (MILP).
    """
    problem, samples, log, backend, time_limit = (
        call.problem,
        call.require_samples(),
        call.log,
        call.backend,
        call.time_limit,
    )
    extra: dict[str, Any] = {"fallback": None}
    if solver == "lp":
        lp, modes = _tangent_program(problem, samples, tangents)
        extra["modes"] = [float(m) if np.isfinite(m) else None for m in modes]  # None: indifferent agent
        try:
            solution = call.solve(lp)
            used, objective = "lp", solution.objective
        except InfeasibleError as exc:
            _check_feasible(problem, backend, time_limit, log)  # raises, naming the constraints, if they clash
            if fallback != "milp":
                raise InfeasibleError(
                    "borda (solver='lp'): the concave region is empty: no feasible policy gives every agent "
                    "a return at or above the mode of its return density (modes "
                    f"{', '.join(f'{m:.4g}' for m in modes)}), and the tangent LP is only "
                    'valid there; use `solver="milp"` (exact on the piecewise-linear CDFs) '
                    'or pass `fallback="milp"`'
                ) from exc
            extra["fallback"] = "milp"
    if solver == "milp" or extra["fallback"] == "milp":
        lp, constant = _incremental_program(problem, samples, breakpoints)
        solution = call.solve(lp, mip_rel_gap=MIP_REL_GAP)
        used, objective = "milp", solution.objective + constant
        extra |= {"n_binaries": int(np.count_nonzero(lp.integrality)) if lp.is_mip else 0, "mip_gap": solution.mip_gap}
    # every agent keeps its term of the optimum: J_i >= J_i*, or just the top sample where its rank is 1 already
    optimum = problem.reward_matrix @ solution.x[: problem.mdp.n_state_actions]
    floor = np.minimum(optimum, samples.sorted_values[:, -1]) - COMPLETION_SLACK * samples.tolerance
    region = threshold_rows(problem, np.arange(problem.n_agents), floor, "borda optimum")
    d = complete(problem, [region], how=completion, backend=backend, time_limit=time_limit, log=log)
    return call.finish(d, solver=used, objective=float(objective), **extra)


def _quantile_knots(problem: Problem, samples: ReturnSamples, levels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per agent ``(x, F)``: strictly increasing order statistics at the quantile levels
    ``k / levels`` (``k = 0..levels``), as *normalised* returns ``(v - min_O J_i) / (max_O J_i -
    min_O J_i)``, and the empirical CDF there; ties merged (module doc). Indifferent agents
    get no knots (their rank is 1 on all of ``O``)."""
    ranges = problem.require_ranges()
    N = samples.n_samples
    # k (N - 1) / levels is exact up to one rounding, so halves round to even as documented
    index = np.unique(np.rint(np.arange(levels + 1) * (N - 1) / levels).astype(np.int64))
    x = samples.sorted_values[:, index]  # (n, m)
    F = samples.cdf(x.T).T
    x = ranges.normalize(x.T).T
    knots = []
    for i in range(problem.n_agents):
        F_i, first = np.unique(F[i], return_index=True)
        knots.append((np.zeros(0), np.zeros(0)) if ranges.flat[i] else (x[i, first], F_i))
    return knots


def _upper_hull(x: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Indices of the concave envelope's vertices of the points ``(x, F)``, ``x`` increasing."""
    hull: list[int] = []
    for k in range(x.size):  # monotone chain over the knots (at most `tangents` + 1)
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (F[b] - F[a]) * (x[k] - x[a]) > (F[k] - F[a]) * (x[b] - x[a]):
                break  # b lies strictly above the chord a-k: keep it
            hull.pop()
        hull.append(k)
    return np.array(hull)


def _tangent_program(problem: Problem, samples: ReturnSamples, tangents: int):
    """The concave-region LP over columns ``[d, u, z]`` (``u_i`` = normalised ``J_i``) and the
    modes (in return units)."""
    C, c0 = utilities(problem, normalize=True)
    n, n_d = C.shape
    modes = np.full(n, -np.inf)  # normalised; indifferent agents: no region
    agent_parts: list[np.ndarray] = []
    slope_parts: list[np.ndarray] = []
    intercept_parts: list[np.ndarray] = []
    for i, (x, F) in enumerate(_quantile_knots(problem, samples, tangents)):
        if x.size <= 1:  # indifferent (no knots), or one sampled return: F~ is 1 from there on
            modes[i] = x[0] if x.size else -np.inf
            continue
        density = np.diff(F) / np.diff(x)
        j = int(np.flatnonzero(density >= density.max() * (1.0 - MODE_TIE))[0])
        modes[i] = x[j]
        hull = j + _upper_hull(x[j:], F[j:])
        s = np.diff(F[hull]) / np.diff(x[hull])
        agent_parts.append(np.full(s.size, i))
        slope_parts.append(s)
        intercept_parts.append(F[hull[:-1]] - s * x[hull[:-1]])
    agent = np.concatenate(agent_parts).astype(np.int64) if agent_parts else np.zeros(0, np.int64)
    slope, intercept = (np.concatenate(a) if a else np.zeros(0) for a in (slope_parts, intercept_parts))
    link = Rows(
        "borda returns", sp.hstack([sp.csr_array(C), -sp.eye_array(n), sp.csr_array((n, n))], format="csr"), -c0, -c0
    )
    t = np.arange(agent.size)
    cut = sp.csr_array(
        (
            np.concatenate([-slope, np.ones(t.size)]),
            (np.concatenate([t, t]), np.concatenate([n_d + agent, n_d + n + agent])),
        ),
        shape=(t.size, n_d + 2 * n),
    )
    tangent = Rows("borda tangents", cut, np.full(t.size, -np.inf), intercept)
    cost = np.concatenate([np.zeros(n_d + n), problem.weights])
    # the concave region u_i >= mode_i is the lower bound of the u columns
    lp = occupancy_program(
        problem,
        cost,
        name="borda (concave-region tangent LP)",
        maximize=True,
        extra_cols=2 * n,
        col_lower=np.concatenate([np.zeros(n_d), modes, np.zeros(n)]),
        col_upper=np.concatenate([np.full(n_d + n, np.inf), np.ones(n)]),
        rows=[link, tangent],
    )
    ranges = problem.require_ranges()
    finite = np.isfinite(modes)
    in_returns = np.full(n, np.nan)
    in_returns[finite] = ranges.lower[finite] + modes[finite] * ranges.width[finite]
    return lp, in_returns


def _incremental_program(problem: Problem, samples: ReturnSamples, breakpoints: int):
    """The incremental MILP over columns ``[d, delta, y]`` (breakpoints in normalised returns)
    and its objective constant."""
    C, c0 = utilities(problem, normalize=True)
    n, n_d = C.shape
    tie = samples.tolerance / range_widths(problem)
    base, start = np.full(n, -np.inf), np.ones(n)
    db_parts: list[np.ndarray] = []
    df_parts: list[np.ndarray] = []
    for i, (x, F) in enumerate(_quantile_knots(problem, samples, breakpoints)):
        if x.size:
            if x[0] > tie[i]:  # F^ = 0 at min_O J_i (normalised 0)
                x, F = np.concatenate([[0.0], x]), np.concatenate([[0.0], F])
            else:  # the smallest sample is min_O J_i up to ties
                x = np.concatenate([[min(x[0], 0.0)], x[1:]])
            base[i], start[i] = x[0], F[0]
        db_parts.append(np.diff(x))
        df_parts.append(np.diff(F))
    agent = np.repeat(np.arange(n), [a.size for a in db_parts])
    db, df = np.concatenate(db_parts), np.concatenate(df_parts)
    M = db.size
    # consecutive segments of one agent; a convex kink (slope goes up) needs a binary
    pair = np.flatnonzero(agent[:-1] == agent[1:])
    slope = df / db
    convex = pair[slope[pair + 1] > slope[pair]]
    concave = pair[slope[pair + 1] <= slope[pair]]
    B = convex.size
    n_cols = n_d + M + B
    link = Rows(
        "borda breakpoints",
        sp.hstack(
            [sp.csr_array(C), sp.csr_array((-db, (agent, np.arange(M))), shape=(n, M)), sp.csr_array((n, B))],
            format="csr",
        ),
        base - c0,
        np.full(n, np.inf),
    )
    y = n_d + M + np.arange(B)
    # rows: delta_{k+1} - delta_k <= 0 per concave kink; delta_{k+1} - y <= 0 and y - delta_k <= 0 per convex kink
    c, kink = concave.size, np.arange(B)
    n_order = c + 2 * B
    rows = np.concatenate([np.arange(c), np.arange(c), c + 2 * kink, c + 2 * kink, c + 2 * kink + 1, c + 2 * kink + 1])
    cols = np.concatenate([n_d + concave + 1, n_d + concave, n_d + convex + 1, y, y, n_d + convex])
    vals = np.repeat(np.tile([1.0, -1.0], 3), [c, c, B, B, B, B])
    order = Rows(
        "breakpoint order",
        sp.csr_array((vals, (rows, cols)), shape=(n_order, n_cols)),
        np.full(n_order, -np.inf),
        np.zeros(n_order),
    )
    cost = np.concatenate([np.zeros(n_d), problem.weights[agent] * df, np.zeros(B)])
    lp = occupancy_program(
        problem,
        cost,
        name="borda (incremental MILP)",
        maximize=True,
        extra_cols=M + B,
        col_upper=np.concatenate([np.full(n_d, np.inf), np.ones(M + B)]),
        rows=[link, order],
        integrality=np.concatenate([np.zeros(n_d + M, bool), np.ones(B, bool)]),
    )
    return lp, float(problem.weights @ start)


def _check_feasible(problem: Problem, backend: str, time_limit: float | None, log: SolveLog) -> None:
    """Raise the solver's :class:`InfeasibleError` (naming the culprit constraints) if the
    constrained occupancy polytope is empty."""
    lp = occupancy_program(problem, np.zeros(problem.mdp.n_state_actions), name="borda (feasibility)")
    log.add(make_model(lp, backend=backend, time_limit=time_limit).solve())
