import itertools

import numpy as np
import pytest
from conftest import bandit, leaky_average, random_problems
from hypothesis import given, settings
from hypothesis import strategies as st

from policyagg import solvers
from policyagg.errors import InfeasibleError, InvalidProblemError, InvalidSamplesError
from policyagg.mdp import TabularMDP
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.pvc import proportional_veto_core, pvc_epsilon, sequential_veto


def simplex_bandit(rewards, weights=None):
    """One state, one action per column of ``rewards`` (n, A): d is a point of the simplex."""
    rewards = np.asarray(rewards, float)
    mdp = TabularMDP(np.ones((1, rewards.shape[1], 1)), gamma=0.9)
    return solvers.with_ranges(Problem(mdp, rewards[:, None, :], weights=weights))


def bandit_samples(problem, p):
    """Samples of the 2-action bandit at the given p (d = (p, 1 - p))."""
    p = np.asarray(p, float)
    return ReturnSamples(np.column_stack([p, 1 - p]) @ problem.reward_matrix.T)


def brute_force_epsilon(returns, values):
    """max over non-empty coalitions T of mu(B_T) - 1 + |T|/n, one coalition at a time."""
    N, n = values.shape
    best = -np.inf
    for size in range(1, n + 1):
        for T in itertools.combinations(range(n), size):
            blocked = sum(all(values[k, i] > returns[i] for i in T) for k in range(N))
            best = max(best, blocked / N - 1 + size / n)
    return best


# ------------------------------------------------------------------ by hand
def test_bandit_by_hand_region_binds():
    # J = (p, 3 (1 - p)); samples p = .55, .60, ..., .85 (N = 7), n = 2, eps = 0:
    # m = min(ceil(7/2), floor(6/2)) = 3. Agent 0 vetoes p = .55, .60, .65 -> theta_0 = .65;
    # agent 1 vetoes p = .85, .80, .75 -> theta_1 = 3 * .25 = .75 (p <= .75); p = .70 survives.
    # Leximin of (p, 1 - p) inside p in [.65, .75] is p = .65 (plus the completion's margin).
    problem = solvers.with_ranges(bandit())
    samples = bandit_samples(problem, [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85])
    result = proportional_veto_core(problem, samples)
    np.testing.assert_allclose(result.diagnostics["thresholds"], [0.65, 0.75], atol=1e-12)
    assert result.diagnostics["veto_size"] == 3 and result.diagnostics["n_survivors"] == 1
    np.testing.assert_allclose(result.returns, [0.65, 1.05], atol=5e-5)
    assert result.returns[0] > 0.65  # the vetoed sample at .65 is not strictly preferred ...
    # ... so only T = {0} counts: it strictly prefers p = .70, .75, .80, .85: 4/7 - 1/2 = 1/14
    assert result.report["pvc_epsilon"] == pytest.approx(1 / 14, abs=1e-12)
    assert result.diagnostics["epsilon_bound"] == pytest.approx(1 / 7)  # 1 - n m / N
    assert result.report["pareto_optimal"]


def test_bandit_by_hand_symmetric_grid():
    # p = 0, .1, ..., 1 (N = 11): m = 5; theta = (.4, 3 * .4 = 1.2): region p in [.4, .6]
    problem = solvers.with_ranges(bandit())
    samples = bandit_samples(problem, np.linspace(0, 1, 11))
    result = proportional_veto_core(problem, samples)
    np.testing.assert_allclose(result.diagnostics["thresholds"], [0.4, 1.2], atol=1e-12)
    np.testing.assert_allclose(result.returns, [0.5, 1.5], atol=1e-6)
    # T = {0}: 5 samples above .5 (5/11 - 1/2 < 0); T = {0, 1}: none (0 - 1 + 1 = 0)
    assert result.report["pvc_epsilon"] == pytest.approx(0.0, abs=1e-12)
    util = proportional_veto_core(problem, samples, completion="utilitarian")
    assert 0.4 - 1e-7 <= util.returns[0] <= 0.6 + 1e-7  # normalised welfare is flat: any point of the region
    # eps = 0.5: m = ceil(0.5 * 11 / 2) = 3: theta = (.2, 3 * .2 = .6): region p in [.2, .8]
    loose = proportional_veto_core(problem, samples, eps=0.5, completion="utilitarian")
    np.testing.assert_allclose(loose.diagnostics["thresholds"], [0.2, 0.6], atol=1e-12)
    assert loose.diagnostics["veto_size"] == 3 and loose.options["eps"] == 0.5
    assert 0.2 - 1e-7 <= loose.returns[0] <= 0.8 + 1e-7


