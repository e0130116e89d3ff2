"""The rule registry: one :class:`RuleSpec` per rule (its name, whether it needs sampled returns,
its options with their defaults and allowed values), and :func:`register_rule`, which declares
a rule and runs the steps every rule shares.

A rule is written as a plain *body* function ``body(call, *, option=default, ...) -> Result``
whose keyword-only parameters are the rule's options. :func:`register_rule` turns it into the
public rule ``rule(problem, samples=None, *, option=default, ..., constraints=None,
backend="highs", time_limit=None) -> Result``, which

1. starts the clock and checks the options against the spec (:meth:`RuleSpec.check`),
2. validates the backend, attaches return ranges and adds ``constraints``
   (:func:`~policyagg.solvers.occupancy.prepare`),
3. checks the samples if the rule needs them (:func:`~policyagg.solvers.completion.require_samples`),
4. calls the body with a :class:`RuleCall` (the prepared problem, the samples, a fresh solve
   log) and the checked options; the body ends with :meth:`RuleCall.finish`.

The same spec serves the configuration loader (:meth:`RuleSpec.validate` checks option names and
values without running anything), the tests and the command line.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import update_wrapper
from types import MappingProxyType
from typing import Any

import numpy as np

from policyagg.errors import InvalidProblemError, SolverTimeLimitError, SolverWarning
from policyagg.lottery import Lottery
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.solvers.completion import finish, require_samples
from policyagg.solvers.lottery_report import finish_lottery
from policyagg.solvers.lp import BACKENDS, LPSolution
from policyagg.solvers.occupancy import (
    SolveLog,
    call_pool,
    decomposition,
    make_model,
    occupancy_program,
    prepare,
    unit_cost,
)

#: What a rule returns: one policy (:class:`Result`) or a lottery over policies (:class:`Lottery`).
Outcome = Result | Lottery
#: A public rule: ``rule(problem, samples=None, **options) -> Result`` (or ``-> Lottery``).
Rule = Callable[..., Outcome]
#: Option kinds a spec knows how to check.
KINDS = ("bool", "int", "number", "choice", "per_agent", "constraints", "any")
#: Parameters of every public rule's signature that are not options.
DATA_PARAMETERS = ("problem", "samples")


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class OptionSpec:
    """One option of a rule: its kind, default, allowed values and a one-line help.

    ``kind``: ``"bool"``; ``"int"`` or ``"number"`` (finite, within ``[low, high]``, an end open
    where ``low_open`` / ``high_open``); ``"choice"`` (one of ``choices``); ``"per_agent"`` (a
    sequence with one entry per agent, checked against the problem by the rule itself);
    ``"constraints"`` (a :class:`~policyagg.polytope.LinearConstraints`); ``"any"``. ``None``
    is accepted exactly when the default is ``None``. Build one with :func:`flag`,
    :func:`integer`, :func:`number`, :func:`choice` or :func:`per_agent`; ``name`` and
    ``default`` are filled in from the rule's signature.
    """

    kind: str
    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    name: str = ""
    default: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidProblemError(f"option kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise InvalidProblemError("a `choice` option needs its `choices`")

    @property
    def allowed(self) -> str:
        """What a value must be, in words: ``"a number in [0, 1]"``, ``"one of lp, milp"``."""
        if self.kind in ("int", "number"):
            return _interval("an integer" if self.kind == "int" else "a number", self)
        if self.kind == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices or ())
        return {
            "bool": "True or False",
            "per_agent": "None or a sequence with one entry per agent",
            "constraints": "None or LinearConstraints",
            "any": "any value",
        }[self.kind]

    def check(self, value: Any) -> Any:
        """``value`` in canonical form (``bool`` / ``int`` / ``float``) if allowed, else an
        :class:`InvalidProblemError` naming the option and what it must be."""
        if value is None and self.default is None and self.kind != "choice":
            return None
        if self.kind == "bool" and isinstance(value, (bool, np.bool_)):
            return bool(value)
        if self.kind == "choice" and _is_choice(value, self.choices or ()):
            return value
        if self.kind in ("int", "number") and _in_range(value, self):
            return int(value) if self.kind == "int" else float(value)
        if self.kind == "per_agent" and isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes):
            return value
        if self.kind == "constraints" and isinstance(value, LinearConstraints):
            return value
        if self.kind == "any":
            return value
        raise InvalidProblemError(f"`{self.name}` must be {self.allowed}; got {value!r}")


def flag(help: str = "") -> OptionSpec:
    """A ``True`` / ``False`` option."""
    return OptionSpec("bool", help)


def integer(low: int | None = None, high: int | None = None, *, help: str = "") -> OptionSpec:
    """An integer option in ``[low, high]`` (bools refused)."""
    return OptionSpec("int", help, low=low, high=high)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    help: str = "",
) -> OptionSpec:
    """A finite real option in ``[low, high]``, an end excluded with ``low_open`` / ``high_open``."""
    return OptionSpec("number", help, low=low, high=high, low_open=low_open, high_open=high_open)


def choice(choices: Sequence[Any], *, help: str = "") -> OptionSpec:
    """An option that takes one of ``choices`` (``None`` among them if it may be unset)."""
    return OptionSpec("choice", help, choices=tuple(choices))


def per_agent(help: str = "") -> OptionSpec:
    """``None`` or a sequence with one entry per agent (the rule checks it against the problem)."""
    return OptionSpec("per_agent", help)


def _interval(what: str, spec: OptionSpec) -> str:
    low, high = spec.low, spec.high
    if low is None and high is None:
        return what
    if high is None:
        if low == 0 and spec.low_open:
            return f"a positive {what.split()[-1]}"
        if low == 1 and spec.kind == "int":
            return "a positive integer"
        return f"{what} {'>' if spec.low_open else '>='} {low:g}"
    if low is None:
        return f"{what} {'<' if spec.high_open else '<='} {high:g}"
    return f"{what} in {'(' if spec.low_open else '['}{low:g}, {high:g}{')' if spec.high_open else ']'}"


def _in_range(value: Any, spec: OptionSpec) -> bool:
    types = (int, np.integer) if spec.kind == "int" else (int, float, np.integer, np.floating)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, types) or not math.isfinite(value):
        return False
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        return False
    return spec.high is None or bool(value < spec.high if spec.high_open else value <= spec.high)


def _is_choice(value: Any, choices: tuple[Any, ...]) -> bool:
    """``value`` is one of ``choices``; ``==`` alone would let ``True`` match the choice ``1``,
    so the types must agree too (any ``str`` matches a ``str``)."""

    def same(c: Any) -> bool:
        comparable = type(value) is type(c) or (isinstance(value, str) and isinstance(c, str))
        return value is c or (comparable and bool(value == c))

    return any(same(c) for c in choices)


def _inferred(default: Any) -> OptionSpec:
    """The spec of an option declared only by its default: its kind follows the default's type."""
    if isinstance(default, bool):
        return flag()
    if isinstance(default, int):
        return integer()
    if isinstance(default, float):
        return number()
    return OptionSpec("any")


