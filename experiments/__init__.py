"""The experiments: TOML configs, runs with checkpoints, the paper's comparison, figures, tables,
benchmarks and the ``policyagg`` command line (:mod:`policyagg.experiments.cli`).

The names below are imported on first use, so that ``policyagg --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from policyagg._lazy import lazy_exports

_EXPORTS = {
    "ExperimentConfig": "policyagg.experiments.config",
    "InvalidConfigError": "policyagg.experiments.config",
    "load_config": "policyagg.experiments.config",
    "parse_config": "policyagg.experiments.config",
    "run_config": "policyagg.experiments.run",
    "run_configs": "policyagg.experiments.run",
    "compare": "policyagg.experiments.compare",
    "attention_problem": "policyagg.experiments.compare",
    "load_reference": "policyagg.experiments.reference",
    "run_reference": "policyagg.experiments.reference",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from policyagg.experiments.compare import attention_problem, compare
    from policyagg.experiments.config import ExperimentConfig, InvalidConfigError, load_config, parse_config
    from policyagg.experiments.reference import load_reference, run_reference
    from policyagg.experiments.run import run_config, run_configs
