"""The rule registry: specs, option checks, and a user's own rule run from a TOML configuration."""

import inspect

import numpy as np
import pytest
from conftest import bandit

from policyagg import solvers
from policyagg.errors import InvalidProblemError, InvalidSamplesError
from policyagg.experiments.config import InvalidConfigError, load_config
from policyagg.experiments.run import run_config
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.solvers import RuleCall, get_rule, get_spec, integer, register_rule, registered_rule, unregister_rule

SPECS = sorted(solvers.RULE_SPECS)


# ------------------------------------------------------------------ the registry
def test_rules_and_specs_name_the_same_functions():
    assert list(solvers.RULES) == list(solvers.RULE_SPECS)
    for name, spec in solvers.RULE_SPECS.items():
        assert spec.name == name and spec.function is solvers.RULES[name] is get_rule(name)
    assert solvers.RULES["pvc"] is solvers.proportional_veto_core and solvers.RULES["borda"] is solvers.borda


def test_unknown_rule_lists_the_valid_ones():
    for lookup in (get_rule, get_spec):
        with pytest.raises(
            InvalidProblemError, match=r"unknown rule 'condorcet'; choose one of: approval, (\w+, )*borda, "
        ):
            lookup("condorcet")


def test_volumetric_rules_declare_that_they_need_samples():
    assert sorted(n for n, s in solvers.RULE_SPECS.items() if s.needs_samples) == [
        "approval",
        "borda",
        "max_quantile",
        "pvc",
    ]


@pytest.mark.parametrize("name", SPECS)
def test_a_call_without_samples_fails_exactly_when_the_spec_needs_them(name):
    spec = get_spec(name)
    if spec.needs_samples:
        with pytest.raises(InvalidSamplesError, match=f"rule '{name}' ranks policies by volume and needs sampled"):
            spec.function(bandit())
    else:
        assert spec.function(bandit()).report["pareto_optimal"]


@pytest.mark.parametrize("name", SPECS)
def test_declared_options_match_the_signature(name):
    spec = get_spec(name)
    body = list(inspect.signature(spec.body).parameters.values())[1:]
    assert {p.name: p.default for p in body} == spec.defaults
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in body)
    public = inspect.signature(spec.function).parameters
    assert list(public) == ["problem", "samples", *spec.options, "constraints", "backend", "time_limit"]
    assert {k: p.default for k, p in public.items() if k != "problem"} == (
        {"samples": None} | spec.defaults | {"constraints": None, "backend": "highs", "time_limit": None}
    )
    spec.validate(spec.defaults)  # the defaults are allowed values
    assert spec.summary and spec.function.__doc__ == spec.body.__doc__


def test_summary_is_the_first_paragraph_of_the_docstring():
    assert get_spec("utilitarian").summary == "Maximise weighted welfare over the (constrained) occupancy polytope."
    assert get_spec("approval").summary == (
        "Maximise the (weighted) number of approvers, then complete among the policies that keep that approving set."
    )


