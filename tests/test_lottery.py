"""Lotteries over policies: ex-ante and ex-post views, storage, sampling."""

import json

import numpy as np
import pytest
from conftest import chain_discounted

from policyagg import solvers
from policyagg.errors import CorruptFileError, InvalidProblemError
from policyagg.lottery import (
    Lottery,
    build_lottery,
    check_probabilities,
    estimated_lottery,
    load_outcome,
    single_policy,
)
from policyagg.metrics import gini
from policyagg.result import Result
from policyagg.samples import ReturnSamples


def _deterministic(problem, actions):
    """The occupancy of the deterministic policy taking ``actions[s]`` in state ``s``."""
    mdp = problem.mdp
    pi = np.zeros((mdp.n_states, mdp.n_actions))
    pi[np.arange(mdp.n_states), actions] = 1.0
    return mdp.occupancy(pi)


@pytest.fixture
def chain_lottery():
    problem = solvers.with_ranges(chain_discounted())
    occupancies = np.stack([_deterministic(problem, a) for a in ([0, 0], [1, 0], [1, 1])])
    return problem, occupancies, build_lottery(problem, occupancies, [0.5, 0.25, 0.25], rule="test")


def test_ex_ante_is_the_mixture(chain_lottery):
    problem, occupancies, lottery = chain_lottery
    mixture = np.tensordot([0.5, 0.25, 0.25], occupancies, axes=1)
    R = np.asarray(problem.rewards).reshape(problem.n_agents, -1)
    np.testing.assert_allclose(lottery.returns, R @ mixture.ravel(), atol=1e-12)
    np.testing.assert_allclose(lottery.occupancy, mixture, atol=1e-12)
    # the stationary policy of the mixed occupancy delivers the ex-ante returns (discounted MDP)
    pi = problem.mdp.policy_from_occupancy(mixture)
    np.testing.assert_allclose(problem.mdp.evaluate(pi, problem.rewards), lottery.returns, atol=1e-9)
    assert lottery.gini == pytest.approx(gini(lottery.normalized))


def test_ex_post_views_by_hand(chain_lottery):
    _, _, lottery = chain_lottery
    u = lottery.support_normalized
    assert lottery.ex_post_gini == pytest.approx(0.5 * gini(u[0]) + 0.25 * gini(u[1]) + 0.25 * gini(u[2]))
    view = lottery.ex_post()
    np.testing.assert_allclose(view["min"], u.min(axis=0))
    np.testing.assert_allclose(view["mean"], lottery.normalized)
    # quantiles against numpy's inverted-CDF quantile of the expanded multiset (probabilities 2:1:1)
    expanded = np.repeat(u, [2, 1, 1], axis=0)
    for q in (0.0, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0):
        expected = np.quantile(expanded, q, axis=0, method="inverted_cdf")
        np.testing.assert_allclose(lottery.quantile(q), expected, err_msg=f"q = {q}")


def test_duplicates_merged_and_zero_probabilities_dropped():
    problem = solvers.with_ranges(chain_discounted())
    a, b = _deterministic(problem, [0, 0]), _deterministic(problem, [1, 1])
    lottery = build_lottery(problem, [a, b, a, b], [0.2, 0.0, 0.3, 0.5], rule="test")
    assert lottery.size == 2
    np.testing.assert_allclose(lottery.probabilities, [0.5, 0.5])
    np.testing.assert_allclose(lottery.support_occupancies, np.stack([a, b]), atol=1e-15)


def test_single_policy_and_samples():
    problem = solvers.with_ranges(chain_discounted())
    samples = ReturnSamples(np.random.default_rng(1).uniform(0, 0.5, size=(200, 2)))
    result = solvers.utilitarian(problem, samples)
    lottery = single_policy(result)
    np.testing.assert_allclose(lottery.returns, result.returns)
    assert lottery.ex_post_gini == pytest.approx(result.gini) and lottery.gini == pytest.approx(result.gini)
    np.testing.assert_allclose(lottery.ranks, result.ranks)
    mixed = build_lottery(
        problem, [result.occupancy, lottery.support_occupancies[0]], [0.5, 0.5], rule="t", samples=samples
    )
    np.testing.assert_allclose(mixed.ranks, samples.cdf(mixed.returns))


def test_sampling_frequencies(chain_lottery):
    _, _, lottery = chain_lottery
    draws = lottery.sample(np.random.default_rng(7), size=40_000)
    freq = np.bincount(draws, minlength=3) / draws.size
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.25], atol=0.01)  # 4 standard errors
    again = lottery.sample(np.random.default_rng(7), size=40_000)
    np.testing.assert_array_equal(draws, again)


def test_save_load_round_trip(tmp_path, chain_lottery):
    _, _, lottery = chain_lottery
    lottery.save(tmp_path / "rd")
    back = load_outcome(tmp_path / "rd")
    assert isinstance(back, Lottery)
    for name in ("probabilities", "support_returns", "support_normalized", "support_occupancies", "support_policies"):
        np.testing.assert_array_equal(getattr(back, name), getattr(lottery, name))
    assert back.support_ranks is None and back.ranks is None and back.names == lottery.names
    with pytest.raises(CorruptFileError, match="not a result"):
        Result.load(tmp_path / "rd")
    meta = json.loads((tmp_path / "rd.json").read_text())
    (tmp_path / "rd.npz").write_bytes((tmp_path / "rd.npz").read_bytes()[:-3] + b"xyz")
    with pytest.raises(CorruptFileError, match="checksum"):
        Lottery.load(tmp_path / "rd")
    assert meta["kind"] == "lottery" and meta["ex_post_gini"] == pytest.approx(lottery.ex_post_gini)


def test_results_still_load_through_load_outcome(tmp_path):
    problem = chain_discounted()
    result = solvers.egalitarian(problem)
    result.save(tmp_path / "eg")
    assert isinstance(load_outcome(tmp_path / "eg"), Result)
    with pytest.raises(CorruptFileError, match="not a lottery"):
        Lottery.load(tmp_path / "eg")


def test_estimated_lottery():
    problem = solvers.with_ranges(chain_discounted())
    J = np.array([[0.5, 0.0], [0.0, 0.5]])
    lottery = estimated_lottery(
        J, [0.5, 0.5], problem.ranges, rule="oracle", names=problem.names, standard_errors=np.full((2, 2), 0.01)
    )
    assert lottery.occupancy is None
    np.testing.assert_allclose(lottery.returns, [0.25, 0.25])
    np.testing.assert_allclose(lottery.ex_post()["min"], [0.0, 0.0])
    with pytest.raises(InvalidProblemError, match="shape"):
        estimated_lottery(J[:1], [0.5, 0.5], problem.ranges, rule="x", names=problem.names)


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [([], "non-empty"), ([0.5, 0.6], "sum to 1"), ([1.5, -0.5], "non-negative"), ([np.nan, 1.0], "finite")],
)
def test_bad_probabilities(probabilities, message):
    with pytest.raises(InvalidProblemError, match=message):
        check_probabilities(probabilities)
