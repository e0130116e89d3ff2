"""The public names of policyagg.envs and policyagg.envs.tabular: importable, and the same objects everywhere."""

import importlib
import inspect

import pytest

PUBLIC = [("policyagg.envs", name) for name in importlib.import_module("policyagg.envs").__all__] + [
    ("policyagg.envs.tabular", name) for name in importlib.import_module("policyagg.envs.tabular").__all__
]


@pytest.mark.parametrize("module, name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_every_public_name_is_importable(module, name):
    imported = getattr(__import__(module, fromlist=[name]), name)  # what `from module import name` does
    assert imported is getattr(importlib.import_module(module), name)


def test_tabular_names_keep_their_old_path():
    from policyagg import envs

    tabular = envs.tabular
    assert envs.from_gymnasium is tabular.from_gymnasium and envs.EnvModel is tabular.EnvModel
    assert tabular.ROUTES == ("protocol", "model", "enumerate", "sampled")
    assert tabular.ON_TERMINATION == ("absorb", "reset")
    assert (tabular.PROBE_GRID, tabular.PROBE_BUDGET, tabular.RESET_SAMPLES, tabular.MAX_ACTIONS) == (
        32,
        20_000,
        500,
        10_000,
    )


def test_rollout_function_and_module():
    """``envs.rollout`` is the function; its module is still importable by its full name."""
    from policyagg import envs

    module = importlib.import_module("policyagg.envs.rollout")
    assert inspect.isfunction(envs.rollout) and envs.rollout is module.rollout
    from policyagg.envs.rollout import RolloutReport  # noqa: F401


def test_every_tabular_module_has_a_docstring():
    from policyagg.envs import tabular

    for name in ("chain", "context", "convert", "model", "probe", "routes", "sampled", "snapshot", "spaces"):
        module = importlib.import_module(f"policyagg.envs.tabular.{name}")
        assert module.__doc__ and module.__doc__.strip(), name
    assert tabular.__doc__.startswith("From a Gymnasium environment to a tabular model")
