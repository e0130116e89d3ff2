"""``policyagg bench oracle``: the oracle route against the exact LP route (issue 16).

On the attention model (one agent per site), for each number of sites: the egalitarian and
max-quantile rules by the LP route (:func:`policyagg.solvers.egalitarian`,
:func:`policyagg.solvers.max_quantile`, after :func:`policyagg.solvers.with_ranges`) and by
the oracle route (:mod:`policyagg.solvers.oracle_rules` over :class:`~policyagg.oracle.ExactOracle`,
and optionally the Q-learning oracle), all in one run: wall time, oracle calls, evaluation
episodes, and the answers (min normalised return, q*) so that speed is never bought with accuracy
unnoticed. Ratios are oracle / LP of the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.envs.oracles import QLearningOracle, TabularSimulator
from policyagg.lottery import Lottery
from policyagg.measures import sample_returns
from policyagg.oracle import ExactOracle
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.solvers import egalitarian, max_quantile, with_ranges
from policyagg.solvers.oracle_rules import oracle_egalitarian, oracle_max_quantile

COLUMNS = (
    "sites",
    "states",
    "rule",
    "route",
    "seconds",
    "ratio",
    "oracle_calls",
    "episodes",
    "min_normalized",
    "q_star",
    "status",
)


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = run()
    return out, time.perf_counter() - started


def _row(
    sites: int, problem: Problem, rule: str, route: str, outcome: Result | Lottery, seconds: float
) -> dict[str, Any]:
    diagnostics = outcome.diagnostics
    q = outcome.min_rank
    return {
        "sites": sites,
        "states": problem.mdp.n_states,
        "rule": rule,
        "route": route,
        "seconds": seconds,
        "oracle_calls": diagnostics.get("oracle_calls", 0),
        "episodes": diagnostics.get("evaluation_episodes", 0),
        "min_normalized": float(outcome.normalized.min()),
        "q_star": None if q is None else float(q),
        "status": outcome.status,
    }


def bench_oracle(
    *,
    sites: Sequence[int] = (5, 6, 7),
    n_samples: int = 500,
    seed: int = 0,
    q_learning: bool = False,
    q_steps: int = 150_000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rows of :data:`COLUMNS`, one per (sites, rule, route); the LP route's time includes its
    return ranges (``2n`` LPs), the oracle route's its ``2n`` range calls."""
    rows: list[dict[str, Any]] = []
    for k in sites:
        model = AttentionModel(n_sites=k, seed=seed)
        problem = Problem(model.mdp(), model.rewards(one_agent_per_site(k, np.random.default_rng(seed))))
        ranged, range_seconds = _timed(lambda: with_ranges(problem))  # noqa: B023 (called at once)
        samples = sample_returns(ranged, n_samples, measure="optimal-mixture", rng=seed)
        routes: list[tuple[str, Problem, Callable[[], Any], Callable[[], Any]]] = [
            (
                "lp",
                ranged,
                lambda: egalitarian(ranged, normalize=True),  # noqa: B023
                lambda: max_quantile(ranged, samples),  # noqa: B023
            ),
            (
                "oracle-exact",
                problem,
                lambda: oracle_egalitarian(ExactOracle(problem)),  # noqa: B023
                lambda: oracle_max_quantile(ExactOracle(problem), samples),  # noqa: B023
            ),
        ]
        if q_learning:
            discounted = Problem(model.mdp(gamma=0.9), problem.rewards)
            routes.append(_q_learning_route(discounted, q_steps, n_samples, seed))
        baseline: dict[str, float] = {}
        for route, instance, run_egalitarian, run_quantile in routes:
            for rule, run in (("egalitarian", run_egalitarian), ("max_quantile", run_quantile)):
                outcome, seconds = _timed(run)
                if route == "lp":
                    seconds += range_seconds
                    baseline[rule] = seconds
                row = _row(k, instance, rule, route, outcome, seconds)
                row["ratio"] = seconds / baseline[rule]
                rows.append(row)
                if progress is not None:
                    progress(format_row(row))
    return {"rows": rows, "markdown": format_oracle(rows), "n_samples": n_samples, "seed": seed}


def _q_learning_route(
    problem: Problem, steps: int, n_samples: int, seed: int
) -> tuple[str, Problem, Callable[[], Lottery], Callable[[], Lottery]]:
    """The Q-learning oracle on ``problem`` (discounted): egalitarian and max-quantile, each from a fresh oracle."""

    def oracle() -> QLearningOracle:
        return QLearningOracle(TabularSimulator(problem), steps=steps, eval_episodes=1000, seed=seed)

    def run_egalitarian() -> Lottery:
        return oracle_egalitarian(oracle(), gap_tol=0.01)

    def run_quantile() -> Lottery:
        return oracle_max_quantile(oracle(), n_samples=n_samples, seed=seed, gap_tol=0.01, max_calls=20)

    return "oracle-q-learning (gamma 0.9)", problem, run_egalitarian, run_quantile


def format_row(row: dict[str, Any]) -> str:
    q = "-" if row["q_star"] is None else f"{row['q_star']:.3f}"
    return (
        f"| {row['sites']} | {row['states']} | {row['rule']} | {row['route']} | {row['seconds']:.2f} | "
        f"{row['ratio']:.2f} | {row['oracle_calls']} | {row['episodes']} | {row['min_normalized']:.4f} | {q} | "
        f"{row['status']} |"
    )


def format_oracle(rows: list[dict[str, Any]]) -> str:
    """A Markdown table; ``ratio`` is the route's seconds over the LP route's for the same rule."""
    head = (
        "| sites | states | rule | route | seconds | ratio | oracle calls | episodes | min normalised | q* | status |"
    )
    rule = "|" + "---|" * 11
    return "\n".join([head, rule, *(format_row(row) for row in rows)])
