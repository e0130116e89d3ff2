"""Your own rule: a plain function with the signature every rule has, built from the library's parts.

The rule here, *floored utilitarian*, maximises the sum of normalised returns among the
policies that give every agent a rank of at least ``floor`` under the reference measure:

    max_{d in O} sum_i u_i(d)   s.t.   J_i(d) >= t_i(floor) = F_i^{-1}(floor)  for all i

(``u_i`` the normalised return, ``F_i`` agent ``i``'s empirical CDF of sampled returns). The
floors are extra linear constraints on the occupancy (:func:`policyagg.return_floor`), so the
rule is one call of :func:`policyagg.solvers.utilitarian` with constraints; the result is
Pareto optimal because the floor region is upward closed in return space.

A rule is a *body* ``body(call, *, option=default, ...) -> Result`` declared with
:func:`policyagg.solvers.register_rule`: the registry checks the options, attaches return ranges,
adds the caller's constraints and checks the samples before the body runs, and the rule is then
usable by name everywhere, ``solvers.get_rule(RULE_NAME)``, a configuration's
``[[rules]] rule = "floored_utilitarian"`` and the command line.

Run: ``python examples/own_rule.py [--out DIR]`` (a few seconds).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from policyagg import Problem, Result, TabularMDP, return_floor, sample_policy_returns, solvers
from policyagg.solvers.occupancy import occupancy_program, utilities
from policyagg.solvers.registry import RuleCall

RULE_NAME = "floored_utilitarian"


@solvers.register_rule(
    RULE_NAME,
    needs_samples=True,
    options={"floor": solvers.number(0.0, 1.0, help="the rank every agent is guaranteed")},
)
def floored_utilitarian(call: RuleCall, *, floor: float = 0.5) -> Result:
    """Max sum of normalised returns s.t. every agent's rank is at least ``floor``."""
    problem = call.problem
    assert call.samples is not None  # needs_samples=True: the registry has checked them
    thresholds = call.samples.threshold(floor)  # t_i = F_i^{-1}(floor)
    floors = problem.constraints
    for i in range(problem.n_agents):
        if np.isfinite(thresholds[i]):
            row = return_floor(problem.mdp, problem.rewards[i], float(thresholds[i]))
            floors = row if floors is None else floors & row
    C, _ = utilities(problem, True)  # normalised returns u = C d
    program = occupancy_program(replace(problem, constraints=floors), C.sum(axis=0), name=RULE_NAME, maximize=True)
    return call.finish(call.solve(program).x)


def random_problem(n_states: int, n_actions: int, n_agents: int, seed: int) -> Problem:
    """A random discounted MDP with Gaussian rewards, one row of ``rewards`` per agent."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    mdp = TabularMDP(P, rho=np.full(n_states, 1.0 / n_states), gamma=0.9)
    return Problem(mdp, rng.normal(size=(n_agents, n_states, n_actions)))


def main(out: Path) -> None:
    problem = solvers.with_ranges(random_problem(n_states=6, n_actions=3, n_agents=4, seed=0))
    samples = sample_policy_returns(problem, 4_000, rng=0)
    results = {
        "utilitarian": solvers.utilitarian(problem, samples, normalize=True),
        "floored utilitarian (0.6)": solvers.get_rule(RULE_NAME)(problem, samples, floor=0.6),
        "max-quantile": solvers.max_quantile(problem, samples),
    }
    print(f"{'rule':<28} {'sum normalised':>14} {'min rank':>9} {'gini':>7} {'pareto':>7}")
    for label, result in results.items():
        print(
            f"{label:<28} {result.normalized.sum():>14.4f} {result.min_rank:>9.4f} {result.gini:>7.4f} "
            f"{result.report['pareto_optimal']!s:>7}"
        )
        result.save(out / label.split(" (")[0].replace(" ", "-"))
    floored = results["floored utilitarian (0.6)"]
    print(f"every rank >= 0.6: {bool(floored.ranks.min() >= 0.6)}")
    print(f"saved to {out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples/own-rule"))
    main(parser.parse_args().out)