def test_order_changes_thresholds_as_expected():
    # 3 actions; J = (x, y) for d = (x, y, 1 - x - y): both agents dislike action 2.
    problem = simplex_bandit([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    xy = np.array([[0, 0], [0.1, 0], [0, 0.2], [0.3, 0.3], [0.5, 0.1], [0.2, 0.6], [0.4, 0.4]])
    samples = ReturnSamples(xy)  # N = 7, m = 3
    # order (0, 1): agent 0 vetoes x = 0, 0, .1 (samples 0, 2, 1) -> .1; agent 1 then y = .1, .3, .4 -> .4
    first = proportional_veto_core(problem, samples)
    np.testing.assert_allclose(first.diagnostics["thresholds"], [0.1, 0.4])
    assert first.diagnostics["order"] == [0, 1]
    # order (1, 0): agent 1 vetoes y = 0, 0, .1 (samples 0, 1, 4) -> .1; agent 0 then x = 0, .2, .3 -> .3
    second = proportional_veto_core(problem, samples, order=[1, 0])
    np.testing.assert_allclose(second.diagnostics["thresholds"], [0.3, 0.1])
    assert second.options["order"] == [1, 0]
    for result in (first, second):  # leximin of (x, y) is (.5, .5), inside both regions
        np.testing.assert_allclose(result.returns, [0.5, 0.5], atol=1e-6)
    _, survivors = sequential_veto(xy, 3, [0, 1])
    assert survivors.tolist() == [5]
    _, survivors = sequential_veto(xy, 3, [1, 0])
    assert survivors.tolist() == [6]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 40), st.integers(0, 2**32 - 1))
def test_sequential_veto_matches_a_plain_loop(n, N, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, size=(N, n)).astype(float)  # many ties
    order = rng.permutation(n)
    m = (N - 1) // n
    thresholds, survivors = sequential_veto(values, m, order)
    alive = list(range(N))
    for k in order:
        if m == 0:
            break
        ranked = sorted(alive, key=lambda j: (values[j, k], j))
        assert thresholds[k] == values[ranked[m - 1], k]
        alive = sorted(ranked[m:])
    assert survivors.tolist() == alive
    assert len(alive) == N - n * m
    # every survivor is at or above every threshold
    assert (values[survivors] >= thresholds).all()


# ------------------------------------------------------------------ verifier
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_verifier_agrees_with_brute_force(n, N, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, size=(N, n)).astype(float)  # ties between samples and with d
    returns = rng.integers(0, 4, size=n).astype(float)
    if rng.random() < 0.3:
        returns = values[rng.integers(N)].copy()  # d equal to a sample
    expected = brute_force_epsilon(returns, values)
    assert pvc_epsilon(returns_to_result(returns), values) == pytest.approx(expected, abs=1e-12)
    assert pvc_epsilon(returns_to_result(returns), ReturnSamples(values)) == pytest.approx(expected, abs=1e-12)


def returns_to_result(returns):
    """A minimal Result carrying only ``returns`` (the verifier reads nothing else)."""
    from policyagg.result import Result

    n = len(returns)
    return Result(
        rule="x",
        occupancy=np.ones((1, 1)),
        policy=np.ones((1, 1)),
        returns=np.asarray(returns),
        normalized=np.zeros(n),
        ranks=None,
        names=tuple(map(str, range(n))),
        gini=0.0,
    )


