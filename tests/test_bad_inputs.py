"""Bad input, as a new user would give it, gets a typed error whose message names the problem.

One table across the layers (MDP, problem, samples, every rule and option, every measure, result
files, configurations, the command line): each row is a call, the error type it must raise and
a fragment its message must contain. Numpy scalars, which are valid numbers, are accepted.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from policyagg import Problem, Result, ReturnSamples, TabularMDP, solvers
from policyagg.envs.attention import AttentionModel
from policyagg.envs.tabular import make_env
from policyagg.errors import (
    CorruptFileError,
    InvalidMDPError,
    InvalidProblemError,
    InvalidSamplesError,
    OutputError,
)
from policyagg.experiments.config import CONFIGS, InvalidConfigError, load_config, parse_config
from policyagg.measures import MEASURES, sample_returns

P2 = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.0, 1.0]]])  # (S=2, A=2, S)
R2 = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # (n=2, S, A)


def mdp(**changes):
    return TabularMDP(changes.pop("P", P2), **{"gamma": 0.9, **changes})


def problem(**changes):
    return Problem(changes.pop("mdp", mdp()), changes.pop("rewards", R2), **changes)


def ranged():
    return solvers.with_ranges(problem())


def samples():
    return sample_returns(ranged(), 50, rng=0)


def two_absorbing_classes():
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = P[0, 1, 2] = 1
    P[1, :, 1] = P[2, :, 2] = 1
    with pytest.warns(UserWarning):
        m = TabularMDP(P, rho=[1, 0, 0], gamma=1.0, allow_multichain=True)
    return Problem(m, np.ones((2, 3, 2)))


def config(**changes):
    data = tomllib.loads((CONFIGS / "attention-a.toml").read_text())
    for path, value in changes.items():
        *parents, key = path.split("__")
        table = data
        for parent in parents:
            table = table[parent]
        if value is DELETE:
            del table[key]
        else:
            table[key] = value
    return data


DELETE = object()


def run_rule(name, **options):
    spec = solvers.get_spec(name)
    return solvers.get_rule(name)(ranged(), samples() if spec.needs_samples else None, **options)


# (id, call, error type, message fragment)
MDP_CASES = [
    ("P of strings", lambda: TabularMDP([[["a"]]]), InvalidMDPError, "`P`"),
    ("ragged P", lambda: TabularMDP([[[1.0], [0.5, 0.5]]]), InvalidMDPError, "`P`"),
    ("complex P", lambda: TabularMDP(P2 + 0j), InvalidMDPError, "complex"),
    ("negative probability", lambda: mdp(P=np.array([[[1.5, -0.5]], [[0.0, 1.0]]])), InvalidMDPError, "negative"),
    ("rows not summing to 1", lambda: mdp(P=P2 * 0.5), InvalidMDPError, "sum to 1"),
    ("P of 2 dimensions", lambda: TabularMDP(np.eye(2)), InvalidMDPError, "(S, A, S)"),
    ("sparse P without n_actions", lambda: TabularMDP(sp.csr_array(P2.reshape(4, 2))), InvalidMDPError, "n_actions"),
    ("rho of the wrong length", lambda: mdp(rho=[1.0]), InvalidMDPError, "rho"),
    ("negative rho", lambda: mdp(rho=[1.5, -0.5]), InvalidMDPError, "rho"),
    ("rho not summing to 1", lambda: mdp(rho=[0.3, 0.3]), InvalidMDPError, "rho"),
    ("gamma 0", lambda: mdp(gamma=0.0), InvalidMDPError, "gamma"),
    ("gamma above 1", lambda: mdp(gamma=1.5), InvalidMDPError, "gamma"),
    ("gamma a string", lambda: mdp(gamma="0.9"), InvalidMDPError, "gamma"),
    ("gamma True", lambda: mdp(gamma=True), InvalidMDPError, "gamma"),
    ("gamma nan", lambda: mdp(gamma=float("nan")), InvalidMDPError, "gamma"),
    (
        "two closed classes, gamma 1",
        lambda: TabularMDP(np.stack([np.eye(2), np.eye(2)], axis=1), gamma=1.0),
        InvalidMDPError,
        "closed classes",
    ),
]

PROBLEM_CASES = [
    ("rewards of the wrong shape", lambda: problem(rewards=np.ones((2, 3, 2))), InvalidProblemError, "rewards"),
    ("rewards with nan", lambda: problem(rewards=R2 * np.nan), InvalidProblemError, "rewards"),
    ("complex rewards", lambda: problem(rewards=R2 + 1j), InvalidProblemError, "complex"),
    ("rewards of strings", lambda: problem(rewards=[["a"]]), InvalidProblemError, "rewards"),
    ("weights of strings", lambda: problem(weights=["x", "y"]), InvalidProblemError, "weights"),
    ("negative weights", lambda: problem(weights=[1.0, -1.0]), InvalidProblemError, "weights"),
    ("weights of the wrong length", lambda: problem(weights=[1.0]), InvalidProblemError, "weights"),
    ("names a string", lambda: problem(names="ab"), InvalidProblemError, "names"),
    ("names not strings", lambda: problem(names=[1, None]), InvalidProblemError, "names"),
    ("names repeated", lambda: problem(names=["a", "a"]), InvalidProblemError, "names"),
    ("names of the wrong count", lambda: problem(names=["a"]), InvalidProblemError, "names"),
    ("mdp not a TabularMDP", lambda: Problem(P2, R2), InvalidProblemError, "TabularMDP"),
    ("rho of strings", lambda: mdp(rho="ab"), InvalidMDPError, "rho"),
    ("policy of strings", lambda: mdp().evaluate("ab", R2[0]), InvalidMDPError, "policy"),
    ("a rule given an array, not a Problem", lambda: solvers.utilitarian(R2), InvalidProblemError, "Problem"),
    ("return ranges of a string", lambda: solvers.with_ranges("x"), InvalidProblemError, "Problem"),
    ("attention escalation of strings", lambda: AttentionModel(escalation="abc"), InvalidProblemError, "escalation"),
    ("attention weights of strings", lambda: AttentionModel(n_sites=2).rewards("ab"), InvalidProblemError,
     "site_weights"),
    ("a Gymnasium kwarg typo", lambda: make_env("FrozenLake-v1", is_slipery=True), InvalidProblemError,
     "is_slippery"),
]  # fmt: skip

SAMPLES_CASES = [
    ("samples of one dimension", lambda: ReturnSamples(np.ones(5)), InvalidSamplesError, "(N, n)"),
    ("samples with nan", lambda: ReturnSamples(np.full((5, 2), np.nan)), InvalidSamplesError, "finite"),
    ("samples of strings", lambda: ReturnSamples([["a", "b"]]), InvalidSamplesError, "numbers"),
    ("no samples", lambda: ReturnSamples(np.ones((0, 2))), InvalidSamplesError, "non-empty"),
    (
        "samples for other agents",
        lambda: solvers.get_rule("max_quantile")(ranged(), ReturnSamples(np.zeros((9, 3)))),
        InvalidSamplesError,
        "agents",
    ),
    (
        "samples outside every return",
        lambda: solvers.get_rule("max_quantile")(ranged(), ReturnSamples(np.full((9, 2), 1e6))),
        InvalidSamplesError,
        "range",
    ),
    (
        "samples as a plain array",
        lambda: solvers.get_rule("borda")(ranged(), np.ones((5, 2))),
        InvalidSamplesError,
        "ReturnSamples(values)",
    ),
    ("measure not a string", lambda: ReturnSamples(np.ones((3, 2)), measure=5), InvalidSamplesError, "measure"),
    (
        "a sample rule without samples",
        lambda: solvers.get_rule("borda")(ranged(), None),
        InvalidSamplesError,
        "samples",
    ),
]


def bad_value(option):
    """A value ``option`` refuses, of the kind a user would mistype."""
    return {
        "bool": "yes",
        "choice": "nonsense",
        "int": -1,
        "number": float("inf"),
        "per_agent": "ab",
        "constraints": "x <= 1",
    }[option.kind]


RULE_CASES = [
    (f"{name}: unknown option", lambda name=name: run_rule(name, alfa=0.9), InvalidProblemError, "alfa")
    for name in solvers.RULES
] + [
    (f"{name}: {option} = {bad_value(spec)!r}", lambda n=name, o=option, s=spec: run_rule(n, **{o: bad_value(s)}),
     InvalidProblemError, option)
    for name in solvers.RULES
    for option, spec in {**solvers.get_spec(name).options, **solvers.COMMON_OPTIONS}.items()
    if spec.kind != "any"
] + [
    ("approval: alpha 1.9", lambda: run_rule("approval", alpha=1.9), InvalidProblemError, "[0, 1]"),
    ("time_limit a string", lambda: run_rule("utilitarian", time_limit="5"), InvalidProblemError, "time_limit"),
    ("an unknown rule", lambda: solvers.get_rule("utilitarain"), InvalidProblemError, "utilitarian"),
]  # fmt: skip

MEASURE_CASES = [
    (f"{measure}: unknown option", lambda m=measure: sample_returns(ranged(), 9, measure=m, alfa=1),
     InvalidProblemError, "alfa")
    for measure in MEASURES
] + [
    (f"{measure}: 0 samples", lambda m=measure: sample_returns(ranged(), 0, measure=m), InvalidProblemError,
     "n_samples")
    for measure in MEASURES
] + [
    ("unknown measure", lambda: sample_returns(ranged(), 9, measure="uniform"), InvalidProblemError, "policy"),
    ("concentration a string", lambda: sample_returns(ranged(), 9, concentration="1"), InvalidProblemError,
     "concentration"),
    ("concentration 0", lambda: sample_returns(ranged(), 9, measure="optimal-mixture", concentration=0),
     InvalidProblemError, "concentration"),
    ("method unknown", lambda: sample_returns(ranged(), 9, method="fast"), InvalidProblemError, "method"),
    ("chains 0", lambda: sample_returns(ranged(), 9, measure="volume", chains=0), InvalidProblemError, "chains"),
    ("kernel unknown", lambda: sample_returns(ranged(), 9, measure="volume", kernel="gpu"), InvalidProblemError,
     "kernel"),
    ("policy measure on two closed classes", lambda: sample_returns(two_absorbing_classes(), 9),
     InvalidProblemError, "closed classes"),
]  # fmt: skip


def saved_result(tmp_path, edit=None, arrays=None):
    path = tmp_path / "result"
    run_rule("utilitarian").save(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if edit:
        edit(meta)
        path.with_suffix(".json").write_text(json.dumps(meta))
    if arrays is not None:  # other arrays, with their checksum (so that the other checks are reached)
        path.with_suffix(".npz").write_bytes(arrays)
        meta["arrays_sha256"] = hashlib.sha256(arrays).hexdigest()
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def object_npz(tmp_path):
    target = tmp_path / "objects.npz"
    np.savez(target, values=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return target.read_bytes()


def zip_bomb(tmp_path):
    """A 1 MB compressed NPZ that decompresses to 1.1 GB (one array of zeros)."""
    target = tmp_path / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (144 << 20,)  # float64: 1.125 GiB
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("occupancy.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            block = bytes(16 << 20)
            for _ in range(72):
                handle.write(block)
    return target.read_bytes()


RESULT_CASES = [
    ("a result path that is a number", lambda t: Result.load(5), InvalidProblemError, "path"),
    ("no such result", lambda t: Result.load(t / "nothing"), CorruptFileError, "nothing.json"),
    ("result JSON not JSON", lambda t: Result.load(saved_result(t, arrays=None) and _garble(t)), CorruptFileError,
     "result.json"),
    ("arrays path absolute", lambda t: Result.load(saved_result(t, lambda m: m.update(arrays="/dev/zero"))),
     CorruptFileError, "arrays"),
    ("arrays path with ..", lambda t: Result.load(saved_result(t, lambda m: m.update(arrays="../result.npz"))),
     CorruptFileError, "arrays"),
    ("names and arrays disagree", lambda t: Result.load(saved_result(t, lambda m: m.update(names=["a", "b", "c"]))),
     CorruptFileError, "result"),
    ("result JSON a list", lambda t: Result.load(saved_result(t, lambda m: m.clear()) and _as_list(t)),
     CorruptFileError, "result"),
    ("object arrays", lambda t: Result.load(saved_result(t, arrays=object_npz(t))), CorruptFileError, "result"),
    ("samples of object arrays", lambda t: ReturnSamples.load(_write(t / "s.npz", object_npz(t))), CorruptFileError,
     "delete it"),
    ("samples that expand 200x", lambda t: ReturnSamples.load(_write(t / "s.npz", zip_bomb(t))), CorruptFileError,
     "limit 16x"),
    ("samples truncated", lambda t: ReturnSamples.load(_write(t / "s.npz", b"PK\x03\x04")), CorruptFileError,
     "delete it"),
]  # fmt: skip


def _write(path, payload):
    path.write_bytes(payload)
    return path


def _garble(tmp_path):
    (tmp_path / "result.json").write_text("{not json")
    return tmp_path / "result"


def _as_list(tmp_path):
    (tmp_path / "result.json").write_text("[1, 2]")
    return tmp_path / "result"


CONFIG_CASES = [
    ("config: typo in a rule option",
     lambda: parse_config(config(rules=[{"rule": "approval", "options": {"alfa": 0.9}}])), "alfa"),
    ("config: alpha 1.9", lambda: parse_config(config(rules=[{"rule": "approval", "options": {"alpha": 1.9}}])),
     "alpha"),
    ("config: unknown rule", lambda: parse_config(config(rules=[{"rule": "borda_count"}])), "borda"),
    ("config: typo in an attention kwarg", lambda: parse_config(config(environment__kwargs={"n_site": 3})),
     "n_site"),
    ("config: negative penalty", lambda: parse_config(config(environment__kwargs={"penalty": -1})), "penalty"),
    ("config: typo in a Gymnasium kwarg",
     lambda: parse_config(config(environment__id="FrozenLake-v1", environment__kwargs={"is_slipery": False},
                                 agents__population="env")), "is_slipery"),
    ("config: an id that imports a module",
     lambda: parse_config(config(environment__id="evilmod:Evil-v0")), "import = 'evilmod'"),
    ("config: an unregistered id", lambda: parse_config(config(environment__id="Nope-v9")), "not a registered"),
    ("config: an import that fails",
     lambda: parse_config(config(environment__id="Nope-v9", environment__import="no_such_module_here")),
     "cannot be imported"),
    ("config: an import that is not a module name",
     lambda: parse_config(config(environment__import="os; import shutil")), "module name"),
    ("config: gamma a string", lambda: parse_config(config(environment__gamma="0.9")), "gamma"),
    ("config: measure option value", lambda: parse_config(config(measure__options={"concentration": -1})),
     "concentration"),
    ("config: measure option name", lambda: parse_config(config(measure__options={"chain": 2})), "chain"),
    ("config: samples 0", lambda: parse_config(config(measure__samples=0)), "samples"),
    ("config: seeds repeated", lambda: parse_config(config(seeds=[1, 1])), "seeds"),
    ("config: an unknown table", lambda: parse_config(config(agent={"population": "x"})), "agent"),
    ("config: no rules", lambda: parse_config(config(rules=[])), "rules"),
    ("config: labels repeated",
     lambda: parse_config(config(rules=[{"rule": "utilitarian"}, {"rule": "utilitarian"}])), "distinct"),
    ("config: no environment", lambda: parse_config(config(environment=DELETE)), "environment"),
]  # fmt: skip

CASES = MDP_CASES + PROBLEM_CASES + SAMPLES_CASES + RULE_CASES + MEASURE_CASES


@pytest.mark.parametrize(("call", "error", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_typed_error_naming_it(call, error, fragment):
    with pytest.raises(error) as caught:
        call()
    assert fragment in str(caught.value)


@pytest.mark.parametrize(("call", "error", "fragment"), [c[1:] for c in RESULT_CASES], ids=[c[0] for c in RESULT_CASES])
def test_bad_result_and_sample_files_get_a_typed_error(tmp_path, call, error, fragment):
    with pytest.raises(error) as caught:
        call(tmp_path)
    assert fragment in str(caught.value)


def test_a_compressed_npz_that_expands_past_the_size_limit_is_refused(tmp_path):
    path = saved_result(tmp_path, arrays=zip_bomb(tmp_path))
    with pytest.raises(CorruptFileError, match="limit"):
        Result.load(path)


@pytest.mark.parametrize(("call", "fragment"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_configs_fail_when_read(call, fragment):
    with pytest.raises(InvalidConfigError) as caught:
        call()
    assert fragment in str(caught.value)


def test_config_files_that_are_not_configs(tmp_path):
    (tmp_path / "latin1.toml").write_bytes("name = 'caf\xe9'".encode("latin-1"))
    for path, fragment in [
        (tmp_path, "is a folder"),
        (tmp_path / "none.toml", "no such"),
        (tmp_path / "latin1.toml", "UTF-8"),
    ]:
        with pytest.raises(InvalidConfigError, match=fragment):
            load_config(path)


def test_numpy_scalars_are_numbers():  # (rule options: tests/test_result.py)
    assert mdp(gamma=np.float32(0.9)).gamma == pytest.approx(0.9)
    assert sample_returns(ranged(), 5, concentration=np.float32(2.0), rng=0).values.shape == (5, 2)


CLI_CASES = [
    (["run", "experiments/configs/attention-a.toml", "--samples", "0"], "positive integer"),
    (["run", "experiments/configs/attention-a.toml", "--seeds", "0"], "positive integer"),
    (["reproduce", "--workers", "0"], "positive integer"),
    (["compare", "--agents", "0"], "positive integer"),
    (["compare", "--seed", "-1"], "non-negative integer"),
    (["compare", "--sites", "two"], "positive integer"),
    (["bench", "agents", "--time-limit", "0"], "positive"),
    (["bench", "rules", "--samples", "0"], "positive integer"),
    (["run", "no-such-config.toml"], "no such configuration file"),
    (["show", "no-such-result"], "no-such-result"),
]


@pytest.mark.parametrize(("argv", "fragment"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_bad_command_lines_exit_2_with_a_message(argv, fragment, capsys):
    from policyagg.experiments.cli import main

    argv = [str(CONFIGS / "attention-a.toml") if a == "experiments/configs/attention-a.toml" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_writing_under_a_file_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("")
    from policyagg.experiments.run import run_config

    data = config(output=str(tmp_path / "file" / "out"), measure__samples=20, seeds=[0])
    with pytest.raises(OutputError, match="is a file, not a folder"):
        run_config(data, progress=False, figures=False)


def test_a_full_disk_is_an_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from policyagg.io import atomic_write_bytes

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="free some disk space"):
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_table_has_at_least_sixty_rows():
    assert len(CASES) + len(RESULT_CASES) + len(CONFIG_CASES) + len(CLI_CASES) >= 60
