import numpy as np
import pytest

from policyagg.errors import InvalidSamplesError
from policyagg.samples import ReturnSamples


def test_cdf_counts_samples_at_or_below():
    samples = ReturnSamples(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]]))
    np.testing.assert_allclose(samples.cdf([2.0, 5.0]), [0.5, 0.0])
    np.testing.assert_allclose(samples.cdf([[0.0, 40.0], [3.5, 25.0]]), [[0.0, 1.0], [0.75, 0.5]])


def test_cdf_treats_solver_rounding_as_a_tie():
    samples = ReturnSamples(np.array([[1.0], [2.0]]))  # span 1: ties within 1e-6
    assert samples.cdf([2.0 - 1e-8])[0] == 1.0
    assert samples.cdf([2.0 - 1e-4])[0] == 0.5
    flat = ReturnSamples(np.array([[5.0], [5.0]]))  # no span: ties within 1e-6 * |value|
    assert flat.cdf([5.0 - 1e-7])[0] == 1.0 and flat.cdf([4.99])[0] == 0.0


def test_threshold_is_the_empirical_quantile():
    values = np.arange(1.0, 11.0)[:, None]  # 1..10
    samples = ReturnSamples(values)
    assert samples.threshold(0.9)[0] == 9.0  # F(9) = 0.9
    assert samples.threshold(0.85)[0] == 9.0
    assert samples.threshold(1.0)[0] == 10.0
    assert samples.threshold(0.0)[0] == -np.inf
    # definition: the smallest sample v with F(v) >= alpha
    for alpha in (0.05, 0.31, 0.5, 0.99):
        t = samples.threshold(alpha)[0]
        assert samples.cdf([t])[0] >= alpha
        assert samples.cdf([t - 1])[0] < alpha


def test_values_are_copied_and_read_only():
    raw = np.zeros((3, 2))
    samples = ReturnSamples(raw)
    raw[0, 0] = 5.0
    assert samples.values[0, 0] == 0.0
    with pytest.raises(ValueError):
        samples.values[0, 0] = 1.0


def test_save_load_round_trip(tmp_path):
    samples = ReturnSamples(np.random.default_rng(0).normal(size=(50, 3)), measure="user", info={"seed": 3})
    path = samples.save(tmp_path / "s")
    loaded = ReturnSamples.load(path)
    np.testing.assert_array_equal(loaded.values, samples.values)
    assert loaded.measure == "user" and loaded.info == {"seed": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


@pytest.mark.parametrize(
    "values, match",
    [
        (np.zeros(3), r"non-empty \(N, n\) array"),
        (np.zeros((0, 2)), r"non-empty \(N, n\) array"),
        (np.array([[0.0, np.nan]]), r"non-finite return at sample 0, agent 1"),
    ],
)
def test_invalid_samples(values, match):
    with pytest.raises(InvalidSamplesError, match=match):
        ReturnSamples(values)


def test_wrong_number_of_agents_and_bad_alpha():
    samples = ReturnSamples(np.zeros((4, 2)))
    with pytest.raises(InvalidSamplesError, match="returns for 2 agents but the problem has 3"):
        samples.check_agents(3)
    with pytest.raises(InvalidSamplesError, match=r"`returns` must end in n = 2"):
        samples.cdf([1.0, 2.0, 3.0])
    with pytest.raises(InvalidSamplesError, match=r"`alpha` must be in \[0, 1\]"):
        samples.threshold(1.5)