@pytest.mark.parametrize(
    "name, options, match",
    [
        (
            "approval",
            {"alfa": 0.9},
            r"rule 'approval' has no option `alfa`; its options are: `alpha`, `completion`, `search`, "
            r"`constraints`, `backend`, `time_limit`",
        ),
        ("approval", {"alpha": 1.9}, r"rule 'approval': `alpha` must be a number in \[0, 1\]; got 1.9"),
        ("approval", {"alpha": "0.9"}, r"`alpha` must be a number in \[0, 1\]; got '0.9'"),
        (
            "approval",
            {"completion": "nash"},
            r"`completion` must be one of egalitarian, utilitarian, utilitarian-raw; got 'nash'",
        ),
        ("borda", {"breakpoints": 0}, r"`breakpoints` must be a positive integer; got 0"),
        ("borda", {"fallback": "lp"}, r"`fallback` must be one of None, milp; got 'lp'"),
        ("pvc", {"eps": 1.0}, r"`eps` must be a number in \[0, 1\); got 1.0"),
        ("pvc", {"order": "ab"}, r"`order` must be None or a sequence with one entry per agent"),
        ("nash_welfare", {"tolerance": 0}, r"`tolerance` must be a positive number; got 0"),
        ("nash_welfare", {"max_rounds": True}, r"`max_rounds` must be a positive integer; got True"),
        ("random_dictator", {"pareto": "yes"}, r"`pareto` must be True or False; got 'yes'"),
        ("utilitarian", {"normalize": 1}, r"`normalize` must be True or False; got 1"),
        ("utilitarian", {"backend": "cplex"}, r"`backend` must be one of highs, pulp; got 'cplex'"),
        ("utilitarian", {"time_limit": -1}, r"`time_limit` must be a positive number; got -1"),
        ("utilitarian", {"constraints": "none"}, r"`constraints` must be None or LinearConstraints"),
    ],
)
def test_validate_rejects_typos_and_bad_values_without_running(name, options, match):
    with pytest.raises(InvalidProblemError, match=match):
        get_spec(name).validate(options)


def test_validate_returns_canonical_values():
    assert get_spec("approval").validate({"alpha": 1, "time_limit": 5}) == {"alpha": 1.0, "time_limit": 5.0}
    assert get_spec("borda").validate({"fallback": None, "breakpoints": np.int64(8)}) == {
        "fallback": None,
        "breakpoints": 8,
    }
    assert get_spec("pvc").validate({}) == {}


def test_an_unknown_option_at_call_time_is_a_typed_error_listing_the_options():
    with pytest.raises(
        InvalidProblemError,
        match=r"rule 'utilitarian' has no option `normalise`; its options are: "
        r"`normalize`, `constraints`, `backend`, `time_limit`",
    ):
        solvers.utilitarian(bandit(), normalise=True)


# ------------------------------------------------------------------ registering
def _first_agents_best(call: RuleCall, *, agent: int = 0) -> Result:
    """Maximise one agent's return (lifted to a Pareto-optimal policy)."""
    return call.finish(call.maximize(call.problem.reward_matrix[agent]), chosen=agent)


def test_registering_a_taken_name_needs_replace():
    with pytest.raises(InvalidProblemError, match=r"a rule named 'utilitarian' is registered already; pass `replace="):
        register_rule("utilitarian")(_first_agents_best)
    assert get_rule("utilitarian") is solvers.utilitarian
    before = list(solvers.RULES)
    with registered_rule("utilitarian", _first_agents_best, replace=True) as rule:
        assert get_rule("utilitarian") is rule and rule is not solvers.utilitarian
        assert rule(bandit(), agent=1).rule == "utilitarian"
    assert get_rule("utilitarian") is solvers.utilitarian and get_spec("utilitarian").function is solvers.utilitarian
    assert list(solvers.RULES) == before


def test_unregister_removes_the_rule():
    register_rule("scratch")(_first_agents_best)
    assert unregister_rule("scratch").name == "scratch"
    assert "scratch" not in solvers.RULES and "scratch" not in solvers.RULE_SPECS
    with pytest.raises(InvalidProblemError, match="unknown rule 'scratch'"):
        unregister_rule("scratch")


def test_options_are_inferred_from_defaults_and_checked_at_call_time():
    with registered_rule("scratch", _first_agents_best) as rule:
        option = get_spec("scratch").options["agent"]
        assert (option.kind, option.default, option.name) == ("int", 0, "agent")
        with pytest.raises(InvalidProblemError, match=r"`agent` must be an integer; got 0.5"):
            rule(bandit(), agent=0.5)


