"""Experiment configurations: a TOML file (or a dict) validated into :class:`ExperimentConfig`.

A configuration names the environment, the agents, the measure, the rules and the seeds::

    name = "attention-a"
    output = "results/attention-a"     # relative paths are relative to the working directory
    seeds = [0, 1, 2, 3, 4]

    [environment]
    id = "attention"                    # the attention model, or any registered Gymnasium id
    kwargs = { n_sites = 5, n_phases = 3 }  # checked against the environment's constructor;
                                        # attention: variant = "classic" (default) | "paper"
    import = ["mypkg"]                  # modules to import first (they register their ids): runs their code
    gamma = 1.0
    on_termination = "absorb"           # Gymnasium ids only: "absorb" or "reset"
    reset_samples = 500                 # Gymnasium ids only: resets sampled for the start distribution

    [agents]
    population = "one_per_site"         # attention: "one_per_site" | "random_subsets"; Gymnasium: "env"
    n_agents = 10                       # random_subsets only

    [measure]
    name = "policy"                     # "policy" | "volume" | "optimal-mixture"
    samples = 10000
    options = {}                        # the measure sampler's keyword options, e.g. { chains = 4 }

    [[rules]]
    label = "max-quantile"
    rule = "max_quantile"
    options = {}

    [solver]                            # optional; the default route is "lp"
    route = "oracle"                    # rules through a policy-optimisation oracle (issue 16)
    oracle = "exact"                    # "exact" | "q-learning" | "sb3:PPO"; see experiments/oracle_route.py
    options = {}                        # the oracle's options, e.g. { steps = 150000 } for q-learning

Unknown keys and bad values raise :class:`InvalidConfigError` naming the key, when the file is
read and before any work starts: a rule's options are checked against the rule's spec
(:meth:`policyagg.solvers.RuleSpec.validate`), so a typo (``alfa = 0.9``) or a bad value
(``alpha = 1.9``) fails at once; so do the measure's options (names and values), the
attention model's parameters (by building it) and a Gymnasium environment's ``kwargs``
(against its constructor's parameters; values are the environment's to check).

Trust: a configuration is data unless it says ``import``. Only registered ids are accepted
(Gymnasium's, MO-Gymnasium's, ``policyagg/...``); an id of the form ``"module:Name"``, which
Gymnasium would import, is refused. ``environment.import`` names modules to import (they run
as code) so that they can register their environments: a configuration that imports code is
code, to be run only if you trust its modules.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policyagg.errors import InvalidProblemError
from policyagg.measures import MEASURES, check_measure_options, measure_options

#: The shipped configurations (the paper's experiments).
CONFIGS = Path(__file__).resolve().parent / "configs"
ATTENTION_POPULATIONS = ("one_per_site", "random_subsets")
#: ``policyagg.envs.attention.VARIANTS`` (that module imports Gymnasium; a test keeps the two equal).
ATTENTION_VARIANTS = ("classic", "paper")


class InvalidConfigError(InvalidProblemError):
    """A configuration key is unknown or has a bad value."""


@dataclass(frozen=True)
class RuleRow:
    """One ``[[rules]]`` entry: a label, the registered rule's name, and its options (checked
    against the rule's :class:`~policyagg.solvers.RuleSpec` when the configuration is read)."""

    label: str
    rule: str
    options: dict = field(default_factory=dict)


