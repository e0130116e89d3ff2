import json

import numpy as np
import pytest
from conftest import bandit, leaky_average

from policyagg import solvers
from policyagg.errors import PolicyAggError
from policyagg.metrics import gini
from policyagg.result import Result
from policyagg.samples import ReturnSamples


def test_gini_by_hand():
    assert gini([1.0, 1.0, 1.0]) == 0.0
    assert gini([0.0, 0.0, 1.0]) == pytest.approx(2 / 3)  # (n - 1) / n
    # |1-3| * 2 / (2 * 4 * 2) = 4 / 16
    assert gini([1.0, 3.0]) == pytest.approx(0.25)
    assert gini([0.0, 0.0]) == 0.0
    with pytest.raises(PolicyAggError, match="non-negative"):
        gini([-1.0, 2.0])
    with pytest.raises(PolicyAggError, match="must not be empty"):
        gini([])


def test_result_fields():
    problem = leaky_average()
    samples = ReturnSamples(np.random.default_rng(0).uniform(size=(100, 2)))
    result = solvers.egalitarian(problem, samples)
    assert result.occupancy.shape == result.policy.shape == (2, 2)
    np.testing.assert_allclose(result.policy.sum(axis=1), 1.0)
    assert result.ranks.shape == (2,) and 0 <= result.min_rank <= 1
    assert result.gini == pytest.approx(gini(result.normalized))
    assert result.diagnostics["n_solves"] >= 1 and result.diagnostics["status"] == "optimal"
    assert "agent1" in result.table()
    with pytest.raises(ValueError):
        result.returns[0] = 1.0  # frozen arrays
    with pytest.raises(AttributeError):
        result.rule = "other"


