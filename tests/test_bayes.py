"""Bayesian aggregation (posteriors, clusters, MAP / MEU / Thompson / top-k / robust) and
entropy-regularised aggregation, checked against closed forms and independent LPs."""

import itertools
import math

import numpy as np
import pytest
from reference import lp_max, max_min
from scipy.special import logsumexp
from scipy.stats import norm

from policyagg import solvers
from policyagg.bayes import (
    adjusted_rand_index,
    fit_clusters,
    gaussian_posterior,
    pooled_noise,
    select_clusters,
)
from policyagg.entropy import causal_entropy, soft_value_iteration
from policyagg.errors import InvalidProblemError
from policyagg.lottery import Lottery
from policyagg.mdp import TabularMDP
from policyagg.polytope import budget, forbid
from policyagg.problem import Problem


def random_problem(seed, S=3, A=2, n=3, gamma=0.9):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    rho = rng.dirichlet(np.ones(S))
    return Problem(TabularMDP(P, rho=rho, gamma=gamma), rng.normal(size=(n, S, A)), weights=rng.uniform(0.5, 2, n))


def one_state_bandit(rewards, gamma=0.9):
    mdp = TabularMDP(np.ones((1, len(rewards[0]), 1)), gamma=gamma)
    return Problem(mdp, np.asarray(rewards, float)[:, None, :])


# ---------------------------------------------------------------- conjugate posterior
def test_conjugate_posterior_is_the_precision_weighted_average():
    rng = np.random.default_rng(0)
    votes, w = rng.normal(size=(4, 5)), np.array([1.0, 2.0, 0.5, 1.5])
    m0, tau, sigma = 0.3, 2.0, 0.7
    post = gaussian_posterior(votes, w, prior_mean=m0, prior_scale=tau, noise=sigma)
    for j in range(5):  # one scalar at a time: precision = 1/tau^2 + sum_i w_i / sigma^2
        precision = 1 / tau**2 + sum(w[i] / sigma**2 for i in range(4))
        mean = (m0 / tau**2 + sum(w[i] * votes[i, j] / sigma**2 for i in range(4))) / precision
        assert post.mean[j] == pytest.approx(mean, rel=1e-12)
        assert post.variance[j] == pytest.approx(1 / precision, rel=1e-12)


def test_pooled_noise_is_the_mean_unbiased_variance():
    votes = np.random.default_rng(1).normal(scale=0.4, size=(6, 7))
    assert pooled_noise(votes) == pytest.approx(np.sqrt(np.var(votes, axis=0, ddof=1).mean()), rel=1e-12)


def test_noise_free_votes_give_a_point_posterior_at_their_mean():
    votes = np.tile([1.0, 2.0, 3.0], (3, 1))
    post = gaussian_posterior(votes)
    np.testing.assert_allclose(post.mean, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(post.variance, 0.0)


# ---------------------------------------------------------------- clusters
def pair_counting_ari(a, b):
    """ARI from the four pair counts (same/same, same/diff, diff/same, diff/diff), pair by pair."""
    n11 = n10 = n01 = n00 = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        same_a, same_b = a[i] == a[j], b[i] == b[j]
        n11 += same_a and same_b
        n10 += same_a and not same_b
        n01 += same_b and not same_a
        n00 += not same_a and not same_b
    denominator = (n11 + n10) * (n10 + n00) + (n11 + n01) * (n01 + n00)
    return 1.0 if denominator == 0 else 2 * (n11 * n00 - n10 * n01) / denominator


def test_adjusted_rand_index_known_values_and_pair_counting():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
    assert adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == pytest.approx(0.0)
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, b = rng.integers(3, size=12), rng.integers(4, size=12)
        assert adjusted_rand_index(a, b) == pytest.approx(pair_counting_ari(a, b), abs=1e-12)


def clustered_votes(seed, sizes=(8, 12, 10), D=20, spread=3.0, noise=0.1):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(len(sizes), D))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return centers[labels] + rng.normal(scale=noise, size=(labels.size, D)), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bic_recovers_well_separated_clusters(seed):
    votes, labels = clustered_votes(seed)
    fit, bics = select_clusters(votes, np.random.default_rng(seed), max_clusters=6)
    assert fit.n_clusters == 3 and min(bics, key=bics.get) == 3
    assert adjusted_rand_index(labels, fit.labels) == 1.0
    assert fit.noise == pytest.approx(0.1, rel=0.2)
    np.testing.assert_allclose(np.sort(fit.proportions), np.sort([8, 12, 10]) / 30, atol=1e-6)