#: The former name of :class:`RuleRow` (not :class:`policyagg.solvers.RuleSpec`, the rule's own spec).
RuleSpec = RuleRow


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    output: Path
    seeds: tuple[int, ...]
    env_id: str
    env_kwargs: dict
    gamma: float
    on_termination: str
    population: str
    n_agents: int | None
    measure: str
    samples: int
    rules: tuple[RuleRow, ...]
    measure_options: dict = field(default_factory=dict)
    env_imports: tuple[str, ...] = ()
    reset_samples: int | None = None
    solver: Any = None  # experiments.oracle_route.SolverConfig of the oracle route, None for the LP route

    def with_overrides(
        self, *, samples: int | None = None, seeds=None, output=None, measure: str | None = None
    ) -> ExperimentConfig:
        """A copy with the number of samples, the seeds, the output folder or the measure
        replaced (a new measure drops the old one's options)."""
        from dataclasses import replace

        if measure is not None and measure not in MEASURES:
            raise InvalidConfigError(f"`measure.name` must be one of {', '.join(MEASURES)}; got {measure!r}")
        return replace(
            self,
            measure=self.measure if measure is None else measure,
            measure_options=self.measure_options if measure in (None, self.measure) else {},
            samples=self.samples if samples is None else _positive_int(samples, "measure.samples"),
            seeds=self.seeds if seeds is None else _seeds(seeds),
            output=self.output if output is None else Path(output),
        )


def load_config(path) -> ExperimentConfig:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except IsADirectoryError:
        raise InvalidConfigError(f"{path} is a folder; give the path of a TOML configuration file") from None
    except FileNotFoundError:
        raise InvalidConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise InvalidConfigError(f"{path}: cannot read the configuration ({exc.strerror})") from None
    return parse_config(data, source=str(path))


def parse_config(data: dict, *, source: str = "config") -> ExperimentConfig:
    """Validate a configuration dict (the parsed TOML) into an :class:`ExperimentConfig`."""
    if not isinstance(data, dict):
        raise InvalidConfigError(f"{source}: the configuration must be a table of keys")
    _known(data, {"name", "output", "seeds", "environment", "agents", "measure", "rules", "solver"}, "", source)
    env = _table(data, "environment", source, required=True)
    agents = _table(data, "agents", source, required=True)
    measure = _table(data, "measure", source, required=True)
    _known(env, {"id", "kwargs", "gamma", "on_termination", "import", "reset_samples"}, "environment.", source)
    _known(agents, {"population", "n_agents"}, "agents.", source)
    _known(measure, {"name", "samples", "options"}, "measure.", source)

    name = _string(data.get("name"), "name", source)
    env_id = _string(env.get("id"), "environment.id", source)
    kwargs = env.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise InvalidConfigError(f"{source}: `environment.kwargs` must be a table; got {kwargs!r}")
    imports = _imports(env.get("import", []), source)
    _check_environment(env_id, kwargs, imports, source)
    gamma = env.get("gamma", 1.0)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
        raise InvalidConfigError(f"{source}: `environment.gamma` must be a number in (0, 1]; got {gamma!r}")
    on_termination = env.get("on_termination", "absorb")
    if on_termination not in ("absorb", "reset"):
        raise InvalidConfigError(
            f"{source}: `environment.on_termination` must be 'absorb' or 'reset'; got {on_termination!r}"
        )

    reset_samples = env.get("reset_samples")
    if reset_samples is not None:
        if env_id == "attention":
            raise InvalidConfigError(f"{source}: `environment.reset_samples` applies only to Gymnasium ids")
        reset_samples = _positive_int(reset_samples, "environment.reset_samples", source)

    population = _string(agents.get("population"), "agents.population", source)
    populations = ATTENTION_POPULATIONS if env_id == "attention" else ("env",)
    if population not in populations:
        raise InvalidConfigError(
            f"{source}: `agents.population` must be one of {', '.join(populations)} for "
            f"environment {env_id!r}; got {population!r}"
        )
    n_agents = agents.get("n_agents")
    if population == "random_subsets":
        n_agents = _positive_int(n_agents, "agents.n_agents", source)
    elif n_agents is not None:
        raise InvalidConfigError(f"{source}: `agents.n_agents` applies only to population 'random_subsets'")

    measure_name = measure.get("name", "policy")
    if measure_name not in MEASURES:
        raise InvalidConfigError(f"{source}: `measure.name` must be one of {', '.join(MEASURES)}; got {measure_name!r}")
    samples = _positive_int(measure.get("samples"), "measure.samples", source)
    sampler_options = measure.get("options", {})
    if not isinstance(sampler_options, dict):
        raise InvalidConfigError(f"{source}: `measure.options` must be a table")
    allowed = measure_options(measure_name)
    unknown = sorted(set(sampler_options) - set(allowed))
    if unknown:
        raise InvalidConfigError(
            f"{source}: unknown key `measure.options.{unknown[0]}` for measure {measure_name!r}; "
            f"its options are: {', '.join(allowed)}"
        )
    try:
        check_measure_options(measure_name, sampler_options)
    except InvalidProblemError as exc:
        raise InvalidConfigError(f"{source}: `measure.options`: {exc}") from None

    solver = _solver(data, env_id, source)
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        raise InvalidConfigError(f"{source}: `rules` must be a non-empty array of tables ([[rules]])")
    specs = []
    from policyagg.solvers import RULES, get_spec  # here, not at import time: configs can be read without the solvers

    for k, rule in enumerate(rules):
        where = f"rules[{k}]"
        if not isinstance(rule, dict):
            raise InvalidConfigError(f"{source}: `{where}` must be a table")
        _known(rule, {"label", "rule", "options"}, f"{where}.", source)
        rule_name = _string(rule.get("rule"), f"{where}.rule", source)
        if solver is not None:
            specs.append(_oracle_rule(rule, rule_name, where, source))
            continue
        if rule_name not in RULES:
            raise InvalidConfigError(
                f"{source}: `{where}.rule` = {rule_name!r} is not a rule; choose one of {', '.join(sorted(RULES))}"
            )
        options = rule.get("options", {})
        if not isinstance(options, dict):
            raise InvalidConfigError(f"{source}: `{where}.options` must be a table")
        try:  # names and values from the rule's spec, before anything is sampled
            get_spec(rule_name).validate(options)
        except InvalidProblemError as exc:
            raise InvalidConfigError(f"{source}: `{where}.options`: {exc}") from None
        specs.append(RuleRow(str(rule.get("label", rule_name)), rule_name, dict(options)))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise InvalidConfigError(f"{source}: rule labels must be distinct; got {labels}")

    return ExperimentConfig(
        name=name,
        output=Path(data.get("output", f"results/{name}")),
        seeds=_seeds(data.get("seeds", [0]), source),
        env_id=env_id,
        env_kwargs=dict(kwargs),
        gamma=float(gamma),
        on_termination=on_termination,
        population=population,
        n_agents=n_agents,
        measure=measure_name,
        samples=samples,
        rules=tuple(specs),
        measure_options=dict(sampler_options),
        env_imports=imports,
        reset_samples=reset_samples,
        solver=solver,
    )


