"""MkDocs hook: let mkdocstrings read the package in its installed layout, however it was installed.

The repository's four top-level folders install as one namespace (``policyagg/`` ->
``policyagg``, ``envs/`` -> ``policyagg.envs``, ...; ``[tool.setuptools.package-dir]`` in
``pyproject.toml``). Griffe reads source files without importing them, and from the
checkout (or an editable install) it would find ``policyagg/`` without its subpackages.
This hook copies the checkout's sources into a temporary folder laid out as the wheel
installs them and puts that folder first on mkdocstrings' search path, so the API
reference is built from the checkout's own sources with a wheel install, an editable
install, or none at all.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority

_STAGING: list[Path] = []


def package_dirs(root: Path) -> dict[str, Path]:
    """Installed package name -> source folder, from ``pyproject.toml``'s package-dir mapping.

    As in setuptools, a package without an entry lives in its nearest mapped ancestor's
    folder (``policyagg.envs.tabular`` -> ``envs/tabular``), or at its dotted path.
    """
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = setuptools.get("package-dir", {})
    packages = setuptools.get("packages")
    # a `packages.find` table instead of a list: document the mapped packages
    names = packages if isinstance(packages, list) else [name for name in mapping if name]
    folders = {}
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), -1, -1):
            prefix = ".".join(parts[:cut])
            if prefix in mapping or cut == 0:
                folders[name] = root.joinpath(mapping.get(prefix, ""), *parts[cut:])
                break
    return folders


def stage_sources(root: Path, target: Path) -> None:
    """Copy every package's folder to ``target/<name as a path>``, parents first."""
    for name, source in sorted(package_dirs(root).items(), key=lambda item: item[0].count(".")):
        shutil.copytree(
            source,
            target / name.replace(".", "/"),
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )


@event_priority(100)  # before mkdocstrings reads its handler configuration
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    root = Path(config.config_file_path).resolve().parent
    staging = Path(tempfile.mkdtemp(prefix="policyagg-api-"))
    _STAGING.append(staging)
    stage_sources(root, staging)
    python = config.plugins["mkdocstrings"].config.handlers.setdefault("python", {})
    python["paths"] = [str(staging)]
    return config


def on_shutdown() -> None:
    while _STAGING:
        shutil.rmtree(_STAGING.pop(), ignore_errors=True)