def test_verifier_on_an_occupancy_and_a_known_blocked_point():
    # both agents like action 0 (agent 1 twice as much): agent 0's worst policy p = 0 is blocked
    # by the grand coalition with every sample p > 0: 10/11 - 1 + 2/2 = 10/11
    problem = solvers.with_ranges(bandit(rewards=((1.0, 0.0), (2.0, 0.0))))
    samples = bandit_samples(problem, np.linspace(0, 1, 11))
    worst = problem.ranges.worst[0]
    assert pvc_epsilon(worst, samples, problem) == pytest.approx(10 / 11)
    assert pvc_epsilon(worst.reshape(1, 2), samples.values, problem=problem) == pytest.approx(10 / 11)
    result = proportional_veto_core(problem, samples)
    np.testing.assert_allclose(result.returns, [1.0, 2.0], atol=1e-7)  # p = 1: nobody prefers anything
    assert pvc_epsilon(result, samples) == pytest.approx(0.0, abs=1e-12)
    assert result.report["pvc_epsilon"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InvalidProblemError, match=r"`problem` is required"):
        pvc_epsilon(worst, samples)
    with pytest.raises(InvalidProblemError, match=r"S\*A = 2"):
        pvc_epsilon(np.ones(3) / 3, samples, problem)
    with pytest.raises(InvalidSamplesError, match=r"3 agents"):
        pvc_epsilon(result, np.zeros((5, 3)))


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(random_problems(gammas=(0.5, 0.9)))
def test_constructed_policy_is_in_the_eps_core(problem):
    problem = solvers.with_ranges(problem)
    N = 2000
    samples = sample_policy_returns(problem, N, rng=0, progress=False)
    n = problem.n_agents
    for eps in (0.0, 0.1, 0.3):
        result = proportional_veto_core(problem, samples, eps=eps)
        bound = result.diagnostics["epsilon_bound"]
        assert bound <= max(eps, n / N) + 1e-12
        assert pvc_epsilon(result, samples) <= bound + 1e-12
        assert result.report["pvc_epsilon"] == pvc_epsilon(result, samples)  # same tie tolerance
        assert result.report["pareto_optimal"], result.report
        assert problem.polytope.violation(result.occupancy) < 1e-7
        flat = problem.ranges.flat
        theta = np.array(result.diagnostics["thresholds"])
        assert (result.returns[~flat] >= theta[~flat]).all()


def test_backends_agree():
    problem = solvers.with_ranges(leaky_average())
    samples = sample_policy_returns(problem, 500, rng=1, progress=False)
    a = proportional_veto_core(problem, samples, eps=0.1, backend="highs")
    b = proportional_veto_core(problem, samples, eps=0.1, backend="pulp")
    np.testing.assert_allclose(a.returns, b.returns, atol=1e-6)  # leximin completion: unique returns
    assert a.diagnostics["thresholds"] == b.diagnostics["thresholds"]
    assert b.diagnostics["backend"] == "pulp" and a.report["pareto_optimal"] and b.report["pareto_optimal"]


def test_region_cut_off_by_constraints_names_the_rule_and_the_family():
    problem = solvers.with_ranges(bandit())
    samples = bandit_samples(problem, [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85])  # region p in [.65, .75]
    cap = LinearConstraints.build(2, A_ub=[[1.0, 0.0]], b_ub=[0.5], label="cap on action 0")
    with pytest.raises(InfeasibleError, match=r"'proportional veto core'.*'veto thresholds'"):
        proportional_veto_core(problem, samples, constraints=cap)
    result = proportional_veto_core(
        problem, samples, constraints=LinearConstraints.build(2, A_ub=[[1.0, 0.0]], b_ub=[0.7], label="cap")
    )
    np.testing.assert_allclose(result.returns[0], 0.65, atol=1e-5)


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("eps", [-0.1, 1.0, 2, float("nan"), "0.1", True, None])
def test_bad_eps(eps):
    problem = solvers.with_ranges(bandit())
    with pytest.raises(InvalidProblemError, match=r"`eps` must"):
        proportional_veto_core(problem, bandit_samples(problem, [0.1, 0.5, 0.9]), eps=eps)


