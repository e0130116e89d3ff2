"""policyagg: the model of policy aggregation (MDP, occupancy polytope, agents, samples, results).

The rules live in the ``solvers`` package, environments in ``envs``.
"""

from policyagg.errors import (
    InfeasibleError,
    InvalidMDPError,
    InvalidProblemError,
    InvalidSamplesError,
    PolicyAggError,
    SolverError,
    SolverTimeLimitError,
    UnboundedError,
)
from policyagg.mdp import StructureWarning, TabularMDP
from policyagg.metrics import gini
from policyagg.polytope import LinearConstraints, OccupancyPolytope, budget, forbid, return_floor
from policyagg.problem import Problem, ReturnRanges
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.sampling import sample_policy_returns

__all__ = [
    "InfeasibleError", "InvalidMDPError", "InvalidProblemError", "InvalidSamplesError", "PolicyAggError",
    "SolverError", "SolverTimeLimitError", "UnboundedError", "StructureWarning", "TabularMDP", "gini",
    "LinearConstraints", "OccupancyPolytope", "budget", "forbid", "return_floor", "Problem", "ReturnRanges",
    "Result", "ReturnSamples", "sample_policy_returns",
]
