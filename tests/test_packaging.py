"""The installed package: one namespace, complete public names, a version, type information,
and every docstring example run as a doctest."""

import doctest
import importlib
import importlib.metadata
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import policyagg

SUBPACKAGES = ("policyagg.envs", "policyagg.solvers", "policyagg.experiments")


def _modules() -> list[str]:
    """Every module of the installed package; an editable install keeps the subpackages in other
    folders, so each one is walked from its own path."""
    names = {"policyagg"}
    for package in ("policyagg", *SUBPACKAGES):
        module = importlib.import_module(package)
        names |= {info.name for info in pkgutil.walk_packages(module.__path__, package + ".")}
    names.add("policyagg")
    return sorted(names | set(SUBPACKAGES))


def test_one_namespace():
    for name in SUBPACKAGES:
        module = importlib.import_module(name)
        assert module.__name__ == name
    top_level = importlib.metadata.distribution("policyagg").read_text("top_level.txt")
    assert top_level is None or top_level.split() == ["policyagg"]
    files = [str(f) for f in importlib.metadata.files("policyagg") or []]
    assert not any(f.startswith(("envs/", "solvers/", "experiments/")) for f in files)


def test_subpackages_are_found_under_policyagg():
    # whatever the install (wheel or editable), every walked module imports under the namespace
    names = _modules()
    assert {"policyagg.envs.attention", "policyagg.solvers.lp", "policyagg.experiments.cli"} <= set(names)


def test_version_and_type_marker():
    assert policyagg.__version__ == importlib.metadata.version("policyagg")
    assert (Path(policyagg.__file__).parent / "py.typed").is_file()


@pytest.mark.parametrize("name", ["policyagg", *SUBPACKAGES])
def test_all_names_resolve(name):
    module = importlib.import_module(name)
    assert module.__all__, f"{name} has an empty __all__"
    missing = [item for item in module.__all__ if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"


def test_import_policyagg_is_light():
    # the public names load on first use, so `import policyagg` and the CLI's --help stay fast
    code = "import sys, policyagg; print(sorted(m for m in ('scipy', 'highspy', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: Modules of optional extras -> the package whose absence skips them (CI installs the extras).
OPTIONAL = {"policyagg.envs.oracles.sb3": "stable_baselines3"}


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name], reason=f"{name} needs an optional extra")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples in {name} failed"