@pytest.mark.parametrize("order", [[0, 0], [0], [0, 1, 2], [1, 2], [0.0, 1.0], [[0, 1]]])
def test_bad_order(order):
    problem = solvers.with_ranges(bandit())
    with pytest.raises(InvalidProblemError, match=r"`order` must be a permutation of the agent indices 0..1"):
        proportional_veto_core(problem, bandit_samples(problem, [0.1, 0.5, 0.9]), order=order)


@pytest.mark.parametrize("order", ["ab", 3])
def test_order_must_be_a_sequence(order):
    problem = solvers.with_ranges(bandit())
    with pytest.raises(InvalidProblemError, match=r"`order` must be None or a sequence with one entry per agent"):
        proportional_veto_core(problem, bandit_samples(problem, [0.1, 0.5, 0.9]), order=order)


def test_bad_completion_and_missing_or_too_few_samples():
    problem = solvers.with_ranges(bandit())
    samples = bandit_samples(problem, [0.1, 0.5, 0.9])
    with pytest.raises(InvalidProblemError, match=r"`completion` must be one of egalitarian, utilitarian"):
        proportional_veto_core(problem, samples, completion="borda")
    with pytest.raises(InvalidSamplesError, match=r"needs sampled returns"):
        proportional_veto_core(problem)
    with pytest.raises(InvalidSamplesError, match=r"more samples than agents"):
        proportional_veto_core(problem, bandit_samples(problem, [0.1, 0.9]))
    with pytest.raises(InvalidSamplesError, match=r"3 agents but the problem has 2"):
        proportional_veto_core(problem, ReturnSamples(np.zeros((5, 3))))


def test_indifferent_agent_does_not_block_by_rounding_error():
    # agent 0 gets 0.3 whatever happens; sampled returns carry rounding noise above and below
    problem = solvers.with_ranges(bandit(rewards=((0.3, 0.3), (0.0, 1.0))))
    p = np.linspace(0, 1, 21)
    noise = np.where(np.arange(21) % 2, 1e-16, -1e-16)
    samples = ReturnSamples(np.column_stack([0.3 + noise, 1 - p]))
    result = proportional_veto_core(problem, samples)
    np.testing.assert_allclose(result.returns, [0.3, 1.0], atol=1e-9)  # leximin: agent 1's best
    assert pvc_epsilon(result, samples) == pytest.approx(0.0, abs=1e-12)  # nobody strictly prefers anything


# ------------------------------------------------------------------ the verifier at any n (min cut)
def random_verifier_instance(rng, n, N):
    """Integer sample values (many ties, also with ``d``), ``d`` sometimes equal to a sample or dominated."""
    values = rng.integers(0, rng.integers(2, 6), size=(N, n)).astype(float)
    returns = rng.integers(0, 4, size=n).astype(float)
    draw = rng.random()
    if draw < 0.25:
        returns = values[rng.integers(N)].copy()
    elif draw < 0.35:
        returns = np.full(n, -1.0)  # everybody prefers every sample
    elif draw < 0.45:
        returns = np.full(n, 10.0)  # nobody prefers anything
    return returns, values


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_min_cut_equals_the_enumeration(n, N, seed):
    from policyagg.metrics import pvc_epsilon as returns_epsilon

    returns, values = random_verifier_instance(np.random.default_rng(seed), n, N)
    enumerated = returns_epsilon(returns, values, "enumeration")
    assert returns_epsilon(returns, values, "min_cut") == pytest.approx(enumerated, abs=1e-12)
    if n <= 5:
        assert enumerated == pytest.approx(brute_force_epsilon(returns, values), abs=1e-12)


