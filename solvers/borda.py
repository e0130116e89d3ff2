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

    **Adaptive knots** (``refine``, default :data:`REFINE_ROUNDS` rounds): the global MILP on the
    ``K`` quantile knots leaves agents on a knot, where ``F^_i = F_i`` but the neighbouring
    segments still hold ``~N/K`` samples (agents stopped at rank ``31/32``). Each round adds up
    to :data:`REFINE_SPLIT` order statistics inside every segment that contains an agent's return
    (both neighbours on a knot) and re-solves the MILP *inside the window* of those segments with
    the refined knots (fast: a few binaries). It stops when no such segment holds a sample inside,
    i.e. next to every agent's return ``F^_i`` runs between consecutive sample values and differs
    from ``F_i`` by at most one step (``1/N`` without ties), or after ``refine`` rounds
    (``diagnostics["refine_converged"]`` is then False). The first solve is global, the
    refinement local to its window.

Both programs work in normalised returns ``(J_i - min_O J_i) / (max_O J_i - min_O J_i)``, so
slopes and breakpoint gaps do not depend on the reward scale.

Either way the solver's returns ``J°`` are first projected onto ``O`` (the nearest occupancy in
normalised return space, an LP: a MILP meets ``O`` only to its feasibility tolerance), and a
completion then picks a Pareto-optimal point (leximin or utilitarian on normalised returns)
among those that keep every agent's rank there: ``J_i >= min(v_i, J°_i)`` with ``v_i`` the
largest sample value at or below the projected ``J°_i`` (up to the samples' tie tolerance).
The projected point meets these floors, so the region is not empty, and the completion's
margin (:func:`~policyagg.solvers.completion.complete`) keeps it above them where the region
has an interior. No agent's rank, reported or counted strictly, falls below its rank at the
projected point. The region is upward closed, so the completion is Pareto optimal.
The solver's own objective is ``diagnostics["objective"]``; the projected returns are
``diagnostics["solver_returns"]``; the achieved Borda score under the empirical CDFs is
``report["borda"]`` (unweighted, like every rank in the report).

Defaults: ``solver="lp"`` stays the default (the paper's rule; on the paper's attention
instances with the policy measure it reaches rank 1 for every agent, like the MILP, in about
5 s). ``refine`` is on by default for the MILP: on an attention instance (experiment (b), 5
agents, optimal-mixture measure, 19,800 samples) it raised ``report["borda"]`` from 4.9683
(``K = 32``) to 4.9928 in 12 s, above ``K = 512`` (4.9925, 31 s).

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
#: Default cap on the MILP's adaptive refinement rounds (``refine``).
REFINE_ROUNDS = 8
#: A refined segment gets up to this many new knots (order statistics spread evenly over the
#: samples inside it), so a segment holding ``m`` samples is resolved in about ``log_8 m`` rounds.
REFINE_SPLIT = 8


@register_rule(
    "borda",
    needs_samples=True,
    options={
        "solver": choice(
            SOLVERS, help="lp: tangent LP on the concave region; milp: exact on the piecewise-linear CDFs"
        ),
        "breakpoints": integer(1, help="MILP: quantile intervals per agent (the starting knots)"),
        "refine": integer(0, help="MILP: most rounds of adaptive knots around the solution (0: none)"),
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
    refine: int = REFINE_ROUNDS,
) -> Result:
    """Maximise the weighted sum of the agents' ranks (module docstring: both formulations).

    Called as ``borda(problem, samples, **options)``: the sampled returns ``(N, n)`` define
    each agent's CDF ``F_i`` and are required. ``constraints``, ``backend`` and ``time_limit``
    are as for every rule; a MILP that hits ``time_limit`` raises
    :class:`SolverTimeLimitError` carrying the incumbent.

    Parameters
    ----------
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
    completion : {"egalitarian", "utilitarian", "utilitarian-raw"}
        How a Pareto-optimal point is chosen among those keeping every agent's rank.
    refine : int >= 0
        MILP: at most this many rounds of adaptive knots around the solution (module doc);
        0 solves on the ``breakpoints`` quantile knots only (exact for that PL interpolation).

    Returns
    -------
    Result
        ``diagnostics`` add ``solver`` (the one that produced ``d``), ``objective``,
        ``fallback``, ``solver_returns`` (the solver's returns projected onto ``O``), and
        ``modes`` (LP) or ``n_binaries`` / ``mip_gap`` / ``refine_rounds`` /
        ``refine_converged`` / ``n_knots`` / ``pl_error`` (MILP; ``pl_error`` is
        ``max_i |F^_i(J_i) - F_i(J_i)|`` at the solution).
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
        solution, objective, milp_extra = _refined_milp(call, problem, samples, breakpoints, refine)
        used = "milp"
        extra |= milp_extra
    # the solver's point, projected onto O (a MILP meets O only to its feasibility tolerance)
    point = _project(
        problem, problem.reward_matrix @ solution.x[: problem.mdp.n_state_actions], backend, time_limit, log
    )
    floor = _sample_floors(samples, point)
    region = threshold_rows(problem, np.arange(problem.n_agents), floor, "borda optimum")
    d = complete(problem, [region], how=completion, backend=backend, time_limit=time_limit, log=log)
    return call.finish(d, solver=used, objective=float(objective), solver_returns=[float(v) for v in point], **extra)


def _refined_milp(
    call: RuleCall, problem: Problem, samples: ReturnSamples, breakpoints: int, refine: int
) -> tuple[Any, float, dict[str, Any]]:
    """Solve the incremental MILP on ``breakpoints`` quantile knots over all of ``O``, then at
    most ``refine`` times: refine the knots around the solution (:func:`_refine_knots`) and
    re-solve inside the *window* of the segments that held it (:func:`_windows`), with the
    refined knots there. The first solve is global; the refinement is local to its window.

    Returns the last solution, its objective (the PL objective on the refined knots) and the
    diagnostics ``n_binaries`` and ``mip_gap`` (last solve), ``refine_rounds`` (re-solves
    done), ``refine_converged`` (next to every agent's return the PL CDF runs between
    consecutive sample values), ``n_knots`` and ``pl_error`` (``max_i |F^_i(J_i) - F_i(J_i)|``
    at the solution, ``F_i`` the empirical CDF)."""
    knots = [_merge_ties(samples, i, k) for i, k in enumerate(_initial_knots(samples, breakpoints))]
    ranges = problem.require_ranges()
    n_d = problem.mdp.n_state_actions
    lp, constant = _incremental_program(problem, _incremental_curves(problem, samples, knots))
    solution = call.solve(lp, mip_rel_gap=MIP_REL_GAP, incumbent=True)
    returns = problem.reward_matrix @ solution.x[:n_d]
    rounds, converged = 0, False
    while True:
        refined = _refine_knots(problem, samples, knots, returns)
        converged = all(np.array_equal(a, b) for a, b in zip(refined, knots))
        if converged or rounds >= refine:
            break
        u = np.where(ranges.flat, 0.0, (returns - ranges.lower) / range_widths(problem))
        tie = samples.tolerance / range_widths(problem)
        curves, cap = _windows(
            _incremental_curves(problem, samples, knots), _incremental_curves(problem, samples, refined), u, tie
        )
        lp, constant = _incremental_program(problem, curves, cap)
        solution = call.solve(lp, mip_rel_gap=MIP_REL_GAP, incumbent=True)
        returns = problem.reward_matrix @ solution.x[:n_d]
        knots, rounds = refined, rounds + 1
    extra = {
        "n_binaries": int(np.count_nonzero(lp.integrality)) if lp.is_mip else 0,
        "mip_gap": solution.mip_gap,
        "refine_rounds": rounds,
        "refine_converged": bool(converged),
        "n_knots": int(sum(k.size for k in knots)),
        "pl_error": _pl_error(problem, samples, knots, returns),
    }
    return solution, solution.objective + constant, extra


def _windows(
    coarse: list[tuple[np.ndarray, np.ndarray]],
    fine: list[tuple[np.ndarray, np.ndarray]],
    u: np.ndarray,
    tie: np.ndarray,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per agent the window ``[lo_i, hi_i]`` of the ``coarse`` segments that contain its
    normalised return ``u_i`` (both neighbours on a knot; ``[x_last, inf)`` above the last
    knot), and the ``fine`` curve restricted to it. Returns the restricted curves and the caps
    ``hi_i + tie_i`` (``inf`` at the top). The window contains the point the coarse curves were
    solved at, and the fine knots include the coarse ones, so ``lo_i`` and ``hi_i`` are knots of both."""
    curves, cap = [], np.full(u.size, np.inf)
    for i, ((x, _), (xf, Ff)) in enumerate(zip(coarse, fine)):
        if x.size == 0:  # indifferent
            curves.append((xf, Ff))
            continue
        k = _touching_segments(x, u[i], tie[i])
        if u[i] > x[-1] + tie[i] or x.size == 1 or k.size == 0 and u[i] > x[0]:
            lo, hi = x[-1], np.inf
        elif k.size == 0:  # below the first knot (up to tolerance): the first segment
            lo, hi = x[0], x[1]
        else:
            lo, hi = x[k[0]], x[k[-1] + 1]
        keep = (xf >= lo) & (xf <= hi)
        curves.append((xf[keep], Ff[keep]))
        cap[i] = hi + tie[i]
    return curves, cap


def _project(problem: Problem, target: np.ndarray, backend: str, time_limit: float | None, log: SolveLog) -> np.ndarray:
    """Returns of the occupancy nearest to ``target`` in normalised return space:

    .. math:: \\min_{d \\in O,\\, t} t \\quad\\text{s.t.}\\quad |J_i(d) - J^\\circ_i| \\le t\\,(\\max_O J_i - \\min_O J_i)

    (``O`` with the problem's constraints). A solver's point meets ``O`` only to its feasibility
    tolerance; floors built from the projection are met by a point of ``O``."""
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    scale = 1.0 / range_widths(problem)
    R = sp.csr_array(problem.reward_matrix * scale[:, None])
    ones = np.ones((n, 1))
    band = Rows(
        "distance to the solver's returns",
        sp.vstack([sp.hstack([R, ones]), sp.hstack([R, -ones])], format="csr"),
        np.concatenate([target * scale, np.full(n, -np.inf)]),
        np.concatenate([np.full(n, np.inf), target * scale]),
    )
    cost = np.zeros(n_d + 1)
    cost[-1] = 1.0
    lp = occupancy_program(problem, cost, name="borda (projection onto O)", maximize=False, extra_cols=1, rows=[band])
    solution = log.add(make_model(lp, backend=backend, time_limit=time_limit).solve())
    return problem.reward_matrix @ solution.x[:n_d]


def _sample_floors(samples: ReturnSamples, returns: np.ndarray) -> np.ndarray:
    """Per agent ``min(v_i, J_i)`` with ``v_i`` the largest sample value ``<= J_i`` up to the
    samples' tie tolerance (``-inf`` if none). ``J_i(d) >=`` it keeps the agent's rank at ``J``,
    both as reported (ties within tolerance count) and counted strictly (``#{k : V_ki <= J_i}``)."""
    n = samples.n_agents
    below = np.array([_counts(samples, i, returns[i : i + 1])[0] for i in range(n)])
    floor = np.full(n, -np.inf)
    has = below > 0
    floor[has] = np.minimum(samples.sorted_values[np.flatnonzero(has), below[has] - 1], returns[has])
    return floor


def _initial_knots(samples: ReturnSamples, levels: int) -> list[np.ndarray]:
    """Per agent the indices (into ``samples.sorted_values[i]``) of the order statistics at the
    quantile levels ``k / levels``, ``k = 0..levels`` (the sample minimum and maximum included)."""
    N = samples.n_samples
    # k (N - 1) / levels is exact up to one rounding, so halves round to even as documented
    index = np.unique(np.rint(np.arange(levels + 1) * (N - 1) / levels).astype(np.int64))
    return [index.copy() for _ in range(samples.n_agents)]


def _counts(samples: ReturnSamples, i: int, values: np.ndarray) -> np.ndarray:
    """``N F_i(v)``: samples of agent ``i`` at or below ``v`` (ties within the samples' tolerance)."""
    return np.searchsorted(samples.sorted_values[i], values + samples.tolerance[i], side="right")


def _merge_ties(samples: ReturnSamples, i: int, index: np.ndarray) -> np.ndarray:
    """Sorted knot indices of agent ``i`` with knots of equal ``F_i`` merged into the first."""
    index = np.unique(index)
    _, first = np.unique(_counts(samples, i, samples.sorted_values[i, index]), return_index=True)
    return index[first]


def _knot_curves(
    problem: Problem, samples: ReturnSamples, knots: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per agent ``(x, F)``: the knots as *normalised* returns ``(v - min_O J_i) / (max_O J_i -
    min_O J_i)`` (strictly increasing) and the empirical CDF there. Indifferent agents get no
    knots (their rank is 1 on all of ``O``)."""
    ranges = problem.require_ranges()
    curves = []
    for i, index in enumerate(knots):
        if ranges.flat[i]:
            curves.append((np.zeros(0), np.zeros(0)))
            continue
        v = samples.sorted_values[i, index]
        curves.append(((v - ranges.lower[i]) / ranges.width[i], _counts(samples, i, v) / samples.n_samples))
    return curves


def _quantile_knots(problem: Problem, samples: ReturnSamples, levels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_knot_curves` of the quantile knots at the levels ``k / levels`` (ties merged)."""
    index = [_merge_ties(samples, i, k) for i, k in enumerate(_initial_knots(samples, levels))]
    return _knot_curves(problem, samples, index)


def _touching_segments(x: np.ndarray, value: float, tie: float) -> np.ndarray:
    """Indices ``k`` of the segments ``[x_k, x_{k+1}]`` that contain ``value`` (up to ``tie``):
    one inside a segment, both neighbours on a knot."""
    k = np.arange(x.size - 1)
    return k[(x[:-1] - tie <= value) & (value <= x[1:] + tie)]


def _refine_knots(
    problem: Problem, samples: ReturnSamples, knots: list[np.ndarray], returns: np.ndarray
) -> list[np.ndarray]:
    """Knots refined around ``returns``: every segment that contains agent ``i``'s return
    (both neighbours when it sits on a knot) and still holds samples strictly inside gets up to
    :data:`REFINE_SPLIT` of them as new knots, spread evenly. Unchanged knots mean that next to
    every agent's return the PL CDF runs between consecutive sample values, where it differs from
    the empirical CDF by at most one step (``1/N`` without ties)."""
    ranges = problem.require_ranges()
    refined = []
    for i, index in enumerate(knots):
        if ranges.flat[i] or index.size < 2:
            refined.append(index)
            continue
        v = samples.sorted_values[i]
        x = v[index]
        new = [index]
        for k in _touching_segments(x, returns[i], samples.tolerance[i]):
            lo = int(_counts(samples, i, x[k : k + 1])[0])  # first sample above knot k's ties
            hi = int(index[k + 1])  # knot k + 1 (or a tie of it)
            if hi > lo:
                new.append(np.unique(np.rint(np.linspace(lo, hi - 1, min(REFINE_SPLIT, hi - lo))).astype(np.int64)))
        refined.append(_merge_ties(samples, i, np.concatenate(new)) if len(new) > 1 else index)
    return refined


def _pl_error(problem: Problem, samples: ReturnSamples, knots: list[np.ndarray], returns: np.ndarray) -> float:
    """``max_i |F^_i(J_i) - F_i(J_i)|``: the MILP's PL CDF against the empirical CDF."""
    ranks = samples.cdf(returns)
    ranges = problem.require_ranges()
    worst = 0.0
    for i, (x, F) in enumerate(_incremental_curves(problem, samples, knots)):
        if x.size:
            u = (returns[i] - ranges.lower[i]) / ranges.width[i]
            worst = max(worst, abs(float(np.interp(u, x, F)) - float(ranks[i])))
    return worst


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


def _incremental_curves(
    problem: Problem, samples: ReturnSamples, knots: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The MILP's PL CDFs ``F^_i`` per agent as ``(x, F)`` in normalised returns: the knots,
    with ``F^_i(min_O J_i) = 0`` in front when the smallest sample is above ``min_O J_i``."""
    tie = samples.tolerance / range_widths(problem)
    curves = []
    for i, (x, F) in enumerate(_knot_curves(problem, samples, knots)):
        if x.size:
            if x[0] > tie[i]:  # F^ = 0 at min_O J_i (normalised 0)
                x, F = np.concatenate([[0.0], x]), np.concatenate([[0.0], F])
            else:  # the smallest sample is min_O J_i up to ties
                x = np.concatenate([[min(x[0], 0.0)], x[1:]])
        curves.append((x, F))
    return curves


def _incremental_program(problem: Problem, curves: list[tuple[np.ndarray, np.ndarray]], cap: np.ndarray | None = None):
    """The incremental MILP over columns ``[d, delta, y]`` for the PL functions ``curves`` (per
    agent ``(x, F)`` in normalised returns, :func:`_incremental_curves`), and its objective
    constant. ``cap`` (normalised, ``inf`` for none) bounds each ``u_i`` from above (a window)."""
    C, c0 = utilities(problem, normalize=True)
    n, n_d = C.shape
    base, start = np.full(n, -np.inf), np.ones(n)
    db_parts: list[np.ndarray] = []
    df_parts: list[np.ndarray] = []
    for i, (x, F) in enumerate(curves):
        if x.size:
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
    window = Rows(
        "borda window",
        sp.hstack([sp.csr_array(C), sp.csr_array((n, M + B))], format="csr"),
        np.full(n, -np.inf),
        (np.full(n, np.inf) if cap is None else cap) - c0,
    )
    cost = np.concatenate([np.zeros(n_d), problem.weights[agent] * df, np.zeros(B)])
    lp = occupancy_program(
        problem,
        cost,
        name="borda (incremental MILP)",
        maximize=True,
        extra_cols=M + B,
        col_upper=np.concatenate([np.full(n_d, np.inf), np.ones(M + B)]),
        rows=[link, order] + ([window] if cap is not None else []),
        integrality=np.concatenate([np.zeros(n_d + M, bool), np.ones(B, bool)]),
    )
    return lp, float(problem.weights @ start)


def _check_feasible(problem: Problem, backend: str, time_limit: float | None, log: SolveLog) -> None:
    """Raise the solver's :class:`InfeasibleError` (naming the culprit constraints) if the
    constrained occupancy polytope is empty."""
    lp = occupancy_program(problem, np.zeros(problem.mdp.n_state_actions), name="borda (feasibility)")
    log.add(make_model(lp, backend=backend, time_limit=time_limit).solve())
