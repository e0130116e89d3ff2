"""Rules: plain functions ``rule(problem, samples=None, **options) -> Result``, declared with
:func:`register_rule`, by name in :data:`RULES` (functions) and :data:`RULE_SPECS` (their specs)."""

from policyagg.errors import InvalidProblemError
from policyagg.solvers.approval import approval
from policyagg.solvers.bargaining import egalitarian_gains, kalai_smorodinsky, nash_bargaining
from policyagg.solvers.baselines import generalized_gini, nash_welfare, random_dictator
from policyagg.solvers.bayes import bayes_map, bayes_meu, bayes_robust, thompson, thompson_top_k
from policyagg.solvers.borda import borda
from policyagg.solvers.completion import pareto_check, pareto_complete
from policyagg.solvers.entropy import entropy_regularized
from policyagg.solvers.lotteries import conditional_utilitarian, max_nash_welfare_lottery, proportional
from policyagg.solvers.norms import check_norms, conflicting_norms, norm_prices, resolve_norms, run_with_norms
from policyagg.solvers.occupancy import return_ranges, with_ranges
from policyagg.solvers.pvc import proportional_veto_core, pvc_epsilon
from policyagg.solvers.quantile import max_quantile
from policyagg.solvers.registry import (
    COMMON_OPTIONS,
    RULE_SPECS,
    RULES,
    OptionSpec,
    RuleCall,
    RuleSpec,
    choice,
    flag,
    get_rule,
    get_spec,
    integer,
    number,
    per_agent,
    register_rule,
    registered_rule,
    unregister_rule,
)

# the rule modules register their rules on import, in this order
from policyagg.solvers.welfare import egalitarian, utilitarian

__all__ = [
    "RULES",
    "RULE_SPECS",
    "RuleSpec",
    "OptionSpec",
    "RuleCall",
    "COMMON_OPTIONS",
    "get_rule",
    "get_spec",
    "register_rule",
    "unregister_rule",
    "registered_rule",
    "flag",
    "integer",
    "number",
    "choice",
    "per_agent",
    "return_ranges",
    "with_ranges",
    "utilitarian",
    "egalitarian",
    "approval",
    "max_quantile",
    "borda",
    "proportional_veto_core",
    "pvc_epsilon",
    "random_dictator",
    "nash_welfare",
    "generalized_gini",
    "nash_bargaining",
    "kalai_smorodinsky",
    "egalitarian_gains",
    "bayes_map",
    "bayes_meu",
    "bayes_robust",
    "thompson",
    "thompson_top_k",
    "entropy_regularized",
    "pareto_check",
    "pareto_complete",
    "check_norms",
    "conflicting_norms",
    "resolve_norms",
    "run_with_norms",
    "norm_prices",
    "proportional",
    "conditional_utilitarian",
    "max_nash_welfare_lottery",
]
