"""The measure dispatch and the ``optimal-mixture`` measure (``volume`` has its own tests)."""

import numpy as np
import pytest
from conftest import leaky_average
from scipy import stats

from policyagg import solvers
from policyagg.errors import InvalidProblemError
from policyagg.mdp import TabularMDP
from policyagg.measures import MEASURES, measure_options, sample_mixture_returns, sample_returns
from policyagg.problem import Problem


def three_armed(gamma=0.9):
    """One state, three actions; agent j is paid 1 for action j only, so J(d) = d and the
    agents' optima are the simplex's corners."""
    return Problem(TabularMDP(np.ones((1, 3, 1)), gamma=gamma), np.eye(3)[:, None, :])


def test_mixture_of_simplex_corners_is_dirichlet():
    # J = w itself: each coordinate of Dirichlet(1, 1, 1) is Beta(1, 2).
    problem = solvers.with_ranges(three_armed())
    samples = sample_returns(problem, 4000, measure="optimal-mixture", rng=3)
    assert samples.measure == "optimal-mixture"
    np.testing.assert_allclose(samples.values.sum(axis=1), 1.0, atol=1e-9)
    for i in range(3):
        assert stats.kstest(samples.values[:, i], stats.beta(1, 2).cdf).pvalue > 1e-4


def test_mixture_concentration_moves_mass_to_the_middle():
    problem = solvers.with_ranges(three_armed())
    wide = sample_mixture_returns(problem, 4000, rng=0, concentration=0.2).values[:, 0]
    tight = sample_mixture_returns(problem, 4000, rng=0, concentration=20.0).values[:, 0]
    assert stats.kstest(tight, stats.beta(20, 40).cdf).pvalue > 1e-4
    assert np.std(wide) > 3 * np.std(tight)


def test_mixture_returns_are_attainable_and_between_the_optima():
    problem = solvers.with_ranges(leaky_average())
    values = sample_returns(problem, 500, measure="optimal-mixture", rng=1).values
    ranges = problem.ranges
    assert np.all(values >= ranges.lower - 1e-9) and np.all(values <= ranges.upper + 1e-9)
    # Two agents with opposed interests: the optima's returns span a segment and every
    # sample lies on it (J_0 + J_1 = 1 in this MDP: one of the two states is always paid).
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-9)


def test_mixture_needs_the_ranges():
    with pytest.raises(InvalidProblemError, match="with_ranges"):
        sample_returns(three_armed(), 10, measure="optimal-mixture")


def test_seeded_and_reproducible():
    problem = solvers.with_ranges(three_armed())
    for measure in ("policy", "optimal-mixture"):
        a = sample_returns(problem, 50, measure=measure, rng=5).values
        b = sample_returns(problem, 50, measure=measure, rng=5).values
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, sample_returns(problem, 50, measure=measure, rng=6).values)


def test_policy_dispatch_passes_options():
    problem = three_armed()
    a = sample_returns(problem, 30, measure="policy", rng=0, concentration=3.0, method="dense")
    assert a.measure == "policy" and a.info["concentration"] == 3.0
    b = sample_returns(problem, 30, measure="policy", rng=0, concentration=3.0, method="dense", solver="gmres")
    assert b.info["solver"] == "gmres"
    np.testing.assert_array_equal(a.values, b.values)


def test_bad_measure_and_options():
    problem = solvers.with_ranges(three_armed())
    with pytest.raises(InvalidProblemError, match="`measure` must be one of"):
        sample_returns(problem, 10, measure="uniform")
    with pytest.raises(InvalidProblemError, match="no option 'alpha'.*concentration"):
        sample_returns(problem, 10, measure="optimal-mixture", alpha=1)
    with pytest.raises(InvalidProblemError, match="concentration"):
        sample_returns(problem, 10, measure="optimal-mixture", concentration=0)
    with pytest.raises(InvalidProblemError, match="n_samples"):
        sample_returns(problem, 0, measure="optimal-mixture")
    assert "concentration" in measure_options("policy")
    with pytest.raises(InvalidProblemError, match="`solver` must be one of 'auto', 'gmres', 'bicgstab'"):
        sample_returns(problem, 10, measure="policy", solver="cg")
    assert set(MEASURES) == {"policy", "volume", "optimal-mixture"}


def test_window_mass():
    from policyagg.metrics import window_mass

    rng = np.random.default_rng(0)
    uniform = rng.random((20000, 2))
    np.testing.assert_allclose(window_mass(uniform, 0.06), 0.06, atol=0.01)
    spike = np.concatenate([np.full((990, 1), 0.5), np.linspace(0, 1, 10)[:, None]])
    assert window_mass(spike, 0.01)[0] >= 0.99
    with pytest.raises(InvalidProblemError, match="width"):
        window_mass(uniform, 0.0)