#: The options every rule takes besides its own (checked at call time by the LP layer).
COMMON_OPTIONS: Mapping[str, OptionSpec] = MappingProxyType(
    {
        "constraints": OptionSpec(
            "constraints", "extra linear constraints on the occupancy measure", name="constraints"
        ),
        "backend": dataclasses.replace(choice(BACKENDS, help="the LP/MILP backend"), name="backend", default="highs"),
        "time_limit": dataclasses.replace(
            number(0, low_open=True, help="seconds per LP/MILP solve (None: no limit)"), name="time_limit"
        ),
    }
)


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class RuleSpec:
    """A registered rule: ``name``, the public ``function``, whether it ``needs_samples``, its
    own ``options`` (name -> :class:`OptionSpec`, in signature order; every rule also takes
    :data:`COMMON_OPTIONS`), a one-line ``summary`` (the first paragraph of its docstring)
    and the ``body`` the function wraps."""

    name: str
    function: Rule
    needs_samples: bool
    options: Mapping[str, OptionSpec]
    summary: str
    body: Callable[..., Outcome] = field(repr=False)

    @property
    def option_names(self) -> tuple[str, ...]:
        """Every option name a call accepts: the rule's own, then the common ones."""
        return (*self.options, *COMMON_OPTIONS)

    @property
    def defaults(self) -> dict[str, Any]:
        """The rule's own options at their defaults."""
        return {name: option.default for name, option in self.options.items()}

    def check(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The rule's own options, defaults filled in and values in canonical form; an unknown
        name or a bad value raises :class:`InvalidProblemError` naming the option."""
        self._refuse_unknown(options, self.options)
        return {name: option.check(options.get(name, option.default)) for name, option in self.options.items()}

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check option names and values without running the rule (the common options
        included): the given options in canonical form, or an :class:`InvalidProblemError`
        naming the rule, the option and what it must be (an unknown name: the valid ones)."""
        allowed = {**self.options, **COMMON_OPTIONS}
        self._refuse_unknown(options, allowed)
        checked = {}
        for name, value in options.items():
            try:
                checked[name] = allowed[name].check(value)
            except InvalidProblemError as exc:
                why = f" (`{name}`: {allowed[name].help})" if allowed[name].help else ""
                raise InvalidProblemError(f"rule {self.name!r}: {exc}{why}") from None
        return checked

    def _refuse_unknown(self, options: Mapping[str, Any], allowed: Mapping[str, OptionSpec]) -> None:
        unknown = [name for name in options if name not in allowed]
        if unknown:
            raise InvalidProblemError(
                f"rule {self.name!r} has no option `{unknown[0]}`; its options are: "
                + ", ".join(f"`{name}`" for name in self.option_names)
            )


@dataclass
class RuleCall:
    """What the shared steps hand a rule's body: the prepared ``problem`` (return ranges
    attached, the call's constraints added), the ``samples`` (checked against the problem if
    the rule needs them), the checked ``options``, the ``backend`` and ``time_limit``, and a
    fresh solve ``log``."""

    spec: RuleSpec
    problem: Problem
    samples: ReturnSamples | None
    options: dict[str, Any]
    backend: str
    time_limit: float | None
    log: SolveLog
    started: float

    def require_samples(self) -> ReturnSamples:
        """The call's samples, for the body of a rule registered with ``needs_samples=True`` (the
        registry has checked them already); :class:`InvalidSamplesError` if the call has none."""
        return require_samples(self.samples, self.problem, self.spec.name)

    def solve(self, program: Any, *, incumbent: bool = False, **solver_options: Any) -> LPSolution:
        """Solve an LP/MILP (an occupancy program) with the call's backend and time limit,
        recorded in the log. ``incumbent=True``: a MIP stopped by the time limit with a feasible
        point returns that point (status ``"time-limit"``, which becomes the result's status,
        and a :class:`~policyagg.errors.SolverWarning`) instead of raising."""
        model = make_model(program, backend=self.backend, time_limit=self.time_limit, **solver_options)
        try:
            return self.log.add(model.solve())
        except SolverTimeLimitError as exc:
            if not incumbent or not isinstance(exc.solution, LPSolution):
                raise
            gap = exc.solution.mip_gap
            warnings.warn(
                f"{self.spec.name}: {program.name!r} stopped at time_limit={self.time_limit} s; the result is its "
                f"best point (MIP gap {gap if gap is not None else 'unknown'}), status 'time-limit'",
                SolverWarning,
                stacklevel=3,
            )
            return self.log.add(exc.solution)

    def maximize(self, cost: np.ndarray, *, name: str | None = None) -> np.ndarray:
        """A maximiser ``d`` of ``cost @ d`` over the occupancy polytope and the problem's
        constraints (one LP named ``name``, default the rule's)."""
        program = occupancy_program(self.problem, unit_cost(cost), name=name or self.spec.name, maximize=True)
        d: np.ndarray = self.solve(program).x
        return d

    def finish(
        self, d: np.ndarray, *, options: Mapping[str, Any] | None = None, lift: bool = True, **diagnostics: Any
    ) -> Result:
        """The rule's :class:`Result` for occupancy ``d``
        (:func:`~policyagg.solvers.completion.finish`: Pareto check and lift, fairness report).

        ``Result.options`` are the checked options, with ``options`` replacing some of them by
        the values the rule resolved (e.g. a default ``None`` made concrete); ``diagnostics``
        are added to the solver's."""
        result: Result = finish(
            self.problem,
            d,
            rule=self.spec.name,
            samples=self.samples,
            options=self.options | dict(options or {}),
            log=self.log,
            started=self.started,
            time_limit=self.time_limit,
            lift=lift,
            **diagnostics,
        )
        return result

    def finish_lottery(
        self,
        occupancies: np.ndarray,
        probabilities: np.ndarray,
        *,
        options: Mapping[str, Any] | None = None,
        **diagnostics: Any,
    ) -> Lottery:
        """The rule's :class:`~policyagg.lottery.Lottery` over the occupancies ``(k, S*A)`` drawn
        with ``probabilities`` ``(k,)``, with the problem's ranges and the call's samples, and both
        fairness reports (:func:`~policyagg.solvers.lottery_report.finish_lottery`: ex ante as
        :meth:`finish` reports a result, ex post in ``report["ex_post"]``). ``options`` and
        ``diagnostics`` as for :meth:`finish`; no Pareto lift (a lottery is what it draws)."""
        return finish_lottery(
            self.problem,
            occupancies,
            probabilities,
            rule=self.spec.name,
            samples=self.samples,
            options=self.options | dict(options or {}),
            log=self.log,
            started=self.started,
            time_limit=self.time_limit,
            **diagnostics,
        )


# --------------------------------------------------------------------------- registry
#: Every registered rule by name (the public functions), in registration order.
RULES: dict[str, Rule] = {}
#: Every registered rule's :class:`RuleSpec` by name.
RULE_SPECS: dict[str, RuleSpec] = {}


def register_rule(
    name: str, *, needs_samples: bool = False, options: Mapping[str, OptionSpec] | None = None, replace: bool = False
) -> Callable[[Callable[..., Outcome]], Rule]:
    """Declare a rule: register ``name`` and wrap the body in the steps every rule shares.

    The decorated *body* is ``body(call: RuleCall, *, option=default, ...) -> Result``; its
    keyword-only parameters are the rule's options, their defaults the signature's.
    ``options`` gives the kind and the allowed values of some of them (:func:`flag`,
    :func:`integer`, :func:`number`, :func:`choice`, :func:`per_agent`); the others get
    their kind from their default (bool, int, float; anything else is not checked). The
    decorator returns the public rule ``rule(problem, samples=None, *, option=default, ...,
    constraints=None, backend="highs", time_limit=None) -> Result`` (module docstring: what
    it does before the body). ``needs_samples``: the rule ranks policies by volume, so a
    call without ``samples`` is an error. Registering a taken ``name`` is an error unless
    ``replace=True``; :func:`unregister_rule` removes a rule.

    Example: a dictator rule (agent ``agent``'s best policy, lifted to a Pareto-optimal one
    by :meth:`RuleCall.finish`), used by name like every rule:

    >>> import numpy as np
    >>> from policyagg.mdp import TabularMDP
    >>> from policyagg.problem import Problem
    >>> from policyagg import solvers
    >>> from policyagg.errors import InvalidProblemError
    >>> @solvers.register_rule("dictator", options={"agent": solvers.integer(0, help="who dictates")})
    ... def dictator(call, *, agent: int = 0):
    ...     '''Maximise one agent's return.'''
    ...     return call.finish(call.maximize(call.problem.reward_matrix[agent]), chosen=agent)
    >>> problem = Problem(TabularMDP(np.ones((1, 2, 1)), gamma=0.9), np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
    >>> result = solvers.get_rule("dictator")(problem, agent=1)
    >>> result.returns.round(6).tolist(), result.options
    ([0.0, 1.0], {'agent': 1, 'backend': 'highs'})
    >>> try:
    ...     solvers.get_spec("dictator").validate({"agnet": 1})  # checks names and values, runs nothing
    ... except InvalidProblemError as exc:
    ...     print(exc)
    rule 'dictator' has no option `agnet`; its options are: `agent`, `constraints`, `backend`, `time_limit`
    >>> _ = solvers.unregister_rule("dictator")
    """
    if not isinstance(name, str) or not name:
        raise InvalidProblemError(f"a rule's `name` must be a non-empty string; got {name!r}")
    if name in RULES and not replace:
        raise InvalidProblemError(
            f"a rule named {name!r} is registered already; pass `replace=True` to replace it or choose another name"
        )

    def decorate(body: Callable[..., Outcome]) -> Rule:
        spec = _make_spec(name, body, needs_samples, dict(options or {}))
        RULES[name] = spec.function
        RULE_SPECS[name] = spec
        return spec.function

    return decorate


def unregister_rule(name: str) -> RuleSpec:
    """Remove the rule ``name`` from the registry; return its spec."""
    get_spec(name)
    del RULES[name]
    return RULE_SPECS.pop(name)


@contextmanager
def registered_rule(name: str, body: Callable[..., Outcome], **declaration: Any) -> Iterator[Rule]:
    """Register ``body`` as ``name`` (``declaration``: as for :func:`register_rule`) for the
    ``with`` block only; afterwards the registry is as it was (a replaced rule comes back)."""
    saved_rules, saved_specs = dict(RULES), dict(RULE_SPECS)
    try:
        yield register_rule(name, **declaration)(body)
    finally:
        RULES.clear()
        RULES.update(saved_rules)
        RULE_SPECS.clear()
        RULE_SPECS.update(saved_specs)


def get_spec(name: str) -> RuleSpec:
    """The :class:`RuleSpec` registered as ``name``; an unknown name lists the valid ones."""
    try:
        return RULE_SPECS[name]
    except (KeyError, TypeError):
        raise InvalidProblemError(f"unknown rule {name!r}; choose one of: {', '.join(sorted(RULES))}") from None


def get_rule(name: str) -> Rule:
    """The rule registered as ``name``; an unknown name lists the valid ones."""
    return get_spec(name).function


def _make_spec(
    name: str, body: Callable[..., Outcome], needs_samples: bool, declared: dict[str, OptionSpec]
) -> RuleSpec:
    """The spec of ``body``: its keyword-only parameters are the options, declared or inferred."""
    parameters = list(inspect.signature(body).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise InvalidProblemError(
            f"rule {name!r}: the body's first parameter must be the call context "
            "(`def body(call, *, option=default, ...)`)"
        )
    options: dict[str, OptionSpec] = {}
    for p in parameters[1:]:
        if p.kind != inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise InvalidProblemError(
                f"rule {name!r}: option `{p.name}` must be keyword-only with a default "
                "(`def body(call, *, option=default, ...)`)"
            )
        if p.name in COMMON_OPTIONS or p.name in DATA_PARAMETERS:
            raise InvalidProblemError(f"rule {name!r}: `{p.name}` is a parameter of every rule; rename the option")
        option = declared.pop(p.name, None) or _inferred(p.default)
        options[p.name] = dataclasses.replace(option, name=p.name, default=p.default)
    if declared:
        raise InvalidProblemError(
            f"rule {name!r}: declared option `{next(iter(declared))}` is not a keyword-only parameter of the body"
        )
    for option in options.values():
        option.check(option.default)  # a default outside its own range is a declaration error
    doc = inspect.getdoc(body) or ""
    summary = doc.strip().split("\n\n")[0].replace("\n", " ") if doc else name

    def rule(
        problem: Problem,
        samples: ReturnSamples | None = None,
        *,
        constraints: LinearConstraints | None = None,
        backend: str = "highs",
        time_limit: float | None = None,
        **given: Any,
    ) -> Outcome:
        started = time.perf_counter()
        if not isinstance(problem, Problem):
            raise InvalidProblemError(
                f"`problem` must be a Problem (Problem(mdp, rewards)); got {type(problem).__name__}"
            )
        checked = spec.check(given)
        constraints = COMMON_OPTIONS["constraints"].check(constraints)
        time_limit = COMMON_OPTIONS["time_limit"].check(time_limit)
        # one column pool per call: every LP of the rule starts from the columns of the ones before
        with decomposition(pool=call_pool(problem.mdp)):
            problem = prepare(problem, constraints, backend)
            if spec.needs_samples:
                samples = require_samples(samples, problem, spec.name)
            call = RuleCall(spec, problem, samples, checked, backend, time_limit, SolveLog(backend), started)
            return body(call, **checked)

    update_wrapper(rule, body)
    del rule.__wrapped__  # type: ignore[attr-defined]  # the public signature is below, not the body's
    returns = inspect.signature(body).return_annotation
    rule.__signature__ = _public_signature(  # type: ignore[attr-defined]
        parameters[1:], "Result" if returns is inspect.Signature.empty else returns
    )
    spec = RuleSpec(name, rule, bool(needs_samples), MappingProxyType(options), summary, body)
    return spec


def _public_signature(options: list[inspect.Parameter], returns: Any = "Result") -> inspect.Signature:
    """``(problem, samples=None, *, <options>, constraints=None, backend="highs", time_limit=None) -> returns``
    (the body's return annotation: ``Result``, ``Lottery`` or both)."""
    P = inspect.Parameter
    return inspect.Signature(
        [
            P("problem", P.POSITIONAL_OR_KEYWORD, annotation="Problem"),
            P("samples", P.POSITIONAL_OR_KEYWORD, default=None, annotation="ReturnSamples | None"),
            *options,
            P("constraints", P.KEYWORD_ONLY, default=None, annotation="LinearConstraints | None"),
            P("backend", P.KEYWORD_ONLY, default="highs", annotation="str"),
            P("time_limit", P.KEYWORD_ONLY, default=None, annotation="float | None"),
        ],
        return_annotation=returns,
    )