def test_min_cut_by_hand():
    # n = 3, N = 4; agents 0, 1 both prefer samples 0, 1, 2; agent 2 only sample 3.
    # T = {0, 1}: 3/4 - 1 + 2/3 = 5/12; T = {0}: 3/4 - 1 + 1/3 = 1/12; T = {2}: 1/4 - 2/3 < 0; T = N: 0.
    values = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]], float)
    from policyagg.metrics import pvc_epsilon as returns_epsilon

    assert returns_epsilon(np.full(3, 0.5), values, "min_cut") == pytest.approx(5 / 12, abs=1e-15)
    with pytest.raises(InvalidProblemError, match=r"`method` must be one of"):
        returns_epsilon(np.full(3, 0.5), values, "magic")
    with pytest.raises(InvalidProblemError, match=r"method='min_cut'"):
        returns_epsilon(np.zeros(21), np.ones((3, 21)), "enumeration")


def test_min_cut_with_many_agents_matches_a_planted_coalition():
    # 60 agents, 300 samples: agents 0..39 all prefer samples 0..199 (and nothing else is preferred
    # by two or more of them); the best coalition is those 40 agents: 200/300 - 1 + 40/60 = 1/3.
    rng = np.random.default_rng(0)
    n, N = 60, 300
    values = np.zeros((N, n))
    values[:200, :40] = 1.0
    values[200:, 40:] = rng.integers(0, 2, size=(100, 20))  # agents 40..59: scattered preferences
    values[200:, 40] = 1.0  # agent 40 alone prefers 100 samples: 100/300 - 1 + 1/60 < 1/3
    assert pvc_epsilon(returns_to_result(np.full(n, 0.5)), values) == pytest.approx(1 / 3, abs=1e-12)


@pytest.mark.parametrize("n", [30, 200])
def test_report_is_filled_for_many_agents(n):
    rng = np.random.default_rng(n)
    rewards = rng.random((n, 3))
    problem = simplex_bandit(rewards)
    samples = sample_policy_returns(problem, 2 * n + 50, rng=0, progress=False)
    result = proportional_veto_core(problem, samples, eps=0.1)
    assert result.report["pvc_epsilon_method"] == "min_cut"
    eps = result.report["pvc_epsilon"]
    assert isinstance(eps, float) and 0.0 <= eps <= result.diagnostics["epsilon_bound"] + 1e-12
    assert eps == pvc_epsilon(result, samples)  # same tie tolerance, same (default) method
    small = proportional_veto_core(
        simplex_bandit(rewards[:3]), sample_policy_returns(simplex_bandit(rewards[:3]), 50, rng=0, progress=False)
    )
    assert small.report["pvc_epsilon_method"] == "enumeration"


def random_mdp_problem(n, rng):
    """A small random MDP (4 states, 3 actions) with ``n`` agents of uniform random rewards."""
    P = rng.dirichlet(np.ones(4), size=(4, 3))
    return solvers.with_ranges(Problem(TabularMDP(P, gamma=0.9), rng.random((n, 4, 3))))


@pytest.mark.slow
def test_sequential_veto_rule_with_a_thousand_agents():
    # n = 1000, N = 3000: m = min(ceil(.9 * 3), floor(2999 / 1000)) = 2, so 1000 samples survive
    problem = random_mdp_problem(1000, np.random.default_rng(0))
    samples = sample_policy_returns(problem, 3000, rng=0, progress=False, workers=1)
    result = proportional_veto_core(problem, samples, eps=0.1, completion="utilitarian")
    assert result.diagnostics["veto_size"] == 2 and result.diagnostics["n_survivors"] == 1000
    assert result.report["pvc_epsilon_method"] == "min_cut"
    assert 0.0 <= result.report["pvc_epsilon"] <= result.diagnostics["epsilon_bound"] + 1e-12
    theta = np.array(result.diagnostics["thresholds"])
    assert (result.returns >= theta).all()


@pytest.mark.slow
def test_sequential_veto_rule_with_a_thousand_agents_egalitarian():
    problem = random_mdp_problem(1000, np.random.default_rng(0))
    samples = sample_policy_returns(problem, 3000, rng=0, progress=False, workers=1)
    result = proportional_veto_core(problem, samples, eps=0.1)
    assert result.report["pvc_epsilon_method"] == "min_cut"
