"""Lottery rules: each returns a :class:`~policyagg.lottery.Lottery` over policies, drawn once per
episode (a lottery over policies is a lottery over candidates).

All read preferences through the normalised returns ``u = C @ d + c0``
(:func:`~policyagg.solvers.occupancy.utilities`; ``u_i = 0`` at agent ``i``'s worst policy in
``O``, ``1`` at its best) and accept the problem's extra constraints ``C``: every support policy
lies in ``O ∩ C``. Agent ``i``'s *share* is ``w_i / sum_j w_j``.

* :func:`proportional` -- each agent (or value cluster) gets its share of probability on its own
  optimum;
* :func:`conditional_utilitarian` -- each agent's share goes to the most welfare-efficient policy
  it approves;
* :func:`max_nash_welfare_lottery` -- the maximum Nash welfare point written as a lottery over
  vertices of ``O ∩ C`` (deterministic policies when there are no extra constraints).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from policyagg.errors import InvalidProblemError, SolverError, SolverWarning
from policyagg.lottery import Lottery
from policyagg.result import Result
from policyagg.solvers.completion import POLICY_GAP_STATUS
from policyagg.solvers.factored import FactoredModel
from policyagg.solvers.lp import HighsModel
from policyagg.solvers.occupancy import Rows, make_model, occupancy_program, unit_cost, utilities
from policyagg.solvers.registry import RuleCall, integer, number, per_agent, register_rule

#: A support policy counts as optimal for a group when its welfare is within this of the group's
#: optimum (normalised units, per unit of group weight): ten times the feasibility tolerance that
#: the face LP is solved with (:data:`FACE_FEASIBILITY_TOL`), so that the face is never empty, and
#: small enough that leaving the face by it gains no visible welfare.
FACE_TOL = 1e-8
FACE_FEASIBILITY_TOL = 1e-9
#: Column generation for the Nash lottery stops when no vertex has a reduced cost above this.
PRICE_TOL = 1e-9
#: The decomposition counts as exact when the master's residual (normalised units) is at most this.
RESIDUAL_TOL = 1e-7


# ------------------------------------------------------------------ shared pieces
def _group_optimum(call: RuleCall, gains: np.ndarray, floor: float | None = None) -> np.ndarray:
    """A welfare-efficient optimum of a group: maximise ``gains @ d`` over ``O ∩ C`` (value ``v*``),
    then the weighted sum of all agents' normalised returns over the face ``gains @ d >= v* - tol``
    (``tol`` = :data:`FACE_TOL` times the largest ``|gains|``). With ``floor``, the face is
    ``gains @ d >= min(floor, v*) - tol`` instead (an approval level, capped at what is attainable).
    Both LPs are recorded in the call's log; returns the flattened occupancy."""
    problem = call.problem
    C, _ = utilities(problem, normalize=True)
    scale = float(np.abs(gains).max(initial=0.0)) or 1.0
    best = call.maximize(gains, name="group optimum")
    level = float(gains @ best) / scale
    if floor is not None:
        level = min(floor / scale, level)
    face = Rows(
        "group optimum face",
        sp.csr_array(gains[None, :] / scale),
        np.array([level - FACE_TOL]),
        np.array([np.inf]),
    )
    program = occupancy_program(
        problem, unit_cost(problem.weights @ C), name="welfare on the face", maximize=True, rows=[face]
    )
    model = make_model(program, backend=call.backend, time_limit=call.time_limit)
    if isinstance(model, (HighsModel, FactoredModel)):
        model.set_option("primal_feasibility_tolerance", FACE_FEASIBILITY_TOL)
        model.set_option("dual_feasibility_tolerance", FACE_FEASIBILITY_TOL)
    d: np.ndarray = np.clip(call.log.add(model.solve()).x, 0.0, None)
    return d


def _labels(clusters: Sequence[Any], n: int) -> tuple[list[Any], np.ndarray]:
    """The distinct cluster labels (in order of first appearance) and each agent's cluster index."""
    labels = list(clusters)
    if len(labels) != n:
        raise InvalidProblemError(f"`clusters` must give one cluster label per agent ({n}); got {len(labels)} labels")
    distinct: list[Any] = []
    for label in labels:
        if label not in distinct:
            distinct.append(label)
    return distinct, np.array([distinct.index(label) for label in labels])