def test_save_load_round_trip(tmp_path):
    samples = ReturnSamples(np.random.default_rng(0).uniform(size=(100, 2)))
    result = solvers.utilitarian(bandit(), samples, normalize=True)
    result.save(tmp_path / "run" / "util")
    loaded = Result.load(tmp_path / "run" / "util")
    for name in ("occupancy", "policy", "returns", "normalized", "ranks"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert (loaded.rule, loaded.names, loaded.gini, loaded.options) == (
        result.rule,
        result.names,
        result.gini,
        result.options,
    )
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["util.json", "util.npz"]  # no temporaries left
    json.loads((tmp_path / "run" / "util.json").read_text())  # plain JSON


def test_result_without_ranks_round_trips(tmp_path):
    result = solvers.utilitarian(bandit())
    result.save(tmp_path / "r")
    assert Result.load(tmp_path / "r").ranks is None


def test_load_detects_mismatched_arrays(tmp_path):
    result = solvers.utilitarian(bandit())
    result.save(tmp_path / "r")
    other = solvers.egalitarian(bandit())
    other.save(tmp_path / "o")
    (tmp_path / "o.npz").replace(tmp_path / "r.npz")
    with pytest.raises(PolicyAggError, match="does not match"):
        Result.load(tmp_path / "r")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import policyagg.io as io

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        solvers.utilitarian(bandit()).save(tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


def test_saved_files_are_readable_by_others(tmp_path):
    solvers.utilitarian(bandit()).save(tmp_path / "r")
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_status_round_trips_and_old_files_load_as_optimal(tmp_path):
    result = solvers.utilitarian(bandit())
    assert result.status == "optimal" and "status" not in result.table()
    result.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r.json").read_text())
    assert meta["status"] == "optimal"
    del meta["status"]  # a file written before results had a status
    (tmp_path / "r.json").write_text(json.dumps(meta))
    assert Result.load(tmp_path / "r").status == "optimal"
    meta["status"] = "gap"
    (tmp_path / "r.json").write_text(json.dumps(meta))
    loaded = Result.load(tmp_path / "r")
    assert loaded.status == "gap" and "status: gap" in loaded.table()


# ------------------------------------------------------------------ a result file is data (issue 14, item 3)
def saved_result(tmp_path):
    problem = bandit()
    result = solvers.utilitarian(problem)
    result.save(tmp_path / "r")
    return tmp_path / "r", json.loads((tmp_path / "r.json").read_text())


def rewrite(path, meta=None, arrays=None):
    import hashlib
    import io as _io

    if arrays is not None:
        buffer = _io.BytesIO()
        np.savez(buffer, **arrays)
        path.with_suffix(".npz").write_bytes(buffer.getvalue())
    if meta is not None:
        meta["arrays_sha256"] = hashlib.sha256(path.with_suffix(".npz").read_bytes()).hexdigest()
        path.with_suffix(".json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p, m: p.with_suffix(".json").write_text("{not json"), "cannot read a result"),
        (lambda p, m: p.with_suffix(".json").write_text("[1, 2]"), "JSON object"),
        (lambda p, m: rewrite(p, {k: v for k, v in m.items() if k != "names"}), "missing names"),
        (lambda p, m: rewrite(p, m | {"arrays": "/dev/zero"}), "beside it"),
        (lambda p, m: rewrite(p, m | {"arrays": "../elsewhere.npz"}), "beside it"),
        (lambda p, m: rewrite(p, m | {"format_version": 99}), "format version"),
        (lambda p, m: p.with_suffix(".npz").write_bytes(b"PK\x03\x04 truncated"), "checksum"),
        (lambda p, m: rewrite(p, m, arrays={"returns": np.zeros(3)}), "one entry per agent"),
        (lambda p, m: rewrite(p, m, arrays={"evil": np.zeros(2)}), "unexpected arrays"),
        (lambda p, m: rewrite(p, m, arrays={"returns": np.array([{}, 1], dtype=object)}), "unreadable arrays"),
        (lambda p, m: rewrite(p, m | {"names": ["a", "b", "c"]}), "one entry per agent"),
        (lambda p, m: rewrite(p, m | {"gini": "high"}), "not a valid result"),
        (lambda p, m: p.with_suffix(".npz").unlink(), "cannot read the result's arrays"),
    ],
)
def test_damaged_or_made_up_results_raise_one_typed_error(tmp_path, damage, message):
    from policyagg.errors import CorruptFileError

    path, meta = saved_result(tmp_path)
    damage(path, meta)
    with pytest.raises(CorruptFileError, match=message):
        Result.load(path)


def test_arrays_above_the_size_limit_are_refused_before_decompressing(tmp_path, monkeypatch):
    from policyagg import result as result_module
    from policyagg.errors import CorruptFileError

    path, _ = saved_result(tmp_path)
    monkeypatch.setattr(result_module, "MAX_ARRAY_BYTES", 100)  # the saved arrays take more than that
    with pytest.raises(CorruptFileError, match="limit"):
        Result.load(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": ["x", "y"]}, r"`weights` must be an array of numbers"),
        ({"names": "ab"}, r"`names` must be a sequence of strings"),
        ({"names": [1, None]}, r"`names` must be a sequence of strings"),
        ({"rewards": [[["a", "b"]], [["c", "d"]]]}, r"`rewards` must be an array of numbers"),
        ({"rewards": np.ones((2, 1, 2), dtype=complex)}, r"`rewards` must be real"),
    ],
)
def test_bad_problem_inputs_raise_typed_errors(kwargs, message):
    from policyagg.errors import InvalidProblemError
    from policyagg.mdp import TabularMDP
    from policyagg.problem import Problem

    mdp = TabularMDP(np.ones((1, 2, 1)), gamma=0.9)
    with pytest.raises(InvalidProblemError, match=message):
        Problem(mdp, kwargs.pop("rewards", np.ones((2, 1, 2))), **kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: solvers.utilitarian(p, time_limit="5"), r"`time_limit` must be a positive number"),
        (lambda p: solvers.utilitarian(p, time_limit=True), r"`time_limit` must be a positive number"),
        (lambda p: __import__("policyagg").sample_returns(p, 10, concentration="1"), r"`concentration` must be"),
    ],
)
def test_numbers_given_as_strings_or_bools_are_refused(call, message):
    from policyagg.errors import InvalidProblemError

    with pytest.raises(InvalidProblemError, match=message):
        call(bandit())


def test_numpy_scalars_are_numbers():
    from policyagg import sample_returns

    problem = bandit()
    samples = sample_returns(problem, 50, rng=0)
    result = solvers.approval(problem, samples, alpha=np.float32(0.9), time_limit=np.int64(60))
    assert result.status == "optimal"


def test_samples_from_another_problem_are_refused():
    from policyagg.errors import InvalidSamplesError

    problem = bandit()  # returns (p, 3 (1 - p)): ranges [0, 1] and [0, 3]
    samples = ReturnSamples(np.column_stack([np.linspace(5, 6, 20), np.linspace(0, 3, 20)]))
    with pytest.raises(InvalidSamplesError, match=r"agent 'agent0' lies outside its range"):
        solvers.max_quantile(problem, samples)