def _solver(data: dict, env_id: str, source: str):
    """The ``[solver]`` section as a :class:`~policyagg.experiments.oracle_route.SolverConfig`
    when it selects the oracle route, else ``None`` (the LP route)."""
    if "solver" not in data:
        return None
    from policyagg.experiments.oracle_route import parse_solver

    solver = parse_solver(data["solver"], source, InvalidConfigError)
    if solver.route == "lp":
        return None
    if solver.oracle.startswith("sb3:") and env_id == "attention":
        raise InvalidConfigError(
            f"{source}: `solver.oracle` = {solver.oracle!r} trains on a Gymnasium id, not 'attention'"
        )
    return solver


def _oracle_rule(rule: dict, rule_name: str, where: str, source: str) -> RuleRow:
    from policyagg.experiments.oracle_route import check_rule_options

    options = rule.get("options", {})
    if not isinstance(options, dict):
        raise InvalidConfigError(f"{source}: `{where}.options` must be a table")
    try:
        name = check_rule_options(rule_name, options)
    except InvalidProblemError as exc:
        raise InvalidConfigError(f"{source}: `{where}`: {exc}") from None
    return RuleRow(str(rule.get("label", rule_name)), name, dict(options))


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _imports(value, source: str) -> tuple[str, ...]:
    """``environment.import``: a module name or a list of them, validated (not yet imported)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and _MODULE_NAME.fullmatch(n) for n in names):
        raise InvalidConfigError(
            f'{source}: `environment.import` must be a module name or an array of them (e.g. "mypkg.envs"); '
            f"got {value!r}"
        )
    return tuple(names)


def import_modules(names: tuple[str, ...], source: str = "config") -> None:
    """Import a configuration's ``environment.import`` modules (they register their environments)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise InvalidConfigError(
                f"{source}: `environment.import` = {name!r} cannot be imported ({exc}); install it or put it "
                "on the Python path"
            ) from None