# ------------------------------------------------------------------ proportional
@register_rule(
    "proportional",
    options={
        "clusters": per_agent(
            "one cluster label per agent: a cluster's share goes to its utilitarian optimum (default: each agent alone)"
        ),
    },
)
def proportional(call: RuleCall, *, clusters: Sequence[Any] | None = None) -> Lottery:
    """Proportional selection: each agent (or value cluster) draws its own optimum with probability
    equal to its share of the weight.

    .. math:: L = \\sum_{c} \\frac{W_c}{W}\\, [d_c^*], \\qquad
              d_c^* \\in \\arg\\max_{d \\in O \\cap C} \\sum_{i \\in c} w_i u_i(d), \\qquad W_c = \\sum_{i \\in c} w_i

    Without ``clusters`` every agent is its own cluster: the random dictator as a lottery. A
    cluster's optimum is not unique in general; among its optima the rule takes the one with the
    largest weighted sum of *all* agents' normalised returns (a second LP on the cluster's optimal
    face), so each support policy is Pareto optimal among the cluster's optima.

    Guarantee: the support policy of cluster ``c`` is optimal for ``c`` (within :data:`FACE_TOL`)
    and is drawn with probability exactly ``W_c / W``; clusters whose optima coincide are merged,
    so each cluster draws one of its optimal policies with probability at least its share.
    Cost: two LPs per cluster. Diagnostics: ``clusters`` (the distinct labels) and ``shares``.
    """
    problem = call.problem
    n = problem.n_agents
    labels, member = _labels(clusters, n) if clusters is not None else (list(range(n)), np.arange(n))
    C, _ = utilities(problem, normalize=True)
    w = problem.weights
    support, shares = [], []
    for c in range(len(labels)):
        inside = member == c
        support.append(_group_optimum(call, (w * inside) @ C))
        shares.append(float(w[inside].sum()))
    p = np.asarray(shares) / sum(shares)
    return call.finish_lottery(np.stack(support), p, clusters=[str(label) for label in labels], shares=p.tolist())


# ------------------------------------------------------------------ conditional utilitarian
@register_rule(
    "conditional_utilitarian",
    options={
        "approval": number(
            0.0,
            1.0,
            low_open=True,
            help="agent i approves d when u_i(d) >= approval (capped at i's best in O ∩ C; 1: its optimal face)",
        ),
    },
)
def conditional_utilitarian(call: RuleCall, *, approval: float = 1.0) -> Lottery:
    """The conditional utilitarian rule: agent ``i``'s share goes to the policy that maximises the
    weighted utilitarian welfare among the policies ``i`` approves.

    .. math:: L = \\sum_i \\frac{w_i}{W}\\, [d^i], \\qquad
              d^i \\in \\arg\\max_{d \\in A_i} \\sum_j w_j u_j(d), \\qquad
              A_i = \\{ d \\in O \\cap C : u_i(d) \\ge \\min(\\alpha, \\max_{O \\cap C} u_i) \\}

    with ``alpha = approval`` (default 1: ``A_i`` is ``i``'s optimal face in ``O ∩ C``). Agents that
    choose the same policy pool their shares. At ``approval = 1`` the support is that of
    :func:`proportional` without clusters (both take the welfare-best point of each optimal face);
    lower approval levels trade agent ``i``'s own return for welfare.

    Guarantees: (1) every agent draws a policy it approves with probability at least its share
    (its own ``d^i`` is in ``A_i``, within :data:`FACE_TOL`); (2) the ex-ante welfare
    ``sum_j w_j u_j`` is at least that of any lottery drawing an approved policy of each agent
    with its share, in particular of the random dictator and of :func:`proportional` (each
    ``d^i`` maximises welfare over a set that contains agent ``i``'s optima).
    Cost: two LPs per agent. Diagnostics: ``welfare`` (ex-ante ``sum_j w_j u_j``).
    """
    problem = call.problem
    C, c0 = utilities(problem, normalize=True)
    w = problem.weights
    support = []
    for i in range(problem.n_agents):
        # u_i >= alpha  <=>  C_i d >= alpha - c0_i
        support.append(_group_optimum(call, C[i], floor=approval - float(c0[i])))
    d = np.stack(support)
    p = w / w.sum()
    welfare = float(p @ (d @ C.T + c0) @ w)
    return call.finish_lottery(d, p, welfare=welfare)


