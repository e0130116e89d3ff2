"""Bayesian aggregation: agents' rewards are noisy evidence about shared values ``U*``; a
decision rule turns the posterior into a policy or a lottery over policies.

Votes are the agents' normalised rewards ``v_i = C_i + c0_i`` (``normalize=True``, default:
``<v_i, d>`` is agent ``i``'s normalised return, so scales do not matter) or their raw rewards.
The posterior (:mod:`policyagg.bayes`) is the conjugate Gaussian one (``model="gaussian"``) or
a mixture over value clusters fitted by EM with ``K`` by BIC (``model="clusters"``).
Rights enter as hard constraints: every policy a rule returns, and every policy in a lottery's
support, lies in ``O ∩ C`` (``C`` the problem's and the call's linear constraints, norms compiled
to constraints included). Every rule works with any discount.

Decisions (``U`` a draw of ``U*``, ``d`` an occupancy):

* ``bayes_map``: ``max_{d in O ∩ C} <mode, d>`` (Gaussian: the posterior mean; clusters: the
  heaviest cluster's posterior mean);
* ``bayes_meu``: ``max_d E[<U*, d> | V] = max_d <E[U* | V], d>``. Utilities are linear in
  ``U*``, so the maximum expected utility is the optimum for the posterior mean (for the
  Gaussian model the same policy as ``bayes_map``);
* ``thompson``: draw ``U_1..U_M``; the lottery over ``argmax_d <U_m, d>`` (identical optima
  merged) with probabilities their frequencies;
* ``thompson_top_k``: the same draws, the ``k`` most frequent optima, probabilities
  renormalised frequencies;
* ``bayes_robust``: ``max_{d in O ∩ C} min_{U in S} <U, d>`` where ``S`` is the convex hull of
  the ``ceil(level * M)`` draws of highest posterior density (an empirical ``level`` credible
  set); the minimum of a linear function over a hull is at a vertex, so this is the LP
  ``max t s.t. t <= <U_m, d>`` over the kept draws (draws as agents).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from policyagg.bayes import (
    GaussianPosterior,
    MixturePosterior,
    fit_clusters,
    gaussian_posterior,
    mixture_posterior,
    select_clusters,
)
from policyagg.errors import InvalidProblemError
from policyagg.lottery import Lottery
from policyagg.planning import PolicyIteration
from policyagg.result import Result
from policyagg.solvers.completion import pareto_improvement
from policyagg.solvers.occupancy import Rows, _certified_optimum, make_model, occupancy_program, unit_cost, utilities
from policyagg.solvers.registry import OptionSpec, RuleCall, choice, flag, integer, number, register_rule

#: Two optima of draws are one support policy when their occupancies differ by at most this (max-norm).
SAME_POLICY_TOL = 1e-7

Posterior = GaussianPosterior | MixturePosterior

#: The posterior options every Bayesian rule takes.
POSTERIOR_OPTIONS: dict[str, OptionSpec] = {
    "model": choice(("gaussian", "clusters"), help="likelihood: one shared U* with Gaussian noise, or value clusters"),
    "normalize": flag("votes are normalised rewards (return = normalised return) instead of raw rewards"),
    "prior_mean": number(help="the Gaussian prior's mean of every U*(s, a)"),
    "prior_scale": number(0, low_open=True, help="the Gaussian prior's standard deviation of every U*(s, a)"),
    "noise": number(0, help="the votes' noise standard deviation (None: estimated from the votes)"),
    "n_clusters": integer(1, help="the number of value clusters (None: chosen by BIC)"),
    "max_clusters": integer(1, help="the largest number of clusters BIC considers"),
    "seed": integer(0, help="seed of the EM starts and the posterior draws"),
}
DRAW_OPTIONS: dict[str, OptionSpec] = {
    "draws": integer(1, help="posterior draws M"),
    "pareto": flag("lift each chosen policy to a Pareto-optimal one that makes no agent worse"),
}


def votes_of(call: RuleCall, normalize: bool) -> np.ndarray:
    """The votes ``(n, S*A)``: normalised rewards ``C_i + c0_i`` (``sum d = 1`` makes the
    constant part of the return) or the raw rewards."""
    C, c0 = utilities(call.problem, normalize)
    return np.asarray(C + c0[:, None])


def posterior_of(
    call: RuleCall,
    rng: np.random.Generator,
    *,
    model: str,
    normalize: bool,
    prior_mean: float,
    prior_scale: float,
    noise: float | None,
    n_clusters: int | None,
    max_clusters: int,
) -> tuple[Posterior, dict[str, Any]]:
    """The posterior of ``U*`` for the call's votes and weights, and diagnostics describing it."""
    votes, weights = votes_of(call, normalize), call.problem.weights
    if model == "gaussian":
        post = gaussian_posterior(votes, weights, prior_mean=prior_mean, prior_scale=prior_scale, noise=noise)
        return post, {"model": "gaussian", "noise": post.noise, "posterior_sd": float(np.sqrt(post.variance[0]))}
    if n_clusters is not None:
        if n_clusters > votes.shape[0]:
            raise InvalidProblemError(
                f"`n_clusters` must be at most the number of agents ({votes.shape[0]}); got {n_clusters}"
            )
        fit, bics = fit_clusters(votes, n_clusters, rng, weights), dict[int, float]()
    else:
        fit, bics = select_clusters(votes, rng, weights, max_clusters=max_clusters)
    post_mix = mixture_posterior(votes, fit, weights, prior_mean=prior_mean, prior_scale=prior_scale)
    info = {
        "model": "clusters",
        "n_clusters": fit.n_clusters,
        "cluster_labels": fit.labels.tolist(),
        "cluster_proportions": fit.proportions.tolist(),
        "noise": fit.noise,
        "bic": {str(k): v for k, v in bics.items()},
    }
    return post_mix, info


