"""Welfare baselines: utilitarian and egalitarian (leximin) rules.

Utilities are raw returns ``u_i = J_i(d)`` or normalised returns (``normalize=True``).
"""

from __future__ import annotations

import numpy as np

from policyagg.errors import InvalidProblemError
from policyagg.result import Result
from policyagg.solvers.completion import leximin
from policyagg.solvers.occupancy import utilities
from policyagg.solvers.registry import RuleCall, flag, register_rule

NORMALIZE = flag("utilities are normalised returns (0 at the agent's worst policy, 1 at its best), not raw returns")


@register_rule("utilitarian", options={"normalize": NORMALIZE})
def utilitarian(call: RuleCall, *, normalize: bool = False) -> Result:
    """Maximise weighted welfare over the (constrained) occupancy polytope.

    .. math:: \\max_{d \\in O} \\sum_i w_i u_i(d)
    """
    C, _ = utilities(call.problem, normalize)
    return call.finish(call.maximize(call.problem.weights @ C))


@register_rule("egalitarian", options={"normalize": NORMALIZE})
def egalitarian(call: RuleCall, *, normalize: bool = False) -> Result:
    """Leximin: lexicographically maximise the sorted entitlement levels ``u_i / w_i``.

    Round ``k`` solves

    .. math:: \\max_{d \\in O,\\, t} t \\quad \\text{s.t.}\\quad u_i(d) \\ge w_i t
              \\;(i \\text{ free}),\\quad u_i(d) \\ge w_i v_i \\;(i \\text{ fixed})

    and fixes every free agent whose floor is binding in all optima (non-zero dual, or,
    without duals, an agent that cannot exceed ``t`` on the optimal face). With weights the
    utilities must be normalised: raw returns can be negative, where ``u_i / w_i`` would
    reverse what a weight means.
    """
    problem = call.problem
    if not normalize and not np.allclose(problem.weights, problem.weights[0]):
        raise InvalidProblemError(
            "egalitarian with unequal `weights` needs `normalize=True`: on raw returns (which may "
            "be negative) the entitlement u_i / w_i reverses the meaning of a weight"
        )
    d, _, levels = leximin(
        problem, *utilities(problem, normalize), backend=call.backend, time_limit=call.time_limit, log=call.log
    )
    return call.finish(d, levels=levels.tolist())