@pytest.mark.parametrize(
    "body, declared, match",
    [
        (lambda call, agent=0: None, {}, r"option `agent` must be keyword-only with a default"),
        (lambda call, *, agent: None, {}, r"option `agent` must be keyword-only with a default"),
        (lambda *, agent=0: None, {}, r"the body's first parameter must be the call context"),
        (lambda call, *, backend="highs": None, {}, r"`backend` is a parameter of every rule"),
        (
            lambda call, *, agent=0: None,
            {"agnet": integer(0)},
            r"declared option `agnet` is not a keyword-only parameter",
        ),
        (lambda call, *, agent=-1: None, {"agent": integer(0)}, r"`agent` must be an integer >= 0; got -1"),
    ],
)
def test_bad_declarations_are_refused(body, declared, match):
    with pytest.raises(InvalidProblemError, match=match):
        register_rule("scratch", options=declared)(body)
    assert "scratch" not in solvers.RULES


def test_a_user_rule_runs_from_a_toml_configuration(tmp_path):
    """Register a rule, name it in a TOML file, run the file; the config loader checks the
    rule's options from its spec before sampling anything."""
    config = tmp_path / "mine.toml"

    def write(options: str, output: str) -> None:
        config.write_text(f"""
name = "mine"
output = "{tmp_path / output}"
seeds = [0, 1]

[environment]
id = "attention"
kwargs = {{ n_sites = 3, n_phases = 3 }}

[agents]
population = "random_subsets"
n_agents = 3

[measure]
name = "policy"
samples = 200

[[rules]]
label = "best for agent 2"
rule = "best_for_agent"
options = {options}

[[rules]]
label = "utilitarian"
rule = "utilitarian"
""")

    declared = {"agent": integer(0, help="the agent whose return is maximised")}
    with registered_rule("best_for_agent", _first_agents_best, options=declared):
        write("{ agnet = 2 }", "typo")
        with pytest.raises(
            InvalidConfigError,
            match=r"`rules\[0\].options`: rule 'best_for_agent' has no option "
            r"`agnet`; its options are: `agent`",
        ):
            load_config(config)
        write("{ agent = -2 }", "bad")
        with pytest.raises(InvalidConfigError, match=r"`agent` must be an integer >= 0; got -2 \(`agent`: the agent"):
            run_config(config, progress=False, figures=False)
        assert not (tmp_path / "bad").exists()  # refused before any sampling or writing

        write("{ agent = 2 }", "out")
        run = run_config(config, progress=False, figures=False)
    for seed_run in run.seeds:
        result = seed_run.results["best for agent 2"]
        assert result.rule == "best_for_agent" and result.options == {"agent": 2, "backend": "highs"}
        assert result.diagnostics["chosen"] == 2 and result.report["pareto_optimal"]
        # agent 2 gets its best return over the occupancy polytope (the return range's top)
        best = solvers.return_ranges(_problem_of(run.config, seed_run.seed)).upper[2]
        assert result.returns[2] == pytest.approx(best, abs=1e-7)
        assert result.returns[2] >= seed_run.results["utilitarian"].returns[2] - 1e-9
    assert Result.load(tmp_path / "out" / "seed0" / "best-for-agent-2").rule == "best_for_agent"


def _problem_of(config, seed):
    from policyagg.experiments.run import build_problem

    return build_problem(config, seed)


def test_a_rule_that_needs_samples_gets_them_checked():
    def top_sample(call: RuleCall) -> Result:
        """The sampled return vector of largest sum, reached by maximising its direction (toy)."""
        return call.finish(call.maximize(call.samples.values.sum(axis=0) @ call.problem.reward_matrix))

    with registered_rule("toy", top_sample, needs_samples=True) as rule:
        with pytest.raises(InvalidSamplesError, match="rule 'toy' ranks policies by volume"):
            rule(bandit())
        with pytest.raises(InvalidSamplesError, match="returns for 3 agents but the problem has 2"):
            rule(bandit(), ReturnSamples(np.zeros((4, 3))))
        result = rule(bandit(), ReturnSamples(np.ones((4, 2))))
        assert result.rule == "toy" and "min_rank" in result.report


def test_the_register_rule_example_runs():
    import doctest

    from policyagg.solvers import registry

    failed, tried = doctest.testmod(registry)
    assert tried > 5 and failed == 0 and "dictator" not in solvers.RULES
