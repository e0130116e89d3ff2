"""alpha-approval voting over the occupancy polytope.

Agent ``i`` approves ``d`` iff ``rank_i(d) >= alpha``, i.e. ``J_i(d) >= t_i = F_i^{-1}(alpha)``.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from solvers.completion import complete, finish, range_widths, require_samples, threshold_rows
from solvers.occupancy import make_model
from solvers.occupancy import Rows, SolveLog, occupancy_program, prepare

#: A binary at least this large counts as an approval when reading the MILP's solution.
BINARY_ROUNDING = 0.5


def approval(
    problem: Problem,
    samples: ReturnSamples | None = None,
    *,
    alpha: float = 0.9,
    completion: str = "utilitarian",
    constraints=None,
    backend: str = "highs",
    time_limit: float | None = None,
) -> Result:
    """Maximise the (weighted) number of approvers, then complete among the policies that
    keep that approving set.

    .. math:: \\max_{d \\in O,\\, x \\in \\{0,1\\}^n} \\sum_i w_i x_i \\quad\\text{s.t.}\\quad
              J_i(d) \\ge t_i - M_i (1 - x_i), \\qquad M_i = \\max(t_i - \\min_O J_i, 0)

    The big-M is exact: with ``x_i = 0`` the row reads ``J_i(d) >= min_O J_i``, true on ``O``.
    ``alpha = 0`` makes every agent approve every policy, so the rule reduces to its
    completion (utilitarian on normalised returns by default). ``alpha = 1`` asks for each
    agent's best sample; an agent's own optimum reaches it, so at least one agent approves.
    """
    started = time.perf_counter()
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise InvalidProblemError(f"`alpha` must be a number in [0, 1]; got {alpha!r}")
    problem = prepare(problem, constraints, backend)
    samples = require_samples(samples, problem, "approval")
    log = SolveLog(backend)
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    lower = problem.ranges.lower
    thresholds = np.maximum(samples.threshold(alpha), lower)  # t_i <= min_O J_i: always approved
    big_m = thresholds - lower
    scale = 1.0 / range_widths(problem)  # rows in units of each agent's return range
    A = sp.diags_array(scale) @ sp.hstack([sp.csr_array(problem.reward_matrix), -sp.diags_array(big_m)], format="csr")
    rows = Rows("approval thresholds", sp.csr_array(A), lower * scale, np.full(n, np.inf))
    lp = occupancy_program(
        problem, np.concatenate([np.zeros(n_d), problem.weights]), name=f"{alpha:g}-approval", maximize=True,
        extra_cols=n, col_upper=np.concatenate([np.full(n_d, np.inf), np.ones(n)]), rows=[rows],
        integrality=np.concatenate([np.zeros(n_d, bool), np.ones(n, bool)]),
    )
    solution = log.add(make_model(lp, backend=backend, time_limit=time_limit).solve())
    approvers = np.flatnonzero(solution.x[n_d:] >= BINARY_ROUNDING)
    region = [threshold_rows(problem, approvers, thresholds[approvers], "approving set")]
    d = complete(problem, region, how=completion, backend=backend, time_limit=time_limit, log=log)
    return finish(problem, d, rule="approval", samples=samples, options={"alpha": alpha, "completion": completion},
                  log=log, started=started, time_limit=time_limit,
                  approvers=approvers.tolist(), approval_weight=float(problem.weights[approvers].sum()),
                  thresholds=thresholds.tolist())
