"""The oracle route of an experiment configuration (issue 16): ``[solver] route = "oracle"``.

::

    [solver]
    route = "oracle"                 # "lp" (default) | "oracle"
    oracle = "q-learning"            # "exact" | "q-learning" | "sb3:PPO" (any stable-baselines3 algorithm)
    options = { steps = 150000 }     # the oracle's options (checked when the file is read)

Under the oracle route the ``[[rules]]`` name ``utilitarian``, ``egalitarian`` or
``max_quantile`` (or their ``oracle_*`` names) and take the options of
:mod:`policyagg.solvers.oracle_rules`; max-quantile uses the configuration's measure samples.
``"exact"`` and ``"q-learning"`` work on the tabular model the configuration builds;
``"sb3:<Algorithm>"`` trains on the Gymnasium environment itself through
``policyagg.envs.oracles.sb3.make_oracle`` (extra ``policyagg[rl]``).

Checkpoints: :class:`CheckpointedOracle` writes every best response (weights, policy table or
checkpoint path, training episodes) and every evaluation into ``<seed folder>/<rule>.oracle/``
as soon as it exists, atomically (JSON + NPZ, no pickle). A killed run started again replays
the rule: the same weights are asked in the same order, so each call is answered from its file
until the first one not yet made, and the result equals an uninterrupted run's.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import CorruptFileError, InvalidProblemError
from policyagg.io import atomic_write_bytes, atomic_write_json, npz_bytes
from policyagg.lottery import Lottery
from policyagg.oracle import Evaluation, ExactOracle, Oracle, OraclePolicy, check_weights
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

ROUTES = ("lp", "oracle")
TABULAR_ORACLES = ("exact", "q-learning")
#: The rules of the oracle route by the names a configuration may use.
RULE_NAMES = {
    "utilitarian": "oracle_utilitarian",
    "egalitarian": "oracle_egalitarian",
    "max_quantile": "oracle_max_quantile",
    "oracle_utilitarian": "oracle_utilitarian",
    "oracle_egalitarian": "oracle_egalitarian",
    "oracle_max_quantile": "oracle_max_quantile",
}
#: Options a configuration may not set: the data the run passes itself.
RUN_PARAMETERS = ("oracle", "samples", "pool")
RL_EXTRA = "pip install 'policyagg[rl]'"


@dataclass(frozen=True)
class SolverConfig:
    """The ``[solver]`` section: the route, the oracle's name and its options."""

    route: str = "lp"
    oracle: str = "exact"
    options: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- reading the section
def parse_solver(table: Any, source: str, error: type[InvalidProblemError]) -> SolverConfig:
    """Validate a ``[solver]`` table whole (names and values of the oracle's options)."""
    if not isinstance(table, dict):
        raise error(f"{source}: `solver` must be a table")
    unknown = sorted(set(table) - {"route", "oracle", "options"})
    if unknown:
        raise error(f"{source}: unknown key `solver.{unknown[0]}`; the keys are route, oracle, options")
    route = table.get("route", "lp")
    if route not in ROUTES:
        raise error(f"{source}: `solver.route` must be one of {', '.join(ROUTES)}; got {route!r}")
    oracle = table.get("oracle", "exact")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise error(f"{source}: `solver.options` must be a table")
    if route == "lp":
        if "oracle" in table or options:
            raise error(f'{source}: `solver.oracle` and `solver.options` apply only to route = "oracle"')
        return SolverConfig()
    if not isinstance(oracle, str) or not (oracle in TABULAR_ORACLES or oracle.startswith("sb3:")):
        raise error(f"{source}: `solver.oracle` must be 'exact', 'q-learning' or 'sb3:<Algorithm>'; got {oracle!r}")
    try:
        check_oracle_options(oracle, options)
    except InvalidProblemError as exc:
        raise error(f"{source}: `solver.options`: {exc}") from None
    return SolverConfig(route, oracle, dict(options))


