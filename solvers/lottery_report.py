"""A rule's :class:`~policyagg.lottery.Lottery` with both fairness reports (the lottery
counterpart of :func:`policyagg.solvers.completion.finish`).

*Ex ante* a lottery ``L = {(p_k, d_k)}`` is its mixed occupancy ``d_L = sum_k p_k d_k`` (a point
of ``O``): the report has the same entries as a :class:`~policyagg.result.Result`'s, computed
at ``d_L`` (Pareto gap, and with samples the quantile reached, Borda score, approvals, PVC
``eps``). *Ex post* the lottery draws one policy ``d_k``; ``report["ex_post"]`` holds the
expected value over the draw of every entry that is a number per outcome
(``E_k[x(d_k)] = sum_k p_k x(d_k)``), the probability that the drawn policy is Pareto optimal,
the expected Gini index, the expected and the worst minimum normalised return, and each
agent's outcome distribution (:meth:`~policyagg.lottery.Lottery.ex_post`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from policyagg.errors import InvalidProblemError
from policyagg.lottery import Lottery, build_lottery, check_probabilities
from policyagg.mdp import DeliveryWarning
from policyagg.metrics import approvals, borda_score, pvc_epsilon, pvc_method
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.solvers.completion import (
    PARETO_TOL,
    POLICY_GAP_STATUS,
    POLICY_RETURN_TOL,
    REPORT_ALPHAS,
    allowed_actions,
    delivery_gap,
    pareto_improvement,
)
from policyagg.solvers.occupancy import SolveLog


def finish_lottery(
    problem: Problem,
    occupancies: ArrayLike,
    probabilities: ArrayLike,
    *,
    rule: str,
    samples: ReturnSamples | None,
    options: Mapping[str, Any],
    log: SolveLog,
    started: float,
    time_limit: float | None = None,
    **extra: Any,
) -> Lottery:
    """Assemble a rule's lottery over the occupancies ``(k, S*A)`` with probabilities ``(k,)``.

    Each support occupancy is replaced by the exact occupancy of its derived policy
    (:meth:`~policyagg.mdp.TabularMDP.derive_policy`), so every support policy delivers its
    returns; ``diagnostics["support_return_gap"]`` is the largest difference between a support
    occupancy's returns and its policy's (in units of an agent's return range) and
    ``diagnostics["support_policy_classes"]`` the most closed classes any of them mixes. A support point mixing closed classes that no stationary policy
    delivers makes the status ``"policy-gap"`` with a :class:`DeliveryWarning`. Identical
    support policies are merged (:func:`~policyagg.lottery.build_lottery`). The status is the
    worst of the solves (``log``). ``extra`` are added to the diagnostics.
    """
    p = check_probabilities(probabilities)
    raw = np.asarray(occupancies, dtype=float).reshape(p.size, -1)
    raw = np.clip(raw, 0.0, None)
    raw /= raw.sum(axis=1, keepdims=True)
    allowed = allowed_actions(problem)  # prohibitions hold even where a support policy never goes
    derived = [problem.mdp.derive_policy(dk, allowed) for dk in raw]
    exact = np.stack([x.occupancy.ravel() for x in derived])
    policies = np.stack([x.policy for x in derived])
    R = problem.reward_matrix
    gaps = [delivery_gap(problem, R @ e, R @ d) for e, d in zip(exact, raw, strict=True)]
    trapped = [k for k, x in enumerate(derived) if x.classes > 1 and gaps[k] > POLICY_RETURN_TOL]
    status = log.status
    if trapped:
        status = POLICY_GAP_STATUS if status == "optimal" else status
        warnings.warn(
            f"{rule}: support policies {trapped} do not deliver their occupancies (they mix closed classes of "
            f"states; largest difference {max(gaps):.3g} of an agent's return range); the lottery reports what "
            f"its policies do and its status is {status!r}. Use `gamma` < 1 or an MDP whose actions connect "
            "its closed classes.",
            DeliveryWarning,
            stacklevel=3,
        )
    lottery = build_lottery(problem, exact, p, rule=rule, samples=samples, policies=policies, status=status)
    report = lottery_report(problem, lottery, samples, log=log, time_limit=time_limit)
    diagnostics = (
        log.as_dict()
        | {
            "wall_time": time.perf_counter() - started,
            "support_size": lottery.size,
            "support_return_gap": float(max(gaps)),
            "support_policy_classes": max(x.classes for x in derived),
            "optimizer_returns": (p @ (raw @ R.T)).tolist(),
        }
        | extra
    )
    return dataclasses.replace(
        lottery, options=dict(options) | {"backend": log.backend}, diagnostics=diagnostics, report=report
    )


def lottery_report(
    problem: Problem,
    lottery: Lottery,
    samples: ReturnSamples | None = None,
    *,
    log: SolveLog | None = None,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Both fairness reports of a tabular lottery (module docstring): the ex-ante entries at
    the top level, as in a :class:`~policyagg.result.Result`'s report, and ``"ex_post"``.

    Costs ``k + 1`` Pareto-check LPs (the mixture and each support policy)."""
    if lottery.support_occupancies is None:
        raise InvalidProblemError("`lottery_report` needs a tabular lottery (one built from occupancies)")
    log = log if log is not None else SolveLog("highs")
    p = lottery.probabilities
    support = lottery.support_occupancies.reshape(lottery.size, -1)
    mixture = p @ support
    gap, _ = pareto_improvement(problem, mixture, backend=log.backend, time_limit=time_limit, log=log)
    support_gaps = np.array(
        [pareto_improvement(problem, dk, backend=log.backend, time_limit=time_limit, log=log)[0] for dk in support]
    )
    report: dict[str, Any] = {"pareto_gap": gap, "pareto_optimal": gap <= PARETO_TOL}
    u = lottery.support_normalized
    ex_post: dict[str, Any] = {
        "pareto_gap": float(p @ support_gaps),
        "pareto_optimal_probability": 1.0 - float(p[support_gaps > PARETO_TOL].sum()),  # exactly 1 when all are
        "gini": lottery.ex_post_gini,
        "min_normalized": float(p @ u.min(axis=1)),
        "worst_normalized": float(u.min()),
        "agents": lottery.ex_post(),
    }
    if samples is not None:
        report |= samples_report(lottery.returns, samples, problem.n_agents)
        per_outcome = [samples_report(J, samples, problem.n_agents) for J in lottery.support_returns]
        ex_post |= {
            key: float(sum(pk * entry[key] for pk, entry in zip(p, per_outcome, strict=True)))
            for key in ("min_rank", "borda", "pvc_epsilon")
        }
        ex_post["approvals"] = {
            key: float(sum(pk * entry["approvals"][key] for pk, entry in zip(p, per_outcome, strict=True)))
            for key in report["approvals"]
        }
    report["ex_post"] = ex_post
    return report


def samples_report(returns: np.ndarray, samples: ReturnSamples, n_agents: int) -> dict[str, Any]:
    """The volumetric entries of a report at ``returns`` (as :func:`~policyagg.solvers.completion.finish`)."""
    ranks = samples.cdf(returns)
    method = pvc_method(n_agents)
    return {
        "min_rank": float(ranks.min()),
        "borda": borda_score(ranks),
        "approvals": {str(alpha): approvals(ranks, alpha) for alpha in REPORT_ALPHAS},
        "pvc_epsilon": pvc_epsilon(returns + samples.tolerance, samples.values, method),
        "pvc_epsilon_method": method,
    }
