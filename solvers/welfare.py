"""Welfare baselines: utilitarian and egalitarian (leximin) rules.

Utilities are raw returns ``u_i = J_i(d)`` or normalised returns (``normalize=True``).
"""

from __future__ import annotations

import time

import numpy as np

from policyagg.errors import InvalidProblemError
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.solvers.completion import finish, leximin
from policyagg.solvers.occupancy import make_model
from policyagg.solvers.occupancy import SolveLog, occupancy_program, prepare, utilities



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
    return finish(problem, solution.x, rule="utilitarian", samples=samples, options={"normalize": normalize},
                  log=log, started=started, time_limit=time_limit)


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
    return finish(problem, d, rule="egalitarian", samples=samples, options={"normalize": normalize},
                  log=log, started=started, time_limit=time_limit, levels=levels.tolist())
