"""Welfare baselines: utilitarian and egalitarian (leximin) rules.

Utilities are raw returns ``u_i = J_i(d)`` or normalised returns (``normalize=True``).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.result import Result, make_result
from policyagg.samples import ReturnSamples
from solvers.lp import make_model
from solvers.occupancy import Rows, SolveLog, occupancy_program, prepare, utilities

#: Leximin fixes an agent's level ``v`` as the floor ``u_i >= v - LEVEL_SLACK * max(1, |v|)``
#: so that solver tolerances never make a later round infeasible.
LEVEL_SLACK = 1e-7
#: A dual value above this marks an agent's floor as binding in every optimum.
DUAL_TOL = 1e-9


def utilitarian(
    problem: Problem,
    samples: ReturnSamples | None = None,
    *,
    normalize: bool = False,
    constraints: LinearConstraints | None = None,
    backend: str = "highs",
    time_limit: float | None = None,
) -> Result:
    """Maximise weighted welfare over the (constrained) occupancy polytope.

    .. math:: \\max_{d \\in O} \\sum_i w_i u_i(d)
    """
    started = time.perf_counter()
    problem = prepare(problem, constraints, backend)
    C, _ = utilities(problem, normalize)
    lp = occupancy_program(problem, problem.weights @ C, name="utilitarian", maximize=True)
    log = SolveLog(backend)
    solution = log.add(make_model(lp, backend=backend, time_limit=time_limit).solve())
    diagnostics = log.as_dict() | {"wall_time": time.perf_counter() - started}
    return make_result(problem, solution.x, rule="utilitarian", samples=samples,
                       options={"normalize": normalize, "backend": backend}, diagnostics=diagnostics)


def egalitarian(
    problem: Problem,
    samples: ReturnSamples | None = None,
    *,
    normalize: bool = False,
    constraints: LinearConstraints | None = None,
    backend: str = "highs",
    time_limit: float | None = None,
) -> Result:
    """Leximin: lexicographically maximise the sorted entitlement levels ``u_i / w_i``.

    Round ``k`` solves

    .. math:: \\max_{d \\in O,\\, t} t \\quad \\text{s.t.}\\quad u_i(d) \\ge w_i t
              \\;(i \\text{ free}),\\quad u_i(d) \\ge w_i v_i \\;(i \\text{ fixed})

    and fixes every free agent whose floor is binding in all optima (non-zero dual, or,
    without duals, an agent that cannot exceed ``t`` on the optimal face). With weights the
    utilities must be normalised: raw returns can be negative, where ``u_i / w_i`` would
    reverse what a weight means.
    """
    started = time.perf_counter()
    if not normalize and not np.allclose(problem.weights, problem.weights[0]):
        raise InvalidProblemError(
            "egalitarian with unequal `weights` needs `normalize=True`: on raw returns (which may "
            "be negative) the entitlement u_i / w_i reverses the meaning of a weight"
        )
    problem = prepare(problem, constraints, backend)
    d, log, levels = leximin(problem, *utilities(problem, normalize), backend=backend, time_limit=time_limit)
    diagnostics = log.as_dict() | {"wall_time": time.perf_counter() - started, "levels": levels.tolist()}
    return make_result(problem, d, rule="egalitarian", samples=samples,
                       options={"normalize": normalize, "backend": backend}, diagnostics=diagnostics)


def leximin(problem: Problem, C, c0, *, rows: list[Rows] = (), backend="highs", time_limit=None, active=None):
    """Leximin of ``u = C @ d + c0`` (entitlements ``u_i / w_i``) over the occupancy LP.

    ``rows`` are extra row families over the ``d`` columns only (a completion step uses them
    to stay inside a rule's optimal set). ``active`` masks the agents that take part
    (default: all). Returns ``(d, log, levels)``
    where ``levels[i]`` is the level at which agent ``i`` was fixed (NaN if not active).

    Columns: ``d`` (S*A), one level ``t_i`` per agent, the common level ``t``.
    Rows: ``C_i d - w_i t_i >= -c0_i`` ("agent floor") and ``t_i - t >= 0`` ("leximin level").
    """
    n, n_d = C.shape
    w = problem.weights
    active = np.ones(n, bool) if active is None else np.asarray(active, bool)
    n_cols = n_d + n + 1
    eye = sp.eye_array(n, format="csr")
    floor = Rows("agent floor", sp.hstack([sp.csr_array(C), -sp.diags_array(w), sp.csr_array((n, 1))], format="csr"),
                 -c0, np.full(n, np.inf))
    level = Rows("leximin level", sp.hstack([sp.csr_array((n, n_d)), eye, -np.ones((n, 1))], format="csr"),
                 np.where(active, 0.0, -np.inf), np.full(n, np.inf))
    widened = [Rows(r.name, sp.hstack([r.A, sp.csr_array((r.A.shape[0], n + 1))], format="csr"), r.lower, r.upper)
               for r in rows]
    cost = np.zeros(n_cols)
    cost[-1] = 1.0
    lp = occupancy_program(problem, cost, name="egalitarian (leximin)", maximize=True, extra_cols=n + 1,
                           col_lower=np.concatenate([np.zeros(n_d), np.full(n + 1, -np.inf)]),
                           rows=[*widened, floor, level])
    level_rows = lp.row_families[-1][1] + np.arange(n)
    model = make_model(lp, backend=backend, time_limit=time_limit)
    log = SolveLog(backend)
    levels = np.full(n, np.nan)
    free = active.copy()
    if not free.any():  # nobody to balance: any feasible point
        model.set_cost(np.zeros(n_cols))
        return log.add(model.solve()).x[:n_d], log, levels
    while free.any():
        solution = log.add(model.solve())
        t = solution.x[-1]
        binding = free & _binding(solution.row_duals, level_rows)
        if not binding.any():
            binding = free & _saturated(model, free, t, n_d, n, log)
        fix = np.flatnonzero(binding)
        levels[fix] = t
        free[fix] = False
        model.set_col_bounds(n_d + fix, np.full(fix.size, t - LEVEL_SLACK * max(1.0, abs(t))), np.full(fix.size, np.inf))
        model.set_row_bounds(level_rows[fix], np.full(fix.size, -np.inf), np.full(fix.size, np.inf))
    return solution.x[:n_d], log, levels


def _binding(row_duals, rows) -> np.ndarray:
    if row_duals is None:
        return np.zeros(rows.size, bool)
    return np.abs(np.asarray(row_duals)[rows]) > DUAL_TOL


def _saturated(model, free, t, n_d, n, log) -> np.ndarray:
    """Without usable duals: agent ``i`` is saturated if ``t_i`` cannot exceed ``t`` while
    every free agent keeps level ``t`` (one LP per free agent)."""
    n_cols = n_d + n + 1
    model.set_col_bounds([n_cols - 1], [t - LEVEL_SLACK * max(1.0, abs(t))], [np.inf])
    out = np.zeros(n, bool)
    for i in np.flatnonzero(free):
        cost = np.zeros(n_cols)
        cost[n_d + i] = 1.0
        model.set_cost(cost)
        out[i] = log.add(model.solve()).x[n_d + i] <= t + LEVEL_SLACK * max(1.0, abs(t))
    cost = np.zeros(n_cols)
    cost[-1] = 1.0
    model.set_cost(cost)
    model.set_col_bounds([n_cols - 1], [-np.inf], [np.inf])
    return out