def check_oracle_options(oracle: str, options: dict[str, Any]) -> None:
    """Names and values of an oracle's options, before any work starts."""
    if oracle == "exact":
        if options:
            raise InvalidProblemError(f"the exact oracle takes no options; got {', '.join(sorted(options))}")
        return
    if oracle == "q-learning":
        from policyagg.envs.oracles.qlearning import QLearningOracle, TabularSimulator
        from policyagg.mdp import TabularMDP

        _check_names(options, QLearningOracle.__init__, ("self", "simulator"), "the q-learning oracle")
        probe = Problem(TabularMDP(np.ones((1, 1, 1)), gamma=0.9), np.zeros((1, 1, 1)))  # nothing is run
        QLearningOracle(TabularSimulator(probe), **options)  # its own checks of the values
        return
    module = sb3_module()
    check = getattr(module, "check_options", None)
    if callable(check):
        check(oracle.split(":", 1)[1], options)


def check_rule_options(rule: str, options: dict[str, Any]) -> str:
    """The oracle rule a configuration's ``rule`` names, its option names checked (values are
    checked by the rule when it starts). Returns the rule's registered name."""
    from policyagg.solvers.oracle_rules import ORACLE_RULES

    if rule not in RULE_NAMES:
        raise InvalidProblemError(
            f'{rule!r} has no oracle route; under route = "oracle" choose one of {", ".join(sorted(RULE_NAMES))}'
        )
    name = RULE_NAMES[rule]
    _check_names(options, ORACLE_RULES[name], RUN_PARAMETERS, f"rule {name}")
    return name


def _check_names(options: dict[str, Any], function: Any, skip: tuple[str, ...], what: str) -> None:
    allowed = [p for p in inspect.signature(function).parameters if p not in skip]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidProblemError(f"unknown option {unknown[0]!r} of {what}; its options are: {', '.join(allowed)}")


def sb3_module() -> Any:
    """``policyagg.envs.oracles.sb3``, or an error naming the ``policyagg[rl]`` extra."""
    try:
        from policyagg.envs.oracles import sb3  # type: ignore[attr-defined]  # the h-sb3 branch's module
    except ImportError as exc:
        raise InvalidProblemError(
            f"the 'sb3:*' oracles need stable-baselines3 and the policyagg sb3 oracle ({exc}); install them with "
            f"`{RL_EXTRA}`"
        ) from None
    return sb3


# ---------------------------------------------------------------------- building the oracle
def make_oracle(solver: SolverConfig, problem: Problem | None, *, seed: int, folder: Path, env: Any = None) -> Oracle:
    """The oracle a configuration names, for one seed. ``sb3:<Algorithm>`` calls
    ``policyagg.envs.oracles.sb3.make_oracle(algorithm, env, seed=..., folder=..., **options)``."""
    options = dict(solver.options)
    if solver.oracle == "exact":
        if problem is None:
            raise InvalidProblemError("the exact oracle needs a tabular problem")
        return ExactOracle(problem)
    if solver.oracle == "q-learning":
        from policyagg.envs.oracles import QLearningOracle, TabularSimulator

        if problem is None:
            raise InvalidProblemError("the q-learning oracle of a configuration runs on its tabular model")
        options.setdefault("seed", seed)
        return QLearningOracle(TabularSimulator(problem), **options)
    module = sb3_module()
    oracle: Oracle = module.make_oracle(solver.oracle.split(":", 1)[1], env, seed=seed, folder=folder, **options)
    return oracle


