"""alpha-approval voting over the occupancy polytope.

Agent ``i`` approves ``d`` iff ``rank_i(d) >= alpha``, i.e. ``J_i(d) >= t_i = F_i^{-1}(alpha)``.
The heaviest approving set is a maximum feasible subsystem of the threshold rows over ``O``;
:func:`heaviest_approving_set` finds it by combinatorial Benders cuts (module
:mod:`policyagg.solvers.approving_sets`).
"""

from __future__ import annotations

import warnings

import numpy as np

from policyagg.errors import ApprovalGapWarning
from policyagg.result import Result
from policyagg.solvers.approving_sets import METHODS, heaviest_approving_set
from policyagg.solvers.completion import COMPLETIONS, complete, threshold_rows
from policyagg.solvers.registry import RuleCall, choice, number, register_rule


@register_rule(
    "approval",
    needs_samples=True,
    options={
        "alpha": number(0.0, 1.0, help="agent i approves d iff rank_i(d) >= alpha"),
        "completion": choice(
            COMPLETIONS, help="how a Pareto-optimal policy is chosen among those keeping the approvers"
        ),
        "search": choice(
            METHODS,
            help="how the heaviest approving set is proven optimal: big-M MILP, binary master with cuts, or auto",
        ),
    },
)
def approval(call: RuleCall, *, alpha: float = 0.9, completion: str = "utilitarian", search: str = "auto") -> Result:
    """Maximise the (weighted) number of approvers, then complete among the policies that
    keep that approving set.

    .. math:: \\max_{S \\subseteq [n]} \\sum_{i \\in S} w_i \\quad\\text{s.t.}\\quad
              \\exists\\, d \\in O:\\ J_i(d) \\ge t_i \\ \\ \\forall i \\in S

    Solved by :func:`heaviest_approving_set`: one LP first checks whether every agent can
    approve; otherwise a greedy incumbent is proven optimal (``search``): ``"milp"``, the
    big-M MILP over ``(d, x)`` started from the incumbent with one cut per known infeasible
    core; ``"cuts"``, a binary master over the agents alone with those cuts; ``"auto"``, the
    cuts on MDPs solved by column generation and, with a ``time_limit``, for more than 50
    agents (their certified gap was the smaller when stopped), else the MILP (it proved
    faster). No default time limit: without ``time_limit`` the answer is exact, which can
    take minutes from about 100 agents on random MDPs (the incumbent itself comes within
    seconds). ``time_limit``
    bounds that search (and each LP of the completion): if it runs out, the rule completes the
    heaviest approving set found, with status ``"time-limit"``, an
    :class:`~policyagg.errors.ApprovalGapWarning` and the certified
    ``diagnostics["approval_gap"]`` (no approving set is heavier than the incumbent by more).
    ``alpha = 0`` makes every agent approve every policy, so the rule reduces to its
    completion (utilitarian on normalised returns by default). ``alpha = 1`` asks for each
    agent's best sample; an agent's own optimum reaches it, so at least one agent approves.
    """
    problem, samples, log = call.problem, call.require_samples(), call.log
    lower = problem.require_ranges().lower
    thresholds = np.maximum(samples.threshold(alpha), lower)  # t_i <= min_O J_i: always approved
    found = heaviest_approving_set(
        problem,
        thresholds,
        samples=samples.values,
        method=search,
        backend=call.backend,
        time_limit=call.time_limit,
        log=log,
    )
    if found.status != "optimal":
        log.statuses.append(found.status)
        warnings.warn(
            f"approval stopped at time_limit={call.time_limit} s with its approving set's weight "
            f"{found.weight:g} within {found.gap:.3g} of the optimum (upper bound {found.upper_bound:g}); "
            "not proven optimal (status 'time-limit'). Raise time_limit for the exact answer.",
            ApprovalGapWarning,
            stacklevel=3,
        )
    approvers = found.agents
    region = [threshold_rows(problem, approvers, thresholds[approvers], "approving set")]
    d = complete(problem, region, how=completion, backend=call.backend, time_limit=call.time_limit, log=log)
    return call.finish(
        d,
        approvers=approvers.tolist(),
        approval_weight=found.weight,
        approval_upper_bound=found.upper_bound,
        approval_gap=found.gap,
        thresholds=thresholds.tolist(),
        **found.stats,
    )
