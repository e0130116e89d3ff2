"""The proportional veto core (PVC): sequential veto on sampled policies, and its verifier.

A coalition ``T`` of agents *blocks* ``d`` if some set ``B`` of policies with
``mu(B) > 1 - |T|/n + eps`` exists whose every point all members of ``T`` strictly prefer to
``d``; ``d`` is in the eps-PVC if no coalition blocks it. On ``N`` samples the smallest such
``eps`` is

.. math:: \\varepsilon(d) = \\max_{\\emptyset \\ne T \\subseteq N} \\mu(B_T) - 1 + |T| / n,
          \\qquad B_T = \\{k : V_{k,i} > J_i(d) \\ \\forall i \\in T\\}

(:func:`pvc_epsilon`: a superset-sum over ``2^n`` coalitions up to 20 agents, an exact min cut
beyond, in :mod:`policyagg.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from policyagg.errors import InvalidProblemError, InvalidSamplesError
from policyagg.metrics import pvc_epsilon as _returns_epsilon
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.solvers.completion import COMPLETIONS, complete, threshold_rows
from policyagg.solvers.occupancy import occupancy_program
from policyagg.solvers.registry import RuleCall, choice, number, per_agent, register_rule


@register_rule(
    "pvc",
    needs_samples=True,
    options={
        "eps": number(0.0, 1.0, high_open=True, help="the core's slack: larger eps, smaller vetoes, larger region"),
        "order": per_agent("a permutation of the agents: who vetoes first (default: index order)"),
        "completion": choice(COMPLETIONS, help="how a Pareto-optimal policy is chosen inside the core region"),
    },
)
def proportional_veto_core(
    call: RuleCall, *, eps: float = 0.0, order: Sequence[int] | None = None, completion: str = "egalitarian"
) -> Result:
    """A point of the eps-proportional veto core by sequential veto, completed inside the core region.

    **Veto.** With ``N`` samples and ``n`` agents every agent vetoes the same number

    .. math:: m = \\min\\bigl(\\lceil (1 - \\varepsilon) N / n \\rceil,\\ \\lfloor (N - 1) / n \\rfloor\\bigr)

    of samples: the first term is the SPEC's ``(1 - eps)/n`` share rounded *up* (so the
    guarantee below needs no slack), the second keeps at least one sample unvetoed (needed
    for non-emptiness; it binds only when ``eps * N < n + 1``, e.g. for ``eps = 0``). In
    ``order``, agent ``k`` vetoes its ``m`` lowest-return samples among those not yet vetoed
    (ties broken by sample index), and ``theta_k`` is the *largest* return ``k`` vetoed.

    **Region.** :math:`R = \\{d \\in O : J_k(d) \\ge \\theta_k \\ \\forall k\\}`. For ``d`` in
    ``R``, agent ``k`` strictly prefers none of its vetoed samples (``V_{j,k} <= theta_k <=
    J_k(d)``; the verifier counts only *strict* preference, so the vetoed maximum itself is
    the right threshold, not the next surviving value). The vetoed sets are disjoint, so for
    every coalition ``T``, ``B_T`` misses ``|T| m`` samples and

    .. math:: \\varepsilon(d) \\le \\max_T |T| (1/n - m/N) \\le \\max(\\varepsilon,\\ 1 - n m / N)
              \\le \\max(\\varepsilon,\\ n / N).

    **Non-empty.** At least ``N - n m >= 1`` samples survive; each is (the return vector of)
    a point of ``O``, and a survivor ``j`` was among the candidates when each agent ``k``
    vetoed, so ``V_{j,k} >= theta_k`` for all ``k``: the survivor lies in ``R``. The first LP
    (``"proportional veto core"``, row family ``"veto thresholds"``) therefore fails only
    when extra ``constraints`` cut every survivor off, or when the samples are not returns of
    points of this problem's ``O``; its :class:`~policyagg.errors.InfeasibleError` names the
    rule and the families involved. Indifferent (flat-range) agents veto like everybody else
    but get no row: their return is the same everywhere on ``O``.

    The completion keeps a margin above every threshold wherever ``R`` has an interior
    (:func:`~policyagg.solvers.completion.complete`), so that solver tolerance cannot put
    ``J_k(d)`` just below a vetoed sample.

    **Completion.** ``R`` is upward closed, so the leximin (``"egalitarian"``) or utilitarian
    completion of normalised returns inside ``R`` is Pareto optimal in ``O``.

    Called as ``proportional_veto_core(problem, samples, **options)``; the samples are required.

    Parameters
    ----------
    eps : float in [0, 1)
        The core's slack; larger ``eps`` means smaller vetoes and a larger region.
    order : sequence of int, optional
        A permutation of ``0..n-1``: who vetoes first. Default: index order ``0, 1, ..., n-1``.
        Every order gives a point of the eps-PVC (the guarantee does not depend on it); index
        order is the one a user can predict and reproduce, and does not depend on rewards,
        weights or samples. Weights do not enter the veto (the PVC is defined with equal
        shares ``1/n``); they enter the completion.
    completion : {"egalitarian", "utilitarian", "utilitarian-raw"}

    Diagnostics: ``thresholds`` (``theta_k`` per agent, the vetoed maxima), ``order``,
    ``veto_size`` (``m``), ``n_survivors``, ``epsilon_bound`` (the a-priori bound
    ``max(eps, 1 - n m / N)`` on the verified ``eps``, which is in ``report["pvc_epsilon"]``;
    the report and :func:`pvc_epsilon` both read strict preference up to the samples' tie
    tolerance).

    Example
    -------
    >>> from policyagg.sampling import sample_policy_returns   # doctest: +SKIP
    >>> problem = solvers.with_ranges(problem)                   # doctest: +SKIP
    >>> samples = sample_policy_returns(problem, 10_000, rng=0)  # doctest: +SKIP
    >>> result = proportional_veto_core(problem, samples, eps=0.1)  # doctest: +SKIP
    >>> result.report["pvc_epsilon"] <= 0.1 + problem.n_agents / 10_000  # doctest: +SKIP
    True
    """
    problem, samples = call.problem, call.require_samples()
    n, N = problem.n_agents, samples.n_samples
    veto_order = _check_order(order, n)
    if n >= N:
        raise InvalidSamplesError(
            f"the proportional veto core needs more samples than agents (every agent vetoes at least one "
            f"and one must survive); got N = {N} samples for n = {n} agents"
        )
    m = min(math.ceil((1.0 - eps) * N / n - 1e-9), (N - 1) // n)
    thresholds, survivors = sequential_veto(samples.values, m, veto_order)

    lower = np.where(problem.require_ranges().flat, -np.inf, thresholds)
    region = [threshold_rows(problem, np.arange(n), lower, "veto thresholds")]

    # feasibility first, under the rule's own name: an empty region is reported as the PVC's
    call.solve(
        occupancy_program(
            problem, np.zeros(problem.mdp.n_state_actions), name="proportional veto core", maximize=True, rows=region
        )
    )
    d = complete(problem, region, how=completion, backend=call.backend, time_limit=call.time_limit, log=call.log)
    return call.finish(
        d,
        options={"order": veto_order.tolist()},
        thresholds=thresholds.tolist(),
        order=veto_order.tolist(),
        veto_size=int(m),
        n_survivors=int(survivors.size),
        epsilon_bound=float(max(eps, 1.0 - n * m / N)),
    )


def sequential_veto(values, veto_size: int, order) -> tuple[np.ndarray, np.ndarray]:
    """Agents in ``order`` each veto their ``veto_size`` lowest remaining samples.

    ``values`` is the ``(N, n)`` sample matrix. Ties are broken by sample index (a stable
    sort). Returns ``(thresholds, survivors)``: ``thresholds[k]`` is the largest value agent
    ``k`` vetoed (``-inf`` when ``veto_size = 0``) and ``survivors`` the indices never vetoed.
    """
    values = np.asarray(values, dtype=float)
    N, n = values.shape
    if veto_size * n > N:
        raise InvalidProblemError(f"{n} agents cannot each veto {veto_size} of {N} samples")
    alive = np.arange(N)
    thresholds = np.full(n, -np.inf)
    for k in order:
        if veto_size == 0:
            break
        column = values[alive, k]
        ranked = np.argsort(column, kind="stable")
        thresholds[k] = column[ranked[veto_size - 1]]
        alive = np.sort(alive[ranked[veto_size:]])
    return thresholds, alive


def pvc_epsilon(result_or_occupancy, samples, problem: Problem | None = None, *, method: str | None = None) -> float:
    """The smallest ``eps`` such that a result (or an occupancy) is in the eps-PVC on ``samples``.

    .. math:: \\varepsilon(d) = \\max_{\\emptyset \\ne T} \\mu(B_T) - 1 + |T| / n,
              \\qquad B_T = \\{k : V_{k,i} > J_i(d)\\ \\forall i \\in T\\}

    Parameters
    ----------
    result_or_occupancy : Result or array (S, A) / (S*A,)
        A :class:`~policyagg.result.Result` (its ``returns`` are used) or an occupancy
        measure, which then needs ``problem`` to compute the returns.
    samples : ReturnSamples or array (N, n)
    problem : Problem, optional

    The value is never negative (``T = N`` gives ``mu(B_N) >= 0``); ``eps(d) = 0`` is the exact
    (sampled) PVC. Computed by :func:`policyagg.metrics.pvc_epsilon` with ``method``
    (``"enumeration"`` of the ``2^n`` coalitions or ``"min_cut"``, both exact; default
    :func:`policyagg.metrics.pvc_method`: enumeration up to 20 agents).

    Strict preference is read with the samples' tie tolerance (``ReturnSamples.tolerance``,
    the one the ranks use): a sample within it of ``J_i(d)`` counts as a tie, not as strictly
    preferred. Without it an indifferent agent (same return on all of ``O``) would "strictly
    prefer" every sample whose return is larger by rounding error, and block alone.
    """
    if not isinstance(samples, ReturnSamples):
        values = np.asarray(samples, dtype=float)
        if values.ndim != 2 or values.shape[0] == 0:
            raise InvalidSamplesError(
                f"`samples` must be a ReturnSamples or a non-empty (N, n) array; got shape {values.shape}"
            )
        samples = ReturnSamples(values)
    if isinstance(result_or_occupancy, Result):
        returns = result_or_occupancy.returns
    else:
        if problem is None:
            raise InvalidProblemError("`problem` is required to compute the returns of an occupancy; pass problem=...")
        d = np.asarray(result_or_occupancy, dtype=float)
        if d.size != problem.mdp.n_state_actions:
            raise InvalidProblemError(
                f"`result_or_occupancy` must be a Result or an occupancy with S*A = {problem.mdp.n_state_actions} "
                f"entries; got shape {d.shape}"
            )
        returns = problem.returns(d)
    if samples.n_agents != returns.size:
        raise InvalidSamplesError(
            f"the samples have returns for {samples.n_agents} agents but the policy for {returns.size}"
        )
    return _returns_epsilon(returns + samples.tolerance, samples.values, method)


def _check_order(order, n: int) -> np.ndarray:
    if order is None:
        return np.arange(n)
    try:
        arr = np.asarray(order)
    except Exception as exc:  # ragged input and the like
        raise InvalidProblemError(
            f"`order` must be a permutation of the agent indices 0..{n - 1}; got {order!r}"
        ) from exc
    if (
        arr.ndim != 1
        or arr.size != n
        or not np.issubdtype(arr.dtype, np.integer)
        or not np.array_equal(np.sort(arr), np.arange(n))
    ):
        raise InvalidProblemError(f"`order` must be a permutation of the agent indices 0..{n - 1}; got {order!r}")
    return arr.astype(int)
