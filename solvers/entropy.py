"""Entropy-regularised aggregation: a rule's welfare plus ``beta`` times the policy's causal entropy.

.. math:: \\max_{d \\in O \\cap C}\\; W(u(d)) + \\beta H(d), \\qquad
          H(d) = -\\sum_{s,a} d(s,a) \\log \\frac{d(s,a)}{\\sum_{a'} d(s,a')}

with ``u = C d + c0`` the (normalised) returns and ``W`` one of

* ``utilitarian``: ``sum_i w_i u_i``;
* ``egalitarian``: ``min_i u_i / w_i`` (the first leximin level, i.e. maximin);
* ``nash``: ``sum_i w_i log u_i``.

``H`` is concave (``d log(d / s)`` is the relative entropy ``rel_entr(d, s)``, jointly convex), so
every objective is concave and the program is a convex (exponential-cone) program, solved with
cvxpy and Clarabel (the optional extra ``policyagg[convex]``). Utilitarian welfare without
extra constraints is the soft MDP with reward ``sum_i w_i (C_i + c0_i)``, solved exactly and
fast by soft policy iteration (:func:`policyagg.entropy.soft_value_iteration`), the default.
``beta`` favours broad policies: the result is stochastic wherever actions are close in value.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from policyagg.entropy import causal_entropy, soft_value_iteration
from policyagg.errors import (
    InfeasibleError,
    InvalidProblemError,
    PolicyEvaluationError,
    SolverError,
    SolverTimeLimitError,
    SolverWarning,
)
from policyagg.result import Result
from policyagg.solvers.occupancy import utilities
from policyagg.solvers.registry import RuleCall, choice, flag, number, register_rule

OBJECTIVES = ("utilitarian", "egalitarian", "nash")
METHODS = ("auto", "soft_vi", "convex")
#: Utilities below this count as zero in the Nash objective's report (``log`` of them is ``-inf``).
NASH_FLOOR = 1e-12


@register_rule(
    "entropy_regularized",
    options={
        "objective": choice(OBJECTIVES, help="the welfare regularised"),
        "beta": number(0, low_open=True, help="weight of the causal entropy"),
        "normalize": flag("welfare of normalised returns (else raw returns)"),
        "method": choice(METHODS, help="soft_vi (utilitarian, no constraints), convex (cvxpy) or auto"),
    },
)
def entropy_regularized(
    call: RuleCall,
    *,
    objective: str = "utilitarian",
    beta: float = 0.1,
    normalize: bool = True,
    method: str = "auto",
) -> Result:
    """Maximise a welfare plus ``beta`` times the causal entropy of the policy (module docstring).

    ``method="auto"``: soft policy iteration for utilitarian welfare without extra constraints
    (the convex program if it cannot evaluate a policy: a multichain average-reward MDP, recorded
    in ``diagnostics["soft_vi_failed"]``), else the convex program. Diagnostics:
    ``objective_value`` (welfare + beta H at the solver's point), ``entropy`` (``H`` at the
    solver's point), ``method``. The point is not Pareto-lifted (a lift would trade entropy for
    returns).
    """
    problem = call.problem
    C, c0 = utilities(problem, normalize)
    w = problem.weights
    if objective == "egalitarian" and not normalize and not np.allclose(w, w[0]):
        raise InvalidProblemError(
            "egalitarian with unequal `weights` needs `normalize=True`: on raw returns u_i / w_i "
            "reverses what a weight means"
        )
    simple = objective == "utilitarian" and not len(problem.constraints)
    automatic, fallback = method == "auto", ""
    if automatic:
        method = "soft_vi" if simple else "convex"
    if method == "soft_vi":
        if not simple:
            raise InvalidProblemError(
                "method='soft_vi' solves utilitarian welfare without extra constraints only; "
                "use method='convex' (or 'auto')"
            )
        reward = w @ (C + c0[:, None])
        try:
            soft = soft_value_iteration(problem.mdp, reward, beta)
        except PolicyEvaluationError as exc:
            if not automatic:
                raise
            method, fallback = "convex", str(exc)  # e.g. a multichain average-reward MDP
        else:
            extra: dict[str, Any] = {"soft_iterations": soft.iterations}
            d, value = soft.occupancy.ravel(), soft.objective
    if method == "convex":
        d, value, extra = _convex(call, C, c0, w, objective, beta)
        if fallback:
            extra["soft_vi_failed"] = fallback
    entropy = causal_entropy(d.reshape(problem.mdp.n_states, problem.mdp.n_actions))
    return call.finish(d, lift=False, objective_value=float(value), entropy=entropy, method=method, **extra)


def _convex(
    call: RuleCall, C: np.ndarray, c0: np.ndarray, w: np.ndarray, objective: str, beta: float
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """The exponential-cone program over ``O ∩ C`` with cvxpy + Clarabel."""
    try:
        cp: Any = importlib.import_module("cvxpy")  # an optional extra (untyped for mypy)
    except ImportError:
        raise InvalidProblemError(
            "the entropy-regularised convex program needs cvxpy: `pip install 'policyagg[convex]'` "
            "(or use objective='utilitarian' without extra constraints, solved by soft policy iteration)"
        ) from None
    problem = call.problem
    mdp = problem.mdp
    polytope = problem.polytope
    # one LP first: an empty O ∩ C is reported by the LP layer, naming the constraints that empty it
    call.maximize(np.zeros(mdp.n_state_actions), name="entropy_regularized feasibility")
    d = cp.Variable(mdp.n_state_actions, nonneg=True)
    spread = sp.csr_array(mdp.action_sum.T @ mdp.action_sum)  # (S*A, S*A): d -> sum_a' d(s, a') per (s, a)
    entropy = -cp.sum(cp.rel_entr(d, spread @ d))
    constraints = [polytope.A_eq @ d == polytope.b_eq]
    user = problem.constraints
    if user.A_ub.shape[0]:
        constraints.append(user.A_ub @ d <= user.b_ub)
    if user.A_eq.shape[0]:
        constraints.append(user.A_eq @ d == user.b_eq)
    u = C @ d + c0
    if objective == "utilitarian":
        welfare = w @ u
    elif objective == "egalitarian":
        t = cp.Variable()
        constraints.append(u >= t * w)
        welfare = t
    else:
        welfare = w @ cp.log(u)
    program = cp.Problem(cp.Maximize(welfare + beta * entropy), constraints)
    kwargs: dict[str, Any] = {}
    if call.time_limit is not None:
        kwargs["time_limit"] = call.time_limit
    try:
        program.solve(solver=cp.CLARABEL, **kwargs)
    except cp.error.SolverError as exc:
        raise SolverError(f"entropy_regularized: Clarabel failed ({exc})") from None
    status = program.status
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise InfeasibleError(
            "entropy_regularized: no occupancy meets the constraints (and, for nash, gives every agent u_i > 0)"
        )
    if status == cp.USER_LIMIT:
        raise SolverTimeLimitError(
            f"entropy_regularized: Clarabel stopped at time_limit={call.time_limit} s before convergence; "
            "raise `time_limit`"
        )
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or d.value is None:
        raise SolverError(f"entropy_regularized: Clarabel stopped with status {status!r}")
    if status == cp.OPTIMAL_INACCURATE:
        warnings.warn(
            "entropy_regularized: Clarabel reports an inaccurate optimum; the result's status is 'gap'",
            SolverWarning,
            stacklevel=4,
        )
        call.log.statuses.append("gap")
    x = np.clip(np.asarray(d.value, dtype=float), 0.0, None)
    return x / x.sum(), float(program.value), {"solver_status": status}
