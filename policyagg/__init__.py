"""policyagg: the model of policy aggregation (MDP, occupancy polytope, agents, samples, results).

The rules live in :mod:`policyagg.solvers`, environments in :mod:`policyagg.envs` and the
command line, configs and the paper's experiments in :mod:`policyagg.experiments`.

The public names below are imported on first use (PEP 562), so that ``import policyagg``
and ``policyagg --help`` stay fast; ``from policyagg import TabularMDP`` works as usual.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from policyagg._lazy import lazy_exports

try:
    __version__ = version("policyagg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it
_EXPORTS = {
    "CheckpointWarning": "policyagg.errors",
    "CorruptFileError": "policyagg.errors",
    "InfeasibleError": "policyagg.errors",
    "InvalidMDPError": "policyagg.errors",
    "InvalidProblemError": "policyagg.errors",
    "InvalidSamplesError": "policyagg.errors",
    "OutputError": "policyagg.errors",
    "OutputLockedError": "policyagg.errors",
    "PolicyAggError": "policyagg.errors",
    "SolverError": "policyagg.errors",
    "SolverTimeLimitError": "policyagg.errors",
    "UnboundedError": "policyagg.errors",
    "NormConflictError": "policyagg.errors",
    "PolicyEvaluationError": "policyagg.errors",
    "SolverWarning": "policyagg.errors",
    "GapWarning": "policyagg.errors",
    "ApprovalGapWarning": "policyagg.errors",
    "StructureWarning": "policyagg.mdp",
    "TabularMDP": "policyagg.mdp",
    "KroneckerTransitions": "policyagg.kronecker",
    "gini": "policyagg.metrics",
    "LinearConstraints": "policyagg.polytope",
    "OccupancyPolytope": "policyagg.polytope",
    "budget": "policyagg.polytope",
    "forbid": "policyagg.polytope",
    "return_floor": "policyagg.polytope",
    "Problem": "policyagg.problem",
    "Role": "policyagg.norms",
    "Prohibition": "policyagg.norms",
    "Obligation": "policyagg.norms",
    "Rate": "policyagg.norms",
    "Guarantee": "policyagg.norms",
    "AllOf": "policyagg.norms",
    "AmbiguousNorm": "policyagg.norms",
    "Norms": "policyagg.norms",
    "ReturnRanges": "policyagg.problem",
    "Result": "policyagg.result",
    "ReturnSamples": "policyagg.samples",
    "sample_policy_returns": "policyagg.sampling",
    "MEASURES": "policyagg.measures",
    "sample_returns": "policyagg.measures",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # static type checkers and IDEs see the eager imports
    from policyagg.errors import (
        ApprovalGapWarning,
        CheckpointWarning,
        CorruptFileError,
        GapWarning,
        InfeasibleError,
        InvalidMDPError,
        InvalidProblemError,
        InvalidSamplesError,
        NormConflictError,
        OutputError,
        OutputLockedError,
        PolicyAggError,
        PolicyEvaluationError,
        SolverError,
        SolverTimeLimitError,
        SolverWarning,
        UnboundedError,
    )
    from policyagg.kronecker import KroneckerTransitions
    from policyagg.mdp import StructureWarning, TabularMDP
    from policyagg.measures import MEASURES, sample_returns
    from policyagg.metrics import gini
    from policyagg.norms import AllOf, AmbiguousNorm, Guarantee, Norms, Obligation, Prohibition, Rate, Role
    from policyagg.polytope import LinearConstraints, OccupancyPolytope, budget, forbid, return_floor
    from policyagg.problem import Problem, ReturnRanges
    from policyagg.result import Result
    from policyagg.samples import ReturnSamples
    from policyagg.sampling import sample_policy_returns