def test_em_is_reproducible_from_the_seed():
    votes, _ = clustered_votes(3)
    a = fit_clusters(votes, 3, np.random.default_rng(7))
    b = fit_clusters(votes, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.log_likelihood == b.log_likelihood


def test_cluster_rules_find_the_population_clusters():
    votes, labels = clustered_votes(4, sizes=(6, 8, 10), D=12, spread=1.0, noise=0.05)
    mdp = TabularMDP(np.random.default_rng(4).dirichlet(np.ones(4), size=(4, 3)), gamma=0.8)
    problem = Problem(mdp, votes.reshape(-1, 4, 3))
    result = solvers.bayes_meu(problem, model="clusters", normalize=False)
    info = result.diagnostics["posterior"]
    assert info["n_clusters"] == 3 and adjusted_rand_index(labels, info["cluster_labels"]) == 1.0
    # MAP under clusters: the optimum for the largest cluster's posterior mean, an increasing affine
    # function of the sum of its members' votes
    mode = solvers.bayes_map(problem, model="clusters", normalize=False)
    largest = votes[labels == np.bincount(labels).argmax()].sum(axis=0)
    best, _ = lp_max(largest, mdp.P_dense, mdp.rho, mdp.gamma)
    assert largest @ mode.occupancy.ravel() == pytest.approx(best, abs=1e-6)
    fixed = solvers.bayes_map(problem, model="clusters", n_clusters=2, normalize=False)
    assert fixed.diagnostics["posterior"]["n_clusters"] == 2
    with pytest.raises(InvalidProblemError, match="`n_clusters` must be at most the number of agents"):
        solvers.bayes_map(problem, model="clusters", n_clusters=30)


# ---------------------------------------------------------------- MAP and MEU
@pytest.mark.parametrize("gamma", [0.6, 1.0])
def test_map_is_the_optimum_for_the_posterior_mean(gamma):
    problem = random_problem(5, S=4, A=3, n=4, gamma=gamma)
    mdp = problem.mdp
    m0, tau, sigma = 0.2, 1.5, 0.8
    result = solvers.bayes_map(problem, normalize=False, prior_mean=m0, prior_scale=tau, noise=sigma)
    R, w = problem.reward_matrix, problem.weights
    mean = (sigma**2 * m0 + tau**2 * (w @ R)) / (sigma**2 + w.sum() * tau**2)  # closed form, by hand
    best, _ = lp_max(mean, mdp.P_dense, mdp.rho, gamma)
    assert mean @ result.occupancy.ravel() == pytest.approx(best, abs=1e-7)
    # ... which is utilitarian on the posterior mean
    on_mean = solvers.utilitarian(Problem(mdp, mean.reshape(1, *problem.rewards.shape[1:])))
    assert mean @ on_mean.occupancy.ravel() == pytest.approx(best, abs=1e-7)
    # and, the mean being increasing affine in the weighted votes, utilitarian on the votes
    assert R.T @ w @ solvers.utilitarian(problem).occupancy.ravel() == pytest.approx(
        (w @ R) @ result.occupancy.ravel(), abs=1e-7
    )


def test_maximum_expected_utility_is_the_posterior_mean_optimum():
    problem = random_problem(6, S=3, A=3, n=5, gamma=0.8)
    a = solvers.bayes_map(problem)
    b = solvers.bayes_meu(problem)
    assert b.diagnostics["expected_utility"] == pytest.approx(a.diagnostics["posterior_value"], abs=1e-7)
    # normalised votes: the posterior mean orders policies as the weighted sum of normalised returns
    u = solvers.utilitarian(problem, normalize=True)
    assert problem.weights @ b.normalized == pytest.approx(problem.weights @ u.normalized, abs=1e-7)


# ---------------------------------------------------------------- Thompson sampling
def test_thompson_frequencies_converge_to_the_argmax_probability():
    # one state, two arms; raw votes (0.9, 0) and (0, 0.1): the posterior is N(m_a, v) per arm with
    # m = (sum_i r_i) tau^2 / (sigma^2 + 2 tau^2), v = tau^2 sigma^2 / (sigma^2 + 2 tau^2)
    problem = one_state_bandit([[0.9, 0.0], [0.0, 0.1]])
    tau = sigma = 1.0
    m = np.array([0.9, 0.1]) / 3.0
    v = 1.0 / 3.0
    exact = norm.cdf((m[0] - m[1]) / math.sqrt(2 * v))  # P(U_0 > U_1)
    draws = 3000
    lottery = solvers.thompson(problem, normalize=False, prior_scale=tau, noise=sigma, draws=draws, pareto=False)
    assert isinstance(lottery, Lottery) and lottery.size == 2
    arm0 = lottery.probabilities[lottery.support_occupancies[:, 0, 0] > 0.5].sum()
    assert abs(arm0 - exact) < 4 * math.sqrt(exact * (1 - exact) / draws)


def test_top_k_keeps_the_most_frequent_optima_renormalised():
    problem = random_problem(8, S=3, A=3, n=4, gamma=0.7)
    full = solvers.thompson(problem, draws=60, pareto=False, noise=1.0)
    top = solvers.thompson_top_k(problem, draws=60, pareto=False, noise=1.0, k=2)
    assert full.size > 2 and top.size == 2
    kept = np.sort(full.probabilities)[-2:]
    np.testing.assert_allclose(np.sort(top.probabilities), kept / kept.sum(), atol=1e-12)
    assert top.diagnostics["truncated_mass"] == pytest.approx(1 - kept.sum(), abs=1e-12)


# ---------------------------------------------------------------- robust
def test_robust_is_the_maximin_over_the_credible_draws():
    problem = random_problem(9, S=3, A=2, n=3, gamma=0.9)
    mdp = problem.mdp
    result = solvers.bayes_robust(problem, normalize=False, noise=0.5, draws=40, level=0.5, seed=3, pareto=False)
    # the same draws, ranked by the Gaussian density (= by Mahalanobis distance to the mean)
    post = gaussian_posterior(problem.reward_matrix, problem.weights, noise=0.5)
    U = post.sample(np.random.default_rng(3), 40)
    kept = U[np.argsort(((U - post.mean) ** 2 / post.variance).sum(axis=1))[:20]]
    best = max_min(kept, mdp.P_dense, mdp.rho, mdp.gamma)
    assert result.diagnostics["credible_worst_case"] == pytest.approx(best, abs=1e-7)
    assert (kept @ result.occupancy.ravel()).min() == pytest.approx(best, abs=1e-6)
    assert (kept @ solvers.bayes_map(problem, normalize=False, noise=0.5).occupancy.ravel()).min() <= best + 1e-9


# ---------------------------------------------------------------- rights
@pytest.mark.parametrize("gamma", [0.8, 1.0])
def test_rights_hold_in_every_support_policy(gamma):
    problem = random_problem(10, S=3, A=3, n=4, gamma=gamma)
    mdp = problem.mdp
    cost = np.zeros((3, 3))
    cost[:, 2] = 1.0
    rights = forbid(mdp, 0, 0) & budget(mdp, cost, 0.2)
    for name in ("thompson", "thompson_top_k"):
        for pareto in (True, False):
            lottery = solvers.get_rule(name)(problem, constraints=rights, pareto=pareto, draws=30, noise=1.0)
            for d in lottery.support_occupancies:
                assert rights.violation(d) < 1e-7 and problem.polytope.violation(d) < 1e-7
    for name in ("bayes_map", "bayes_meu", "bayes_robust", "entropy_regularized"):
        result = solvers.get_rule(name)(problem, constraints=rights)
        assert rights.violation(result.occupancy) < 1e-7


# ---------------------------------------------------------------- entropy regularisation
def test_causal_entropy_of_the_uniform_policy_is_log_a():
    mdp = random_problem(11, S=4, A=3).mdp
    d = mdp.occupancy(np.full((4, 3), 1 / 3))
    assert causal_entropy(d) == pytest.approx(math.log(3), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_soft_value_iteration_on_a_bandit_is_the_log_sum_exp(gamma):
    r, beta = np.array([0.3, 1.0, -0.5]), 0.4
    soft = soft_value_iteration(TabularMDP(np.ones((1, 3, 1)), gamma=gamma), r[None, :], beta)
    assert soft.objective == pytest.approx(beta * logsumexp(r / beta), abs=1e-10)
    np.testing.assert_allclose(soft.policy[0], np.exp(r / beta) / np.exp(r / beta).sum(), atol=1e-10)


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_soft_value_iteration_brackets_the_lp_and_beats_random_policies(gamma):
    problem = random_problem(12, S=4, A=3, n=1, gamma=gamma)
    mdp, r, beta = problem.mdp, problem.reward_matrix[0], 0.05
    soft = soft_value_iteration(mdp, r, beta)
    best, _ = lp_max(r, mdp.P_dense, mdp.rho, gamma)
    assert best - 1e-9 <= soft.objective <= best + beta * math.log(3) + 1e-9
    assert r @ soft.occupancy.ravel() + beta * causal_entropy(soft.occupancy) == pytest.approx(soft.objective, abs=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = mdp.occupancy(rng.dirichlet(np.ones(3), size=4))
        assert r @ d.ravel() + beta * causal_entropy(d) <= soft.objective + 1e-9


@pytest.mark.parametrize("gamma", [0.8, 1.0])
def test_convex_program_agrees_with_soft_value_iteration(gamma):
    pytest.importorskip("cvxpy")
    problem = random_problem(13, S=4, A=3, n=3, gamma=gamma)
    soft = solvers.entropy_regularized(problem, beta=0.2, method="soft_vi")
    conic = solvers.entropy_regularized(problem, beta=0.2, method="convex")
    assert conic.diagnostics["objective_value"] == pytest.approx(soft.diagnostics["objective_value"], abs=1e-6)
    np.testing.assert_allclose(conic.occupancy, soft.occupancy, atol=1e-4)


@pytest.mark.parametrize("objective", ["egalitarian", "nash"])
def test_regularised_rules_trade_welfare_for_entropy_and_no_more(objective):
    pytest.importorskip("cvxpy")
    problem = solvers.with_ranges(random_problem(14, S=3, A=3, n=3, gamma=0.8))
    mdp, beta = problem.mdp, 0.05
    result = solvers.entropy_regularized(problem, beta=beta, objective=objective)
    lo, width = problem.ranges.lower, problem.ranges.width
    C = problem.reward_matrix / width[:, None]
    offset = lo / width
    w = problem.weights

    def welfare(d):
        u = C @ d.ravel() - offset
        return (u / w).min() if objective == "egalitarian" else w @ np.log(u)

    d = result.occupancy
    value = welfare(d) + beta * causal_entropy(d)
    assert value == pytest.approx(result.diagnostics["objective_value"], abs=1e-5)
    if objective == "egalitarian":  # the regularised optimum is at least the plain maximin (H >= 0) ...
        plain = max_min(C / w[:, None], mdp.P_dense, mdp.rho, mdp.gamma, offset=offset / w)
        assert value >= plain - 1e-6
        assert welfare(d) <= plain + 1e-7  # ... and its welfare at most the maximin
    rng = np.random.default_rng(1)
    for _ in range(30):  # no policy scores higher on welfare + beta H
        other = mdp.occupancy(rng.dirichlet(np.ones(3), size=3))
        assert welfare(other) + beta * causal_entropy(other) <= value + 1e-6


# ---------------------------------------------------------------- the experiment (item 5)
def test_cluster_experiment_runs_on_a_tiny_attention_model(tmp_path):
    from policyagg.experiments import bayes_clusters

    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\nseeds = [0]\n[environment]\nn_sites = 2\nn_phases = 2\n'
        "[population]\nprototypes = [[1.0, 0.0], [0.0, 1.0]]\nsizes = [6, 5]\nreward_noise = 0.5\n[posterior]\nmax_clusters = 3\n"
        '[[rules]]\nlabel = "MAP"\nrule = "bayes_map"\noptions = { model = "clusters" }\n'
        '[[rules]]\nlabel = "Thompson"\nrule = "thompson"\noptions = { model = "clusters", draws = 10 }\n'
        '[[rules]]\nlabel = "proportional"\nrule = "proportional"\noptions = { clusters = "fitted" }\n'
    )
    out = bayes_clusters.run(bayes_clusters.load_config(config), tmp_path / "out", log=lambda *_: None)
    for name in ("summary.csv", "summary.md", "bayes-clusters.png", "bayes-clusters.svg"):
        assert (out / name).stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "K = 2, ARI = 1.000" in text and "| proportional |" in text


def test_shipped_bayes_config_parses():
    from pathlib import Path

    from policyagg.experiments import bayes_clusters

    root = Path(__file__).resolve().parent.parent
    config = bayes_clusters.load_config(root / "experiments" / "configs" / "bayes" / "attention-clusters.toml")
    assert config.labels.size == sum(config.sizes) and len(config.rules) >= 5


def test_convex_program_stopped_by_the_time_limit_says_so():
    pytest.importorskip("cvxpy")
    from policyagg.errors import SolverTimeLimitError

    problem = random_problem(15, S=6, A=3, n=3, gamma=0.9)
    with pytest.raises(SolverTimeLimitError, match="time_limit=1e-09 s"):
        solvers.entropy_regularized(problem, objective="nash", time_limit=1e-9)