def optima(call: RuleCall, costs: np.ndarray, name: str) -> np.ndarray:
    """``argmax_{d in O ∩ C} <c_m, d>`` for each row of ``costs`` (m, S*A).

    Without extra constraints each is first solved by policy iteration (warm from the previous
    draw's policy), kept when its certificate (the LP dual bound) meets its value, as for the
    return ranges; otherwise, and always with constraints, by one warm LP model."""
    planner = None if len(call.problem.constraints) else PolicyIteration(call.problem.mdp)
    model = None
    out = np.empty_like(costs)
    for m, cost in enumerate(costs):
        d = _certified_optimum(planner, unit_cost(cost)) if planner is not None else None
        if d is None:
            if model is None:
                program = occupancy_program(call.problem, unit_cost(cost), name=name, maximize=True)
                model = make_model(program, backend=call.backend, time_limit=call.time_limit)
            model.set_cost(unit_cost(cost))
            d = call.log.add(model.solve()).x
        out[m] = np.clip(d, 0.0, None)
    return out


def distinct(occupancies: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge rows within :data:`SAME_POLICY_TOL`: ``(representatives, counts, index)`` with
    ``index[m]`` the representative of row ``m``; representatives in order of first appearance."""
    reps: list[np.ndarray] = []
    counts: list[int] = []
    index = np.empty(len(occupancies), dtype=int)
    for m, d in enumerate(occupancies):
        for j, r in enumerate(reps):
            if np.abs(d - r).max() <= SAME_POLICY_TOL:
                counts[j] += 1
                index[m] = j
                break
        else:
            index[m] = len(reps)
            reps.append(d)
            counts.append(1)
    return np.stack(reps), np.asarray(counts, dtype=float), index


def lifted(call: RuleCall, occupancies: np.ndarray) -> tuple[np.ndarray, float]:
    """Each row replaced by a Pareto-optimal point of ``O ∩ C`` that makes no agent worse
    (:func:`~policyagg.solvers.completion.pareto_improvement`), and the largest gap closed."""
    out, largest = np.empty_like(occupancies), 0.0
    for k, d in enumerate(occupancies):
        gap, out[k] = pareto_improvement(
            call.problem, d, backend=call.backend, time_limit=call.time_limit, log=call.log
        )
        largest = max(largest, gap)
    return out, largest


# ---------------------------------------------------------------------------- point decisions
@register_rule("bayes_map", options=POSTERIOR_OPTIONS)
def bayes_map(
    call: RuleCall,
    *,
    model: str = "gaussian",
    normalize: bool = True,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
    noise: float | None = None,
    n_clusters: int | None = None,
    max_clusters: int = 6,
    seed: int = 0,
) -> Result:
    """MAP: the optimal policy for the posterior mode of ``U*``, ``max_{d in O ∩ C} <mode, d>``.

    Gaussian model: the mode is the posterior mean, ``a * sum_i w_i v_i + b`` with ``a > 0``
    (module docstring), so the policy is utilitarian on the weighted votes. Clusters: the mode is
    taken as the heaviest cluster's posterior mean (majority cluster wins).
    """
    post, info = posterior_of(
        call,
        np.random.default_rng(seed),
        model=model,
        normalize=normalize,
        prior_mean=prior_mean,
        prior_scale=prior_scale,
        noise=noise,
        n_clusters=n_clusters,
        max_clusters=max_clusters,
    )
    d = call.maximize(post.mode)
    return call.finish(d, posterior=info, posterior_value=float(post.mode @ d))


@register_rule("bayes_meu", options=POSTERIOR_OPTIONS)
def bayes_meu(
    call: RuleCall,
    *,
    model: str = "gaussian",
    normalize: bool = True,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
    noise: float | None = None,
    n_clusters: int | None = None,
    max_clusters: int = 6,
    seed: int = 0,
) -> Result:
    """Maximum expected utility: ``max_{d in O ∩ C} E[<U*, d> | V] = max_d <E[U* | V], d>``.

    The utility is linear in ``U*``, so this is the optimal policy for the posterior mean
    (Gaussian model: the same as ``bayes_map``; clusters: the proportion-weighted mean of the
    clusters' posterior means).
    """
    post, info = posterior_of(
        call,
        np.random.default_rng(seed),
        model=model,
        normalize=normalize,
        prior_mean=prior_mean,
        prior_scale=prior_scale,
        noise=noise,
        n_clusters=n_clusters,
        max_clusters=max_clusters,
    )
    d = call.maximize(post.mean)
    return call.finish(d, posterior=info, expected_utility=float(post.mean @ d))


@register_rule("bayes_robust", options={**POSTERIOR_OPTIONS, **DRAW_OPTIONS, "level": number(0, 1, low_open=True)})
def bayes_robust(
    call: RuleCall,
    *,
    model: str = "gaussian",
    normalize: bool = True,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
    noise: float | None = None,
    n_clusters: int | None = None,
    max_clusters: int = 6,
    seed: int = 0,
    draws: int = 100,
    pareto: bool = True,
    level: float = 0.9,
) -> Result:
    """Robust: the maximin over an empirical posterior credible set,
    ``max_{d in O ∩ C} min_{m in S} <U_m, d>``.

    ``U_1..U_M`` are posterior draws and ``S`` the ``ceil(level * M)`` of them with the highest
    posterior density; the LP is ``max t`` s.t. ``t <= <U_m, d>`` (m in S) over ``O ∩ C``.
    ``diagnostics["credible_worst_case"]`` is ``t``. Like every rule's default output, the point is
    then lifted to a Pareto-optimal one that makes no agent worse (``pareto=True``); the lift
    may lower the worst case, reported after it in ``diagnostics["worst_case"]``.
    ``pareto=False`` returns the maximin point itself.
    """
    rng = np.random.default_rng(seed)
    post, info = posterior_of(
        call,
        rng,
        model=model,
        normalize=normalize,
        prior_mean=prior_mean,
        prior_scale=prior_scale,
        noise=noise,
        n_clusters=n_clusters,
        max_clusters=max_clusters,
    )
    U = post.sample(rng, draws)
    keep = np.argsort(-post.log_density(U), kind="stable")[: math.ceil(level * draws)]
    S = U[keep]
    scale = float(np.abs(S).max(initial=0.0)) or 1.0
    n_d = S.shape[1]
    rows = Rows(
        "credible set",
        sp.csr_array(np.hstack([-S / scale, np.ones((S.shape[0], 1))])),
        np.full(S.shape[0], -np.inf),
        np.zeros(S.shape[0]),
    )
    cost = np.zeros(n_d + 1)
    cost[-1] = 1.0
    program = occupancy_program(
        call.problem,
        cost,
        name="bayes robust",
        maximize=True,
        extra_cols=1,
        col_lower=np.r_[np.zeros(n_d), -np.inf],
        col_upper=np.full(n_d + 1, np.inf),
        rows=[rows],
    )
    d = np.clip(call.solve(program).x[:n_d], 0.0, None)
    d /= d.sum()
    best = float((S @ d).min())
    if pareto:
        d = lifted(call, d[None])[0][0]
    return call.finish(
        d,
        lift=pareto,
        posterior=info,
        credible_worst_case=best,
        worst_case=float((S @ d).min()),
        credible_draws=int(S.shape[0]),
    )


# ---------------------------------------------------------------------------- lotteries
def _thompson(call: RuleCall, rng: np.random.Generator, post: Posterior, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct optima of ``draws`` posterior draws and how often each was drawn."""
    occupancies = optima(call, post.sample(rng, draws), name="thompson draw")
    reps, counts, _ = distinct(occupancies)
    return reps, counts


def _lottery(
    call: RuleCall, occupancies: np.ndarray, probabilities: np.ndarray, pareto: bool, **diagnostics: Any
) -> Lottery:
    if pareto:
        occupancies, gap = lifted(call, occupancies)
        diagnostics["pareto_lift"] = gap
    return call.finish_lottery(occupancies, probabilities, **diagnostics)


@register_rule("thompson", options={**POSTERIOR_OPTIONS, **DRAW_OPTIONS})
def thompson(
    call: RuleCall,
    *,
    model: str = "gaussian",
    normalize: bool = True,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
    noise: float | None = None,
    n_clusters: int | None = None,
    max_clusters: int = 6,
    seed: int = 0,
    draws: int = 100,
    pareto: bool = True,
) -> Lottery:
    """Thompson sampling: a lottery over the optimal policies of ``M`` posterior draws,
    ``P(pi) = #{m : argmax_{d in O ∩ C} <U_m, d> = d_pi} / M`` (identical optima merged).

    The frequencies estimate the posterior probability that each policy is the best one and
    converge to it as ``M -> inf``. ``pareto=True`` (default, as every rule's output) then lifts
    each support policy to a Pareto-optimal one that makes no agent worse (the optimum of a draw
    need not be Pareto optimal for the agents' stated rewards; ``diagnostics["pareto_lift"]`` is
    the largest gap closed, identical lifted policies are merged); ``pareto=False`` keeps the
    draws' optima themselves.
    """
    rng = np.random.default_rng(seed)
    post, info = posterior_of(
        call,
        rng,
        model=model,
        normalize=normalize,
        prior_mean=prior_mean,
        prior_scale=prior_scale,
        noise=noise,
        n_clusters=n_clusters,
        max_clusters=max_clusters,
    )
    reps, counts = _thompson(call, rng, post, draws)
    return _lottery(call, reps, counts / counts.sum(), pareto, posterior=info, distinct=int(counts.size))


@register_rule("thompson_top_k", options={**POSTERIOR_OPTIONS, **DRAW_OPTIONS, "k": integer(1)})
def thompson_top_k(
    call: RuleCall,
    *,
    model: str = "gaussian",
    normalize: bool = True,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
    noise: float | None = None,
    n_clusters: int | None = None,
    max_clusters: int = 6,
    seed: int = 0,
    draws: int = 100,
    pareto: bool = True,
    k: int = 3,
) -> Lottery:
    """Top-k truncated sampling: Thompson's draws, the ``k`` most frequent optimal policies
    (ties: first drawn first), probabilities their frequencies renormalised to sum 1.

    ``diagnostics["truncated_mass"]`` is the Thompson probability left out; ``pareto`` as for
    ``thompson``.
    """
    rng = np.random.default_rng(seed)
    post, info = posterior_of(
        call,
        rng,
        model=model,
        normalize=normalize,
        prior_mean=prior_mean,
        prior_scale=prior_scale,
        noise=noise,
        n_clusters=n_clusters,
        max_clusters=max_clusters,
    )
    reps, counts = _thompson(call, rng, post, draws)
    top = np.argsort(-counts, kind="stable")[:k]
    kept = counts[top]
    return _lottery(
        call,
        reps[top],
        kept / kept.sum(),
        pareto,
        posterior=info,
        distinct=int(counts.size),
        truncated_mass=float(1.0 - kept.sum() / counts.sum()),
    )