def _check_environment(env_id: str, kwargs: dict, imports: tuple[str, ...], source: str) -> None:
    """The environment exists and takes ``kwargs``, checked without building it (the attention
    model, cheap to build, is built to check the values too)."""
    if env_id == "attention":
        _check_attention(kwargs, source)
        return
    if ":" in env_id:
        module, _, name = env_id.partition(":")
        raise InvalidConfigError(
            f"{source}: `environment.id` = {env_id!r} would make Gymnasium import the module {module!r}; "
            f"a configuration imports code only when it says so: write `import = {module!r}` and "
            f"`id = {name!r}` in [environment] if you trust that module"
        )
    from policyagg.envs.tabular.context import env_options  # gymnasium: only for Gymnasium configs

    import_modules(imports, source)
    try:
        allowed = env_options(env_id)
    except InvalidProblemError as exc:
        raise InvalidConfigError(
            f'{source}: `environment.id`: {exc}; use a registered id, "attention", or name the module that '
            "registers it in `environment.import`"
        ) from None
    unknown = sorted(set(kwargs) - set(allowed or kwargs))
    if unknown:
        raise InvalidConfigError(
            f"{source}: unknown key `environment.kwargs.{unknown[0]}` for {env_id!r}; its options are: "
            + ", ".join(allowed or ())
        )


def _check_attention(kwargs: dict, source: str) -> None:
    from dataclasses import fields

    from policyagg.envs.attention import AttentionModel
    from policyagg.experiments.compare import attention_options

    allowed = attention_options()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise InvalidConfigError(
            f"{source}: unknown key `environment.kwargs.{unknown[0]}` for the attention model; its options "
            f"are: {', '.join(allowed)}"
        )
    model_fields = {f.name for f in fields(AttentionModel) if f.init}
    try:
        AttentionModel(**{k: v for k, v in kwargs.items() if k in model_fields})
    except InvalidProblemError as exc:
        raise InvalidConfigError(f"{source}: `environment.kwargs`: {exc}") from None


def _known(table: dict, keys: set, prefix: str, source: str) -> None:
    unknown = sorted(set(table) - keys)
    if unknown:
        raise InvalidConfigError(
            f"{source}: unknown key `{prefix}{unknown[0]}`; the keys here are: "
            + ", ".join(f"`{prefix}{k}`" for k in sorted(keys))
        )


def _table(data: dict, key: str, source: str, required: bool) -> dict:
    value = data.get(key)
    if value is None and required:
        raise InvalidConfigError(f"{source}: the table `[{key}]` is missing")
    if not isinstance(value, dict):
        raise InvalidConfigError(f"{source}: `{key}` must be a table ([{key}])")
    return value


def _string(value, key: str, source: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidConfigError(f"{source}: `{key}` must be a non-empty string; got {value!r}")
    return value


def _positive_int(value, key: str, source: str = "config") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfigError(f"{source}: `{key}` must be a positive integer; got {value!r}")
    return value


def _seeds(value, source: str = "config") -> tuple[int, ...]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value)
    ):
        raise InvalidConfigError(f"{source}: `seeds` must be a non-empty array of non-negative integers; got {value!r}")
    if len(set(value)) != len(value):
        raise InvalidConfigError(f"{source}: `seeds` must be distinct; got {value!r}")
    return tuple(int(s) for s in value)
