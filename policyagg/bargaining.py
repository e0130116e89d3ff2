"""The status quo of a bargaining problem (its disagreement point) and individual rationality.

A *status quo* is what every agent gets if the agents do not agree: per-agent returns
``d = (d_1, ..., d_n)``. It can be given as

* ``"worst"``: each agent's minimum over the occupancy polytope, ``d_i = min_O J_i``
  (``problem.ranges.lower``; individual rationality is then no constraint);
* ``"uniform"``: the exact returns of the uniformly random policy, ``d_i = J_i(pi_u)``;
* a policy, an array of shape ``(S, A)`` (rows sum to 1): its exact returns ``J_i(pi)``
  (:meth:`~policyagg.mdp.TabularMDP.evaluate`);
* explicit values, an array of shape ``(n,)``, one per agent.

*Individual rationality* (IR) keeps every agent at or above its status quo:

.. math:: J_i(d) \\ge d_i \\quad \\forall i,

a set of linear constraints (:func:`individual_rationality`) that any rule takes through its
``constraints`` argument, with one row per agent labelled ``individual rationality: <name>``,
so an infeasible combination is reported by agent.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InfeasibleError, InvalidMDPError, InvalidProblemError, float_array
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem

#: The named forms of a status quo (besides a policy array or explicit values).
STATUS_QUO_NAMES = ("worst", "uniform")
#: A status quo above an agent's best return ``max_O J_i`` by at most this share of the agent's
#: return range (of its return's magnitude, if indifferent) is read as that best (evaluation
#: round-off); further above, nothing the agents can agree on is individually rational.
STATUS_QUO_TOL = 1e-9
#: The label of agent ``<name>``'s individual-rationality row.
IR_LABEL = "individual rationality: {name}"


def disagreement_point(problem: Problem, status_quo: str | ArrayLike) -> NDArray[np.float64]:
    """Per-agent returns ``d`` (shape ``(n,)``) of the status quo ``status_quo``.

    ``status_quo`` is ``"worst"``, ``"uniform"``, a policy of shape ``(S, A)`` or ``n`` values
    (module docstring). Needs ``problem.ranges`` (``solvers.with_ranges(problem)``). A value
    above an agent's best return ``max_O J_i`` is an :class:`InfeasibleError` naming the agent
    (no policy makes it individually rational); one above by round-off only
    (:data:`STATUS_QUO_TOL`) is set to that best.

    >>> import numpy as np
    >>> from policyagg.mdp import TabularMDP
    >>> from policyagg.problem import Problem, ReturnRanges
    >>> mdp = TabularMDP(np.ones((1, 2, 1)), gamma=0.9)  # one state, two actions
    >>> problem = Problem(mdp, np.array([[[1.0, 0.0]], [[0.0, 3.0]]]))
    >>> best, worst = np.eye(2)[[0, 1]], np.eye(2)[[1, 0]]
    >>> problem = problem.with_ranges(ReturnRanges(np.zeros(2), np.array([1.0, 3.0]), best, worst))
    >>> disagreement_point(problem, "uniform").tolist()
    [0.5, 1.5]
    >>> disagreement_point(problem, [[0.25, 0.75]]).tolist()  # a policy: action 1 w.p. 3/4
    [0.25, 2.25]
    """
    ranges = problem.require_ranges()
    mdp, n = problem.mdp, problem.n_agents
    if isinstance(status_quo, str):
        if status_quo == "worst":
            return np.array(ranges.lower, dtype=float)
        if status_quo != "uniform":
            raise InvalidProblemError(_status_quo_forms(n, mdp.n_states, mdp.n_actions, repr(status_quo)))
        uniform = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)
        return np.asarray(mdp.evaluate(uniform, problem.rewards), dtype=float)
    array = float_array("status_quo", status_quo)
    if array.ndim == 2:
        try:
            policy = mdp.check_policy(array)
        except InvalidMDPError as exc:
            raise InvalidProblemError(f"`status_quo` read as a policy: {exc}") from None
        return np.asarray(mdp.evaluate(policy, problem.rewards), dtype=float)
    if array.shape != (n,):
        raise InvalidProblemError(_status_quo_forms(n, mdp.n_states, mdp.n_actions, f"shape {array.shape}"))
    if not np.all(np.isfinite(array)):
        i = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InvalidProblemError(f"`status_quo` must be finite; agent {problem.names[i]!r} has {array[i]}")
    scale = np.where(ranges.flat, np.maximum(np.abs(ranges.lower), np.abs(ranges.upper)), ranges.width)
    above = array - ranges.upper
    beyond = np.flatnonzero(above > STATUS_QUO_TOL * np.maximum(scale, np.finfo(float).tiny))
    if beyond.size:
        i = int(beyond[0])
        raise InfeasibleError(
            f"`status_quo` of agent {problem.names[i]!r} is {array[i]:.6g}, above its best return "
            f"{ranges.upper[i]:.6g} (max over all policies): no policy is individually rational for it; "
            "lower its status quo to at most its best"
        )
    values: NDArray[np.float64] = np.minimum(array, ranges.upper)
    return values


def _status_quo_forms(n: int, S: int, A: int, got: str) -> str:
    return (
        f"`status_quo` must be one of {', '.join(repr(x) for x in STATUS_QUO_NAMES)}, {n} values (one per "
        f"agent) or a policy of shape (S, A) = ({S}, {A}); got {got}"
    )


def individual_rationality(problem: Problem, status_quo: str | ArrayLike) -> LinearConstraints:
    """Constraints ``J_i(d) >= d_i`` for every agent, ``d`` the status quo's returns
    (:func:`disagreement_point`), to pass to any rule as ``constraints=``.

    One row per agent, labelled ``individual rationality: <name>`` and divided by the agent's
    return range (so a solver's feasibility tolerance is relative to it). An agent whose status
    quo is at or below its minimum ``min_O J_i`` (or who is indifferent) gets no row: every
    policy is individually rational for it. Needs ``problem.ranges``.

    >>> # every rule, e.g. solvers.utilitarian(problem, constraints=individual_rationality(problem, "uniform"))
    """
    d = disagreement_point(problem, status_quo)
    ranges = problem.require_ranges()
    binding = np.flatnonzero((d > ranges.lower) & ~ranges.flat)
    width = ranges.width[binding]
    rows = sp.csr_array(
        -problem.reward_matrix[binding] / width[:, None], shape=(binding.size, problem.mdp.n_state_actions)
    )
    constraints = LinearConstraints.build(problem.mdp.n_state_actions, A_ub=rows, b_ub=-d[binding] / width)
    labels = tuple(IR_LABEL.format(name=problem.names[i]) for i in binding)
    return LinearConstraints(constraints.A_ub, constraints.b_ub, constraints.A_eq, constraints.b_eq, labels, ())
