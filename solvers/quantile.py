"""Quantile fairness: the max-quantile rule.

``q*`` is the largest ``q`` on the sample grid ``{0, 1/N, ..., 1}`` such that some ``d``
gives every agent ``rank_i(d) >= q``, i.e. ``J_i(d) >= t_i(q) = F_i^{-1}(q)`` for all ``i``.
"""

from __future__ import annotations

import numpy as np

from policyagg.result import Result
from policyagg.solvers.completion import COMPLETIONS, complete, margin_program, range_widths, threshold_rows
from policyagg.solvers.occupancy import make_model
from policyagg.solvers.registry import RuleCall, choice, register_rule

#: The feasibility margin ``s*`` (in units of each agent's return range) counted as >= 0.
FEASIBILITY_TOL = 1e-9


@register_rule(
    "max_quantile",
    needs_samples=True,
    options={
        "completion": choice(COMPLETIONS, help="how a Pareto-optimal policy is chosen once every agent reaches q*"),
    },
)
def max_quantile(call: RuleCall, *, completion: str = "egalitarian") -> Result:
    """Binary search for ``q*`` with one LP whose right-hand sides change (warm starts),
    then completion inside ``{d : J_i(d) >= t_i(q*) for all i}``.

    Each step solves the always-feasible margin LP

    .. math:: s^*(k) = \\max_{d \\in O,\\, s} s \\quad\\text{s.t.}\\quad (J_i(d) - t_i(k/N)) / (\\max_O J_i - \\min_O J_i) \\ge s

    and grid point ``k`` is feasible iff ``s*(k) >= 0``; feasibility is monotone in ``k``.
    Under the uniform measure on ``O`` the centroid gives every agent rank ``>= 1/e``
    (Gruenbaum), so ``q* >= 1/e`` up to sampling error.
    """
    problem, samples, log, time_limit = call.problem, call.require_samples(), call.log, call.time_limit
    n, N = problem.n_agents, samples.n_samples
    ranges = problem.require_ranges()
    width = range_widths(problem)  # rows in units of each agent's return range
    lp = margin_program(
        problem,
        problem.reward_matrix / width[:, None],
        ranges.lower / width,
        name="max-quantile",
        family="quantile thresholds",
        cap=1.0,
    )
    rows = lp.row_families[-1][1] + np.arange(n)
    model = make_model(lp, backend=call.backend, time_limit=time_limit)

    def thresholds(k: int) -> np.ndarray:
        return samples.sorted_values[:, k - 1] if k > 0 else ranges.lower

    def feasible(k: int) -> bool:
        model.set_row_bounds(rows, thresholds(k) / width, np.full(n, np.inf))
        return log.add(model.solve()).objective >= -FEASIBILITY_TOL

    low, high = 0, N  # invariant: low feasible; answer in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if feasible(mid):
            low = mid
        else:
            high = mid - 1
    region = [threshold_rows(problem, np.arange(n), thresholds(low), "quantile thresholds")]
    d = complete(problem, region, how=completion, backend=call.backend, time_limit=time_limit, log=log)
    return call.finish(d, q_star=low / N, thresholds=thresholds(low).tolist())
