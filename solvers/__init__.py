"""Rules: plain functions ``rule(problem, samples=None, **options) -> Result``, by name in :data:`RULES`."""

from policyagg.errors import InvalidProblemError
from policyagg.solvers.approval import approval
from policyagg.solvers.baselines import generalized_gini, nash_welfare, random_dictator
from policyagg.solvers.borda import borda
from policyagg.solvers.completion import pareto_check, pareto_complete
from policyagg.solvers.occupancy import return_ranges, with_ranges
from policyagg.solvers.pvc import proportional_veto_core, pvc_epsilon
from policyagg.solvers.quantile import max_quantile
from policyagg.solvers.welfare import egalitarian, utilitarian

RULES = {
    "utilitarian": utilitarian,
    "egalitarian": egalitarian,
    "approval": approval,
    "max_quantile": max_quantile,
    "borda": borda,
    "pvc": proportional_veto_core,
    "random_dictator": random_dictator,
    "nash_welfare": nash_welfare,
    "generalized_gini": generalized_gini,
}


def get_rule(name: str):
    """The rule registered as ``name``; an unknown name lists the valid ones."""
    try:
        return RULES[name]
    except KeyError:
        raise InvalidProblemError(f"unknown rule {name!r}; choose one of: {', '.join(sorted(RULES))}") from None


__all__ = ["RULES", "get_rule", "return_ranges", "with_ranges", "utilitarian", "egalitarian", "approval", "max_quantile",
           "borda", "proportional_veto_core", "pvc_epsilon", "random_dictator", "nash_welfare", "generalized_gini",
           "pareto_check", "pareto_complete"]