# ------------------------------------------------------------------ maximum Nash welfare lottery
@register_rule(
    "max_nash_welfare_lottery",
    options={
        "tolerance": number(0.0, low_open=True, help="the Nash welfare's log-gap (as for `nash_welfare`)"),
        "max_rounds": integer(1, help="rounds of tangent cuts of the Nash welfare (as for `nash_welfare`)"),
        "max_columns": integer(1, help="vertices the decomposition may generate before it gives up"),
    },
)
def max_nash_welfare_lottery(
    call: RuleCall, *, tolerance: float = 1e-6, max_rounds: int = 50, max_columns: int = 500
) -> Lottery:
    """The maximum Nash welfare point, drawn as a lottery over vertices of ``O ∩ C``.

    The point ``d*`` is :func:`~policyagg.solvers.baselines.nash_welfare`'s (weighted Nash welfare of
    normalised returns, by tangent cuts). Its returns ``u* = u(d*)`` are then written as a convex
    combination of the returns of vertices of ``O ∩ C`` by column generation:

    .. math:: \\min_{\\lambda, s^\\pm \\ge 0} 1^T (s^+ + s^-) \\quad\\text{s.t.}\\quad
              \\sum_j \\lambda_j u(d_j) + s^+ - s^- = u^*, \\quad 1^T \\lambda = 1

    with duals ``(y, y_0)``, each round adds the vertex ``argmax_{d in O ∩ C} y @ u(d)`` (one LP)
    until none has reduced cost above :data:`PRICE_TOL`. The final master is solved by the dual
    simplex, so its solution is basic: at most ``n + 1`` vertices carry probability (Carathéodory).

    Guarantees: the lottery's ex-ante returns equal the maximum Nash welfare point's (within the
    residual, :data:`RESIDUAL_TOL`; ``diagnostics["decomposition_residual"]``); every support
    policy is a vertex of ``O ∩ C`` -- without extra constraints, a deterministic policy.
    Ex ante it inherits the Nash point's properties (Pareto optimal, proportional: ``u_i >= 1/n``
    at equal weights); ex post each drawn vertex may be much less balanced.
    A residual above the tolerance or ``max_columns`` reached makes the status ``"gap"`` with a
    :class:`~policyagg.errors.SolverWarning`. Diagnostics: ``nash_returns``, ``nash_welfare``,
    ``nash_gap``, ``columns``, ``decomposition_residual``.
    """
    from policyagg.solvers.baselines import nash_welfare  # the registered Nash rule, reused as is

    problem = call.problem
    nash = nash_welfare(
        problem,
        call.samples,
        tolerance=tolerance,
        max_rounds=max_rounds,
        backend=call.backend,
        time_limit=call.time_limit,
    )
    if not isinstance(nash, Result):
        raise SolverError("max_nash_welfare_lottery: `nash_welfare` returned a lottery; it must return one policy")
    # A Nash point that mixes closed classes (average reward) has no stationary policy, hence
    # status "policy-gap" on the Result; a lottery over vertices delivers it, so the target is
    # the optimizer's point and that status is not the lottery's.
    if nash.status != POLICY_GAP_STATUS:
        call.log.statuses.append(nash.status)
    C, c0 = utilities(problem, normalize=True)
    point = np.asarray(nash.diagnostics.get("optimizer_returns", nash.returns), dtype=float)
    target = problem.require_ranges().normalize(point)
    columns = [np.clip(call.maximize(C[i], name="Nash lottery start"), 0.0, None) for i in range(problem.n_agents)]
    while True:
        U = np.stack([C @ d + c0 for d in columns], axis=1)  # (n, k)
        lam, residual, y, y0 = _decomposition_master(U, target)
        candidate = np.clip(call.maximize(y @ C, name="Nash lottery pricing"), 0.0, None)
        reduced = float(y @ (C @ candidate + c0) + y0)
        if reduced <= PRICE_TOL or len(columns) >= max_columns:
            break
        columns.append(candidate)
    if residual > RESIDUAL_TOL or reduced > PRICE_TOL:
        call.log.statuses.append("gap")
        warnings.warn(
            f"max_nash_welfare_lottery: the decomposition stopped at {len(columns)} vertices with residual "
            f"{residual:.3g} (status 'gap'); raise `max_columns`",
            SolverWarning,
            stacklevel=3,
        )
    keep = lam > 0
    return call.finish_lottery(
        np.stack(columns)[keep],
        lam[keep] / lam[keep].sum(),
        nash_returns=nash.returns.tolist(),
        nash_welfare=nash.diagnostics.get("nash_welfare"),
        nash_gap=nash.diagnostics.get("gap"),
        columns=len(columns),
        decomposition_residual=residual,
    )


def _decomposition_master(U: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Solve the decomposition master over the columns ``U`` (n, k) by the dual simplex:
    ``(lambda, residual, y, y0)`` with ``y, y0`` the duals of the return rows and the convexity row."""
    n, k = U.shape
    A_eq = np.block([[U, np.eye(n), -np.eye(n)], [np.ones((1, k)), np.zeros((1, 2 * n))]])
    b_eq = np.append(target, 1.0)
    cost = np.concatenate([np.zeros(k), np.ones(2 * n)])
    res = linprog(cost, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs-ds")
    if res.status != 0:
        raise SolverError(f"max_nash_welfare_lottery: the decomposition master failed ({res.message})")
    duals = np.asarray(res.eqlin.marginals, dtype=float)
    lam = np.clip(res.x[:k], 0.0, None)
    return lam, float(res.fun), duals[:n], float(duals[n])
