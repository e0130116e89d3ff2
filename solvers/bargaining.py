"""Bargaining solutions over the occupancy polytope: Nash bargaining, Kalai–Smorodinsky and
egalitarian gains, each relative to a status quo (disagreement point) ``d``.

Every rule takes ``status_quo`` (``"worst"``, ``"uniform"``, ``n`` values or, in Python, a
policy of shape ``(S, A)``; :func:`policyagg.bargaining.disagreement_point`) and works in the
*bargaining set*

.. math:: B = \\{ x \\in O \\cap C : J_i(x) \\ge d_i \\ \\forall i \\}

(individual rationality, rows labelled ``individual rationality: <agent>``). The *ideal point*
is each agent's best in ``B``, ``I_i = max_{x in B} J_i(x)`` (one LP per agent). An agent with
nothing to gain, ``I_i - d_i <=`` :data:`NO_GAIN_TOL` of its return range, is held at its
status quo by ``B`` and takes no part in the bargaining (no ``log 0``, no division by zero);
the diagnostics list such agents under ``no_gain_agents``. The others' *gains* are
``g_i(x) = (J_i(x) - d_i) / (I_i - d_i)`` in ``[0, 1]`` on ``B``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from policyagg.bargaining import STATUS_QUO_NAMES, disagreement_point, individual_rationality
from policyagg.errors import GapWarning
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.solvers.baselines import max_log_welfare
from policyagg.solvers.completion import leximin
from policyagg.solvers.occupancy import make_model, occupancy_program, unit_cost
from policyagg.solvers.registry import RuleCall, flag, integer, number, per_agent, register_rule

#: An agent whose ideal gain ``I_i - d_i`` is at most this share of its return range has nothing
#: to gain (the LPs' feasibility tolerance is about 1e-7 of the range, so a smaller gain is noise).
NO_GAIN_TOL = 1e-6

STATUS_QUO = per_agent(
    "the disagreement point: worst (each agent's minimum), uniform (the uniformly random policy's "
    "returns), one value per agent, or (in Python) a policy of shape (S, A)",
    choices=STATUS_QUO_NAMES,
)


@dataclass(frozen=True)
class Bargaining:
    """A bargaining problem: the problem restricted to its bargaining set ``B`` (individual
    rationality added to its constraints), the status quo's returns ``d``, the ideal point
    ``ideal``, and the agents with something to gain (``gainers``, a boolean mask)."""

    problem: Problem
    d: np.ndarray
    ideal: np.ndarray
    gainers: np.ndarray

    @property
    def gain(self) -> np.ndarray:
        """``I_i - d_i`` (1 where an agent has nothing to gain, for dividing by)."""
        return np.where(self.gainers, self.ideal - self.d, 1.0)

    def diagnostics(self) -> dict:
        return {
            "disagreement_point": self.d.tolist(),
            "ideal_point": self.ideal.tolist(),
            "no_gain_agents": [self.problem.names[i] for i in np.flatnonzero(~self.gainers)],
        }


def bargaining(call: RuleCall, status_quo: str | Sequence[float] | np.ndarray) -> Bargaining:
    """The call's bargaining problem: the status quo's returns, individual rationality added to
    the call's problem (``call.problem`` is replaced by it, so every later LP and the result's
    Pareto check stay in ``B``), and the ideal point (one LP per agent over ``B``; the return
    ranges' tops when ``B`` is all of ``O``)."""
    problem = call.problem
    d = disagreement_point(problem, status_quo)
    problem = replace(problem, constraints=problem.constraints & individual_rationality(problem, d))
    call.problem = problem
    R = problem.reward_matrix
    ranges = problem.require_ranges()
    if len(problem.constraints):
        model = make_model(
            occupancy_program(problem, unit_cost(R[0]), name="ideal point", maximize=True),
            backend=call.backend,
            time_limit=call.time_limit,
        )
        ideal = np.empty(problem.n_agents)
        for i in range(problem.n_agents):
            model.set_cost(unit_cost(R[i]))
            ideal[i] = R[i] @ np.clip(call.log.add(model.solve()).x[: R.shape[1]], 0.0, None)
    else:  # B = O: the ideal point is every agent's best over O
        ideal = np.array(ranges.upper, dtype=float)
    gainers = (ideal - d > NO_GAIN_TOL * ranges.width) & ~ranges.flat
    return Bargaining(problem, d, np.maximum(ideal, d), gainers)


def _resolved(status_quo) -> dict:
    """The ``status_quo`` option as a result records it (a policy array is recorded as "policy";
    its returns are ``diagnostics["disagreement_point"]``)."""
    if isinstance(status_quo, str):
        return {"status_quo": status_quo}
    array = np.asarray(status_quo, dtype=float)
    return {"status_quo": "policy" if array.ndim == 2 else array.tolist()}


def _stopped_short(call: RuleCall, rule: str, max_rounds: int, gap: float, tolerance: float) -> None:
    """Make the result's status "gap" and warn: the rule did not reach its certificate."""
    call.log.statuses.append("gap")
    warnings.warn(
        f"{rule}: {max_rounds} rounds left the Nash product within {gap:.3g} (log units) of its optimum, "
        f"not {tolerance:g} (status 'gap'); raise `max_rounds` or `tolerance`",
        GapWarning,
        stacklevel=3,
    )


# ------------------------------------------------------------------ Nash bargaining
@register_rule(
    "nash_bargaining",
    options={
        "status_quo": STATUS_QUO,
        "tolerance": number(
            0.0, low_open=True, help="certify the weighted log Nash product to within this of its optimum"
        ),
        "max_rounds": integer(1, help="rounds of tangent cuts before giving up (status 'gap', a GapWarning)"),
    },
)
def nash_bargaining(
    call: RuleCall,
    *,
    status_quo: str | Sequence[float] | np.ndarray = "worst",
    tolerance: float = 1e-6,
    max_rounds: int = 50,
) -> Result:
    """The Nash bargaining solution: maximise the weighted Nash product of the gains over the status quo.

    .. math:: \\max_{x \\in O \\cap C,\\; J(x) \\ge d} \\sum_{i \\in G} w_i \\log\\big(J_i(x) - d_i\\big)

    over the agents ``G`` with something to gain (module docstring). The gains are divided by
    ``I_i - d_i`` (which shifts the objective by a constant) and the concave objective is
    maximised by the tangent cuts of :func:`~policyagg.solvers.baselines.max_log_welfare`, the
    machinery of ``nash_welfare`` (which is this rule with ``status_quo="worst"``).

    Certificate: the cut envelope bounds the optimum from above, so the result's
    ``sum_i w_i log(J_i - d_i)`` (``diagnostics["nash_log_product"]``) is within
    ``diagnostics["certified_gap"]`` ``<= tolerance`` of the optimum, whose upper bound is
    ``diagnostics["upper_bound"]`` (up to the LP solver's own tolerance, about 1e-7). If
    ``max_rounds`` rounds do not reach ``tolerance`` the last point is returned with status
    ``"gap"`` and a :class:`~policyagg.errors.GapWarning`.

    The solution is Pareto optimal, symmetric, invariant to positive affine changes of any
    agent's reward (the status quo transformed alike), and unique in returns (strict concavity).
    Diagnostics also give the ``disagreement_point``, the ``ideal_point``, ``no_gain_agents``,
    ``rounds`` and ``n_cuts``.
    """
    game = bargaining(call, status_quo)
    resolved = _resolved(status_quo)
    if not game.gainers.any():  # nobody can gain: any point of B
        d = call.maximize(np.zeros(game.problem.mdp.n_state_actions), name="Nash bargaining")
        return call.finish(d, options=resolved, **game.diagnostics(), converged=True, certified_gap=0.0)
    agents = np.flatnonzero(game.gainers)
    w = game.problem.weights[agents]
    scale = game.gain[agents]
    C = game.problem.reward_matrix[agents] / scale[:, None]
    c0 = -game.d[agents] / scale
    # a per-agent error of tolerance / sum(w) certifies the weighted product to within tolerance
    fit = max_log_welfare(call, C, c0, w, tolerance=tolerance / w.sum(), max_rounds=max_rounds, name="Nash bargaining")
    shift = float(w @ np.log(scale))  # log(J_i - d_i) = log g_i + log(I_i - d_i)
    certified = fit.bound - fit.welfare
    if not fit.converged:
        _stopped_short(call, "nash_bargaining", max_rounds, certified, tolerance)
    return call.finish(
        fit.d,
        options=resolved,
        **game.diagnostics(),
        nash_log_product=fit.welfare + shift,
        upper_bound=fit.bound + shift,
        certified_gap=max(certified, 0.0),
        converged=fit.converged,
        rounds=fit.rounds,
        n_cuts=fit.n_cuts,
    )


# ------------------------------------------------------------------ Kalai-Smorodinsky
@register_rule("kalai_smorodinsky", options={"status_quo": STATUS_QUO})
def kalai_smorodinsky(call: RuleCall, *, status_quo: str | Sequence[float] | np.ndarray = "worst") -> Result:
    """The Kalai–Smorodinsky solution: the largest equal share of every agent's ideal gain, then leximin.

    .. math:: \\max_{x \\in O \\cap C,\\; t} t \\quad\\text{s.t.}\\quad
              J_i(x) - d_i \\ge w_i\\, t\\, (I_i - d_i) \\quad \\forall i \\in G

    (one LP; with equal weights every agent gets the same share ``t`` of its ideal gain, the
    point of the segment from ``d`` to the ideal point ``I`` furthest from ``d``). That point can
    be only weakly Pareto optimal; it is lifted by continuing the same LP as a leximin of the
    shares ``g_i / w_i`` (:func:`~policyagg.solvers.completion.leximin`, the lexicographic
    Kalai–Smorodinsky solution), whose first round is the LP above. The result is Pareto
    optimal and unique in returns; every agent ``i`` keeps at least the share ``w_i t`` of its
    ideal gain (``diagnostics["ks_share"]`` is ``t``; ``diagnostics["shares"]`` each agent's share
    ``g_i`` at the result, ``None`` for agents with nothing to gain).

    Invariant to positive affine changes of any agent's reward (the status quo transformed
    alike), symmetric, and restrictedly monotone: enlarging the feasible set without changing
    the ideal point and the status quo does not lower ``t``.
    """
    game = bargaining(call, status_quo)
    d, levels = _leximin_gains(call, game, game.gain)
    level = float(np.nanmin(levels)) if game.gainers.any() else None
    shares = np.where(game.gainers, (game.problem.reward_matrix @ d - game.d) / game.gain, np.nan)
    return call.finish(d, options=_resolved(status_quo), **game.diagnostics(), ks_share=level, shares=_listed(shares))


# ------------------------------------------------------------------ egalitarian gains
@register_rule(
    "egalitarian_gains",
    options={
        "status_quo": STATUS_QUO,
        "normalize": flag(
            "measure gains in units of each agent's return range (max_O J_i - min_O J_i), not in its own units"
        ),
    },
)
def egalitarian_gains(
    call: RuleCall, *, status_quo: str | Sequence[float] | np.ndarray = "worst", normalize: bool = False
) -> Result:
    """Kalai's egalitarian solution: leximin of the gains over the status quo.

    .. math:: \\operatorname{leximin}_{x \\in O \\cap C,\\; J(x) \\ge d}
              \\Big( \\frac{J_i(x) - d_i}{w_i\\, s_i} \\Big)_{i \\in G}

    with ``s_i = 1`` (``normalize=False``, the default: gains in the agents' own reward units,
    which assumes they are comparable, as Kalai's solution does) or ``s_i = max_O J_i - min_O J_i``
    (``normalize=True``: gains in units of each agent's return range, invariant to positive
    affine changes of rewards). The first leximin round is max-min of the gains; later rounds
    make the result Pareto optimal. Agents with nothing to gain are held at their status quo.
    ``diagnostics["levels"]``: each agent's ``(J_i - d_i) / (w_i s_i)`` at the level where
    leximin fixed it (NaN for agents with nothing to gain).
    """
    game = bargaining(call, status_quo)
    ranges = game.problem.require_ranges()
    scale = np.where(ranges.flat, 1.0, ranges.width) if normalize else np.ones(game.problem.n_agents)
    d, levels = _leximin_gains(call, game, scale)
    return call.finish(d, options=_resolved(status_quo), **game.diagnostics(), levels=_listed(levels))


def _leximin_gains(call: RuleCall, game: Bargaining, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leximin of ``(J_i - d_i) / scale_i`` (entitlements ``/ w_i``) over ``B``, among the agents
    with something to gain; returns the occupancy and each agent's level (NaN for the others)."""
    problem = game.problem
    C = problem.reward_matrix / scale[:, None]
    c0 = -game.d / scale
    d, _, levels = leximin(
        problem, C, c0, active=game.gainers, backend=call.backend, time_limit=call.time_limit, log=call.log
    )
    return d, levels


def _listed(values: np.ndarray) -> list[float | None]:
    """For JSON: NaN becomes None."""
    return [None if np.isnan(v) else float(v) for v in values]
