"""Linear programs over the occupancy polytope, shared by every rule.

Columns are the flattened occupancy ``d`` (``S*A`` of them, ``d >= 0``) followed by any
rule-specific columns; rows are the polytope's flow equations, the problem's extra
constraints, then the rule's own row families.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import groupby

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem, ReturnRanges
from solvers.lp import BACKENDS, LinearProgram, LPSolution, make_model


@dataclass
class Rows:
    """A family of rows ``lower <= A @ x <= upper`` over all columns of the program."""

    name: str
    A: sp.csr_array
    lower: np.ndarray
    upper: np.ndarray


def _families(labels, start: int):
    """Consecutive equal labels -> (label, start, stop) row families."""
    out, row = [], start
    for label, group in groupby(labels):
        size = len(list(group))
        out.append((label, row, row + size))
        row += size
    return out


def occupancy_program(
    problem: Problem,
    cost,
    *,
    name: str,
    maximize: bool = True,
    extra_cols: int = 0,
    col_lower=None,
    col_upper=None,
    rows: list[Rows] = (),
    integrality=None,
    with_constraints: bool = True,
) -> LinearProgram:
    """The LP ``max/min cost @ [d, z]`` over ``d in O`` (+ problem constraints) and ``rows``.

    ``cost``, ``col_lower``, ``col_upper`` and ``integrality`` cover all ``S*A + extra_cols``
    columns (``d`` has bounds ``[0, inf)`` unless given). ``with_constraints=False`` drops
    the problem's extra constraints (the bare polytope).
    """
    n_d = problem.mdp.n_state_actions
    n = n_d + extra_cols

    def widen(A):
        return sp.hstack([A, sp.csr_array((A.shape[0], extra_cols))], format="csr") if extra_cols else A

    poly = problem.polytope
    user = problem.constraints if with_constraints else LinearConstraints.empty(n_d)
    blocks = [widen(poly.A_eq), widen(user.A_eq), widen(user.A_ub)] + [r.A for r in rows]
    lower = [poly.b_eq, user.b_eq, np.full(user.b_ub.size, -np.inf)] + [r.lower for r in rows]
    upper = [poly.b_eq, user.b_eq, user.b_ub] + [r.upper for r in rows]
    families = [("occupancy flow", 0, poly.A_eq.shape[0])]
    at = poly.A_eq.shape[0]
    for labels in (user.labels_eq, user.labels_ub):
        families += _families(labels, at)
        at += len(labels)
    for r in rows:
        if r.A.shape[1] != n:
            raise InvalidProblemError(f"row family {r.name!r} has {r.A.shape[1]} columns; the program has {n}")
        families.append((r.name, at, at + r.A.shape[0]))
        at += r.A.shape[0]
    lo = np.zeros(n) if col_lower is None else np.asarray(col_lower, dtype=float)
    hi = np.full(n, np.inf) if col_upper is None else np.asarray(col_upper, dtype=float)
    return LinearProgram(
        cost=np.asarray(cost, dtype=float),
        A=sp.vstack(blocks, format="csc"),
        row_lower=np.concatenate(lower),
        row_upper=np.concatenate(upper),
        col_lower=lo,
        col_upper=hi,
        integrality=integrality,
        maximize=maximize,
        name=name,
        row_families=tuple(families),
    )


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InvalidProblemError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


@dataclass
class SolveLog:
    """Accumulates solver diagnostics over the LPs a rule solves."""

    backend: str
    n_solves: int = 0
    solve_time: float = 0.0
    build_time: float = 0.0
    iterations: int = 0
    statuses: list = field(default_factory=list)

    def add(self, solution: LPSolution) -> LPSolution:
        self.n_solves += 1
        self.solve_time += solution.solve_time
        self.build_time += solution.build_time
        self.iterations += int(solution.iterations or 0)
        self.statuses.append(solution.status)
        return solution

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "n_solves": self.n_solves,
            "solve_time": self.solve_time,
            "build_time": self.build_time,
            "iterations": self.iterations,
            "status": self.statuses[-1] if self.statuses else None,
        }


def return_ranges(problem: Problem, *, backend: str = "highs", time_limit: float | None = None) -> ReturnRanges:
    """``min_O J_i`` and ``max_O J_i`` for every agent (two LPs each, one warm model).

    The range is over the whole polytope ``O``, without the problem's extra constraints:
    normalisation describes the agent's preferences (like the samples, which are drawn
    from ``O``), while constraints restrict what a rule may choose.
    """
    check_backend(backend)
    R = problem.reward_matrix
    lp = occupancy_program(problem, R[0], name="return range", maximize=True, with_constraints=False)
    model = make_model(lp, backend=backend, time_limit=time_limit)
    n, n_d = R.shape
    lower, upper = np.empty(n), np.empty(n)
    best, worst = np.empty((n, n_d)), np.empty((n, n_d))
    for i in range(n):
        for sign, values, points in ((1.0, upper, best), (-1.0, lower, worst)):
            model.set_cost(sign * R[i])  # maximise J_i, then maximise -J_i
            solution = model.solve()
            points[i] = np.clip(solution.x, 0.0, None)
            values[i] = R[i] @ points[i]
    return ReturnRanges(lower=lower, upper=np.maximum(upper, lower), best=best, worst=worst)


def with_ranges(problem: Problem, **options) -> Problem:
    """``problem`` with its per-agent return ranges computed (once) and attached."""
    return problem if problem.ranges is not None else problem.with_ranges(return_ranges(problem, **options))


def utilities(problem: Problem, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(C, c0)`` with ``u = C @ d + c0``: raw returns or normalised returns.

    Normalised: ``u_i = (J_i - min_O J_i) / (max_O J_i - min_O J_i)`` (flat agents: ``u_i = 1``).
    """
    R = problem.reward_matrix
    if not normalize:
        return R, np.zeros(problem.n_agents)
    ranges = problem.require_ranges()
    width = np.where(ranges.flat, 1.0, ranges.width)
    C = np.where(ranges.flat[:, None], 0.0, R / width[:, None])
    c0 = np.where(ranges.flat, 1.0, -ranges.lower / width)
    return C, c0


def prepare(problem: Problem, constraints: LinearConstraints | None, backend: str) -> Problem:
    """Validate the backend, attach return ranges, and add a rule call's extra constraints."""
    check_backend(backend)
    problem = with_ranges(problem, backend=backend)
    if constraints is not None:
        problem = replace(problem, constraints=problem.constraints & constraints)
    return problem
