"""Checkpoints of a run: every kind damaged or replaced is recomputed (never reused), and one
run at a time writes into a folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from test_experiments import same_results, small_config

from policyagg.errors import CheckpointWarning, CorruptFileError, OutputLockedError
from policyagg.experiments.checkpoints import Manifest, output_lock
from policyagg.experiments.run import run_config
from policyagg.samples import ReturnSamples


def tiny(output):
    return small_config(output, seeds=[0], rules=small_config(output)["rules"][1:])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    run_config(tiny(out), progress=False, figures=False)
    return out


def permute_samples(folder):
    path = folder / "seed0" / "samples.npz"
    samples = ReturnSamples.load(path)
    rows = np.random.default_rng(0).permutation(len(samples.values))
    ReturnSamples(samples.values[rows], samples.measure, samples.info).save(path)  # valid, same shape


def edit_result_json(folder):
    path = folder / "seed0" / "utilitarian.json"
    meta = json.loads(path.read_text())
    meta["gini"] = 0.5
    path.write_text(json.dumps(meta))


def swap_result_arrays(folder):
    shutil.copyfile(folder / "seed0" / "90-approval.npz", folder / "seed0" / "utilitarian.npz")


def damage_manifest(folder):
    (folder / "manifest.json").write_text("{not json")


def remove_checksum(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["seed0/samples.npz"]
    (folder / "manifest.json").write_text(json.dumps(manifest))


DAMAGES = {
    "samples truncated": (lambda f: (f / "seed0" / "samples.npz").write_bytes(b"PK\x03\x04 trunc"), "was changed"),
    "samples garbage": (lambda f: (f / "seed0" / "samples.npz").write_bytes(os.urandom(500)), "was changed"),
    "samples permuted (a valid file)": (permute_samples, "was changed"),
    "result json edited": (edit_result_json, "utilitarian.json was changed"),
    "result json not json": (lambda f: (f / "seed0" / "utilitarian.json").write_text("{"), "was changed"),
    "result arrays swapped": (swap_result_arrays, "utilitarian.npz was changed"),
    "result arrays deleted": (lambda f: (f / "seed0" / "utilitarian.npz").unlink(), "utilitarian.npz is missing"),
    "manifest damaged": (damage_manifest, "manifest.json is damaged"),
    "manifest deleted": (lambda f: (f / "manifest.json").unlink(), "no recorded checksum"),
    "a checksum removed": (remove_checksum, "samples.npz has no recorded checksum"),
}


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_a_damaged_or_replaced_checkpoint_is_computed_again(reference, tmp_path, kind):
    damage, message = DAMAGES[kind]
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    damage(out)
    with pytest.warns(CheckpointWarning, match=message):
        run_config(tiny(out), progress=False, figures=False)
    same_results(out, reference)
    assert not Manifest(out).problem(out / "seed0" / "samples.npz")


def test_an_intact_folder_is_reused_without_warnings(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("seed0/*")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        run_config(tiny(out), progress=False, figures=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("seed0/*")} == before  # nothing recomputed


def test_a_damaged_config_json_refuses_the_folder_with_advice(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="config.json is damaged.*--overwrite"):
        run_config(tiny(out), progress=False, figures=False)
    run_config(tiny(out), progress=False, figures=False, overwrite=True)
    same_results(out, reference)


def test_a_folder_without_results_takes_the_corrected_configuration(tmp_path):
    """A run that failed before any result (a typo in the environment) does not lock the folder
    to its configuration."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"name": "other", "measure": "volume"}))
    run_config(tiny(out), progress=False, figures=False)
    assert json.loads((out / "config.json").read_text())["name"] == "tiny"


TINY_TOML = """
name = "tiny"
seeds = [0]
[environment]
id = "attention"
kwargs = { n_sites = 3, n_phases = 3 }
[agents]
population = "random_subsets"
n_agents = 4
[measure]
name = "policy"
samples = 300
[[rules]]
label = "utilitarian"
rule = "utilitarian"
"""

HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from policyagg.experiments.checkpoints import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def test_a_second_run_into_a_locked_folder_is_refused_until_the_first_ends(reference, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-P", "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"being written by another run \(process {holder.pid}\)"):
            run_config(tiny(out), progress=False, figures=False)
        assert not (out / "config.json").exists()  # refused before touching anything
        config = tmp_path / "tiny.toml"
        config.write_text(TINY_TOML)
        cli = subprocess.run(
            [sys.executable, "-P", "-m", "policyagg.experiments.cli", "run", str(config), "--out", str(out)],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 2 and "is being written by another run" in cli.stderr, cli.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder releases its lock
        holder.wait()
    run_config(tiny(out), progress=False, figures=False)
    same_results(out, reference)


def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    with output_lock(tmp_path / "out"):
        with output_lock(tmp_path / "out"):
            pass
    probe = subprocess.run(
        [sys.executable, "-P", "-c", HOLD_LOCK, str(tmp_path / "out")], input="", capture_output=True, text=True
    )
    assert probe.stdout.strip() == "locked", probe.stderr