# ---------------------------------------------------------------------- checkpoints
class CheckpointedOracle:
    """An oracle whose calls are written to ``folder`` as they happen and answered from it when
    a run is replayed (see the module docstring). Forwards ``problem``, ``tolerance``,
    ``occupancy`` and ``transitions`` of the inner oracle. Call ``k`` has key ``br-<k>``; the inner
    oracle's call counter is set to ``k`` before it is asked, so its seeds match an
    uninterrupted run's."""

    def __init__(self, inner: Oracle, folder: Path) -> None:
        self.inner = inner
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names: tuple[str, ...] = tuple(inner.names)
        self.problem = getattr(inner, "problem", None)
        self.tolerance = getattr(inner, "tolerance", None)
        self.calls = 0
        self.replayed = 0
        self._recorded_episodes = 0
        self._inner_episodes = 0
        if callable(getattr(inner, "occupancy", None)):  # a tabular oracle: so is this one
            self.occupancy = self._occupancy

    @property
    def episodes(self) -> int:
        return self._recorded_episodes + self._inner_episodes

    @property
    def transitions(self) -> int:
        return int(getattr(self.inner, "transitions", 0))

    def best_response(self, weights: ArrayLike) -> OraclePolicy:
        w = check_weights(weights, len(self.names))
        key = f"br-{self.calls:04d}"
        stored = self._read_policy(key, w)
        self.calls += 1
        if stored is not None:
            self.replayed += 1
            self._recorded_episodes += stored[1]
            return stored[0]
        if hasattr(self.inner, "calls"):
            self.inner.calls = self.calls - 1
        before = self.inner.episodes
        policy = self.inner.best_response(w)
        spent = int(self.inner.episodes - before)
        self._inner_episodes += spent
        policy = OraclePolicy(key=key, weights=w, table=policy.table, path=policy.path)
        arrays = {"weights": w} | ({} if policy.table is None else {"table": policy.table})
        atomic_write_bytes(self.folder / f"{key}.npz", npz_bytes(**arrays))
        atomic_write_json(self.folder / f"{key}.json", {"key": key, "path": policy.path, "training_episodes": spent})
        return policy

    def evaluate(self, policy: OraclePolicy) -> Evaluation:
        path = self.folder / f"{policy.key}.eval.json"
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                evaluation = Evaluation(
                    np.asarray(data["returns"], dtype=float),
                    np.asarray(data["standard_errors"], dtype=float),
                    int(data["episodes"]),
                )
                self._recorded_episodes += evaluation.episodes
                return evaluation
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged: evaluate again
        before = self.inner.episodes
        evaluation = self.inner.evaluate(policy)
        self._inner_episodes += int(self.inner.episodes - before)
        atomic_write_json(
            path,
            {
                "returns": np.asarray(evaluation.returns).tolist(),
                "standard_errors": np.asarray(evaluation.standard_errors).tolist(),
                "episodes": int(evaluation.episodes),
            },
        )
        return evaluation

    def _occupancy(self, policy: OraclePolicy) -> NDArray[np.float64]:
        occupancy: NDArray[np.float64] = np.asarray(self.inner.occupancy(policy), dtype=np.float64)  # type: ignore[attr-defined]
        return occupancy

    def _read_policy(self, key: str, weights: NDArray[np.float64]) -> tuple[OraclePolicy, int] | None:
        """The stored call ``key`` if it answered these exact weights, else ``None``."""
        meta_path, arrays_path = self.folder / f"{key}.json", self.folder / f"{key}.npz"
        if not (meta_path.exists() and arrays_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(arrays_path, allow_pickle=False) as data:
                stored = np.asarray(data["weights"], dtype=float)
                table = np.asarray(data["table"], dtype=float) if "table" in data else None
            episodes = int(meta["training_episodes"])
            path = meta.get("path")
        except (OSError, ValueError, KeyError, TypeError):
            return None  # damaged: ask the oracle again
        if not np.array_equal(stored, weights):
            raise CorruptFileError(
                f"{meta_path} answered other weights than this run asks: the folder holds another run's "
                "oracle calls; delete it or run with `--overwrite`"
            )
        return OraclePolicy(key=key, weights=weights, table=table, path=path), episodes


# ---------------------------------------------------------------------- running one rule
def run_oracle_rule(
    solver: SolverConfig,
    rule: str,
    options: dict[str, Any],
    problem: Problem | None,
    samples: ReturnSamples | None,
    *,
    seed: int,
    folder: Path,
    env: Any = None,
) -> Lottery:
    """One ``[[rules]]`` entry by the oracle route, its oracle calls checkpointed in ``folder``."""
    from policyagg.solvers.oracle_rules import ORACLE_RULES

    name = check_rule_options(rule, options)
    oracle = CheckpointedOracle(make_oracle(solver, problem, seed=seed, folder=folder, env=env), folder)
    arguments = dict(options)
    if name == "oracle_max_quantile":
        arguments["samples"] = samples
    lottery = ORACLE_RULES[name](oracle, **arguments)
    lottery.diagnostics["replayed_calls"] = oracle.replayed
    lottery.diagnostics["oracle_name"] = solver.oracle
    if lottery.min_rank is not None:
        lottery.report.setdefault("min_rank", lottery.min_rank)
    return lottery
