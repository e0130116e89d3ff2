"""Preference data and pairwise-calibrated ensembles: calibration on synthetic populations
(checked by recounting the members' preferences), the certificate, outliers, files, errors."""

import numpy as np
import pytest
from conftest import chain_discounted

from policyagg import preferences as pr
from policyagg import solvers
from policyagg.errors import CorruptFileError, InvalidProblemError
from policyagg.samples import ReturnSamples


def recount(data, rewards, weights):
    """The ensemble's share per pair, one member and one pair at a time."""
    out = []
    for a, b in data.pairs:
        total = 0.0
        for theta, w in zip(rewards, weights, strict=True):
            if sum(t * (x - y) for t, x, y in zip(theta, data.features[a], data.features[b], strict=True)) > 0:
                total += w
        out.append(total / sum(weights))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_error_on_synthetic_clusters(seed):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(7, 4))
    data, population = pr.synthetic_population(V, rng.normal(size=(3, 4)), sizes=[4, 3, 2], noise=0.3, rng=seed)
    # the population itself is a 0-error ensemble of linear members: the bound is 0
    assert np.max(np.abs(recount(data, population.rewards, population.weights) - data.share)) <= 1e-12
    ens = pr.calibrated_ensemble(data)
    assert ens.status == "optimal"
    assert ens.error <= 1e-6
    assert ens.lower_bound is not None and ens.lower_bound <= ens.error + 1e-9
    assert np.max(np.abs(recount(data, ens.rewards, ens.weights) - data.share)) <= ens.error + 1e-9
    assert ens.weights.sum() == pytest.approx(1.0)
    assert ens.size <= data.pairs.shape[0] + 1
    deterministic, probabilistic = pr.single_reward_error(data, pr.bradley_terry_reward(data))
    assert deterministic > ens.error and probabilistic > ens.error  # one reward averages the clusters away


def test_outlier_exclusion_caps_kemeny_scores():
    rng = np.random.default_rng(4)
    V = rng.normal(size=(7, 3))
    data, _ = pr.synthetic_population(V, rng.normal(size=(3, 3)), sizes=[5, 3, 1], noise=0.5, rng=4)
    ens = pr.calibrated_ensemble(data, outlier_factor=1.2)
    # the least Kemeny score of a linear member, by brute force over many directions (an upper bound)
    thetas = np.random.default_rng(0).normal(size=(20000, 3))
    Y = (thetas @ data.differences.T > 0).astype(float)
    best = float(np.min(Y @ (1 - data.share) + (1 - Y) @ data.share))
    kemeny = [
        sum(s if (theta @ d <= 0) else 1 - s for d, s in zip(data.differences, data.share, strict=True))
        for theta in ens.rewards
    ]
    assert max(kemeny) <= 1.2 * best + 1e-6
    assert ens.lower_bound is not None and ens.lower_bound <= ens.error + 1e-9
    assert np.max(np.abs(recount(data, ens.rewards, ens.weights) - data.share)) <= ens.error + 1e-9


def test_files_round_trip_and_csv(tmp_path):
    data = pr.preference_data([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[0, 1], [1, 2]], [0.25, 0.5])
    again = pr.load_preferences(data.save(tmp_path / "prefs"))
    assert np.array_equal(again.features, data.features) and np.array_equal(again.share, data.share)
    (tmp_path / "items.csv").write_text("f0,f1\n1,0\n0,1\n1,1\n")
    (tmp_path / "pairs.csv").write_text("first,second,votes_first,votes_second\n0,1,1,3\n1,2,2,2\n")
    votes = pr.load_preferences(tmp_path / "items.csv", tmp_path / "pairs.csv")
    assert votes.share.tolist() == [0.25, 0.5] and votes.votes.tolist() == [4.0, 4.0]
    (tmp_path / "bad.csv").write_text("first,second,share\n0,1,x\n")
    with pytest.raises(CorruptFileError, match="columns must be"):
        pr.load_preferences(tmp_path / "items.csv", tmp_path / "bad.csv")


def test_bad_data_is_refused():
    V = [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(InvalidProblemError, match="outside"):
        pr.preference_data(V, [[0, 2]], [0.5])
    with pytest.raises(InvalidProblemError, match="itself"):
        pr.preference_data(V, [[1, 1]], [0.5])
    with pytest.raises(InvalidProblemError, match=r"in \[0, 1\]"):
        pr.preference_data(V, [[0, 1]], [1.5])
    with pytest.raises(InvalidProblemError, match="same features"):
        pr.preference_data([[1.0], [1.0]], [[0, 1]], [0.5])
    with pytest.raises(InvalidProblemError, match="votes"):
        pr.preference_data(V, [[0, 1]])


def test_every_rule_runs_on_an_ensemble_problem():
    problem0 = chain_discounted()
    mdp = problem0.mdp
    rng = np.random.default_rng(2)
    occupancies = [mdp.occupancy(rng.dirichlet([1, 1], size=2)).ravel() for _ in range(8)]
    data, _ = pr.synthetic_population(np.array(occupancies), rng.normal(size=(2, 4)), sizes=[2, 1], rng=2)
    ens = pr.calibrated_ensemble(data)
    problem = pr.ensemble_problem(ens, mdp)
    assert problem.n_agents == ens.size and np.allclose(problem.weights, ens.weights)
    samples = ReturnSamples(
        np.array([problem.returns(d) for d in rng.dirichlet(np.ones(4), size=200) @ np.array(occupancies[:4])])
    )
    weighted = {"egalitarian": {"normalize": True}}  # weights need normalised returns there
    for name, rule in solvers.RULES.items():
        result = rule(problem, samples, **weighted.get(name, {}))
        assert result.returns.shape == (ens.size,), name
