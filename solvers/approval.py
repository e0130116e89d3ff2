"""alpha-approval voting over the occupancy polytope.

Agent ``i`` approves ``d`` iff ``rank_i(d) >= alpha``, i.e. ``J_i(d) >= t_i = F_i^{-1}(alpha)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.solvers.completion import COMPLETIONS, complete, range_widths, threshold_rows
from policyagg.solvers.lp import LinearProgram
from policyagg.solvers.lp import make_model as make_lp_model
from policyagg.solvers.occupancy import Rows, SolveLog, decomposes, make_model, occupancy_program
from policyagg.solvers.registry import RuleCall, choice, number, register_rule

#: A binary at least this large counts as an approval when reading the MILP's solution.
BINARY_ROUNDING = 0.5


@register_rule(
    "approval",
    needs_samples=True,
    options={
        "alpha": number(0.0, 1.0, help="agent i approves d iff rank_i(d) >= alpha"),
        "completion": choice(
            COMPLETIONS, help="how a Pareto-optimal policy is chosen among those keeping the approvers"
        ),
    },
)
def approval(call: RuleCall, *, alpha: float = 0.9, completion: str = "utilitarian") -> Result:
    """Maximise the (weighted) number of approvers, then complete among the policies that
    keep that approving set.

    .. math:: \\max_{d \\in O,\\, x \\in \\{0,1\\}^n} \\sum_i w_i x_i \\quad\\text{s.t.}\\quad
              J_i(d) \\ge t_i - M_i (1 - x_i), \\qquad M_i = \\max(t_i - \\min_O J_i, 0)

    The big-M is exact: with ``x_i = 0`` the row reads ``J_i(d) >= min_O J_i``, true on ``O``.
    ``alpha = 0`` makes every agent approve every policy, so the rule reduces to its
    completion (utilitarian on normalised returns by default). ``alpha = 1`` asks for each
    agent's best sample; an agent's own optimum reaches it, so at least one agent approves.
    """
    problem, samples, log = call.problem, call.require_samples(), call.log
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    lower = problem.require_ranges().lower
    thresholds = np.maximum(samples.threshold(alpha), lower)  # t_i <= min_O J_i: always approved
    big_m = thresholds - lower
    scale = 1.0 / range_widths(problem)  # rows in units of each agent's return range
    searched = {}
    if decomposes(_margin_program(problem, thresholds), call.backend):
        approvers, searched = _approvers_by_cuts(problem, thresholds, log, call.time_limit)
    else:
        A = sp.diags_array(scale) @ sp.hstack(
            [sp.csr_array(problem.reward_matrix), -sp.diags_array(big_m)], format="csr"
        )
        rows = Rows("approval thresholds", sp.csr_array(A), lower * scale, np.full(n, np.inf))
        lp = occupancy_program(
            problem,
            np.concatenate([np.zeros(n_d), problem.weights]),
            name=f"{alpha:g}-approval",
            maximize=True,
            extra_cols=n,
            col_upper=np.concatenate([np.full(n_d, np.inf), np.ones(n)]),
            rows=[rows],
            integrality=np.concatenate([np.zeros(n_d, bool), np.ones(n, bool)]),
        )
        approvers = np.flatnonzero(call.solve(lp).x[n_d:] >= BINARY_ROUNDING)
    region = [threshold_rows(problem, approvers, thresholds[approvers], "approving set")]
    d = complete(problem, region, how=completion, backend=call.backend, time_limit=call.time_limit, log=log)
    return call.finish(
        d,
        approvers=approvers.tolist(),
        approval_weight=float(problem.weights[approvers].sum()),
        thresholds=thresholds.tolist(),
        **searched,
    )


#: A margin ``s* >= -FEASIBILITY_TOL`` (in units of each agent's return range) counts as feasible.
FEASIBILITY_TOL = 1e-9
#: A threshold row with a dual above this belongs to the infeasible core of a candidate set.
CORE_DUAL_TOL = 1e-9


def _margin_program(problem: Problem, thresholds):
    """``max s`` s.t. ``(J_i(d) - t_i) / width_i >= s`` for every agent, ``s <= 1`` (rows switched off with -inf)."""
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    width = range_widths(problem)
    rows = Rows(
        "approval thresholds",
        sp.hstack([sp.csr_array(problem.reward_matrix / width[:, None]), -np.ones((n, 1))], format="csr"),
        thresholds / width,
        np.full(n, np.inf),
    )
    cost = np.zeros(n_d + 1)
    cost[-1] = 1.0
    return occupancy_program(
        problem,
        cost,
        name="approval (feasibility of an approving set)",
        maximize=True,
        extra_cols=1,
        col_lower=np.concatenate([np.zeros(n_d), [-np.inf]]),
        col_upper=np.concatenate([np.full(n_d, np.inf), [1.0]]),
        rows=[rows],
    )


def _approvers_by_cuts(problem: Problem, thresholds, log: SolveLog, time_limit):
    """The approval MILP solved exactly without binaries over ``O`` (combinatorial Benders).

    A set ``S`` of agents can all approve iff ``max_{d in O} min_{i in S} (J_i(d) - t_i) / width_i >= 0``
    (one LP, solved by column generation on large MDPs). Feasible sets are closed under
    subsets. Loop: a small pure-binary MILP proposes the heaviest ``S`` that contains no
    known infeasible core; if ``S`` is feasible it is optimal (every feasible set satisfies
    every cut), otherwise the rows with non-zero duals form an infeasible core ``T`` (the LP
    restricted to ``T`` has the same optimum ``s* < 0``) and ``sum_{i in T} x_i <= |T| - 1``
    is added.
    """
    n, w = problem.n_agents, problem.weights
    program = _margin_program(problem, thresholds)
    rows = program.row_families[-1][1] + np.arange(n)
    width = range_widths(problem)
    model = make_model(program, backend="highs", time_limit=time_limit)
    cuts: list[np.ndarray] = []
    checked = 0
    while True:
        if cuts:
            A = np.zeros((len(cuts), n))
            for k, core in enumerate(cuts):
                A[k, core] = 1.0
            lp = LinearProgram.build(
                w,
                A_ub=A,
                b_ub=A.sum(axis=1) - 1.0,
                bounds=(0, 1),
                integrality=np.ones(n, bool),
                maximize=True,
                name="approval (approving set)",
            )
            x = make_lp_model(lp, backend="highs", time_limit=time_limit).solve().x
            chosen = x >= BINARY_ROUNDING
        else:
            chosen = np.ones(n, bool)
        checked += 1
        model.set_row_bounds(rows, np.where(chosen, thresholds / width, -np.inf), np.full(n, np.inf))
        solution = log.add(model.solve())
        if solution.objective >= -FEASIBILITY_TOL:
            return np.flatnonzero(chosen), {"approval_sets_checked": checked, "approval_cuts": len(cuts)}
        duals = np.abs(solution.row_duals[rows]) if solution.row_duals is not None else np.ones(n)
        core = np.flatnonzero(chosen & (duals > CORE_DUAL_TOL))
        cuts.append(core if core.size else np.flatnonzero(chosen))
