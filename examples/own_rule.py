"""Your own rule: a plain function with the signature every rule has, built from the library's parts.

The rule here, *floored utilitarian*, maximises the sum of normalised returns among the
policies that give every agent a rank of at least ``floor`` under the reference measure:

    max_{d in O} sum_i u_i(d)   s.t.   J_i(d) >= t_i(floor) = F_i^{-1}(floor)  for all i

(``u_i`` the normalised return, ``F_i`` agent ``i``'s empirical CDF of sampled returns). The
floors are extra linear constraints on the occupancy (:func:`policyagg.return_floor`), so the
rule is one call of :func:`policyagg.solvers.utilitarian` with constraints; the result is
Pareto optimal because the floor region is upward closed in return space.

A rule is any function ``rule(problem, samples=None, *, constraints=None, backend="highs",
**options) -> Result``. This example calls it directly; to make it usable by name in
configuration files and on the command line, register it under ``RULE_NAME`` (one line, see
the end of this file).

Run: ``python examples/own_rule.py [--out DIR]`` (a few seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from policyagg import Problem, Result, ReturnSamples, TabularMDP, return_floor, sample_policy_returns, solvers
from policyagg.errors import InvalidProblemError

RULE_NAME = "floored_utilitarian"


def floored_utilitarian(problem: Problem, samples: ReturnSamples | None = None, *, floor: float = 0.5,
                        constraints=None, backend: str = "highs", time_limit: float | None = None) -> Result:
    """Max sum of normalised returns s.t. every agent's rank is at least ``floor``."""
    if samples is None:
        raise InvalidProblemError(f"rule {RULE_NAME!r} ranks policies by volume: pass `samples`")
    if not 0.0 <= floor <= 1.0:
        raise InvalidProblemError(f"`floor` must be in [0, 1]; got {floor!r}")
    thresholds = samples.check_agents(problem.n_agents).threshold(floor)  # t_i = F_i^{-1}(floor)
    floors = constraints
    for i in range(problem.n_agents):
        if np.isfinite(thresholds[i]):
            row = return_floor(problem.mdp, problem.rewards[i], float(thresholds[i]))
            floors = row if floors is None else floors & row
    return solvers.utilitarian(problem, samples, normalize=True, constraints=floors, backend=backend,
                               time_limit=time_limit)


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
        "floored utilitarian (0.6)": floored_utilitarian(problem, samples, floor=0.6),
        "max-quantile": solvers.max_quantile(problem, samples),
    }
    print(f"{'rule':<28} {'sum normalised':>14} {'min rank':>9} {'gini':>7} {'pareto':>7}")
    for label, result in results.items():
        print(f"{label:<28} {result.normalized.sum():>14.4f} {result.min_rank:>9.4f} {result.gini:>7.4f} "
              f"{result.report['pareto_optimal']!s:>7}")
        result.save(out / label.split(" (")[0].replace(" ", "-"))
    floored = results["floored utilitarian (0.6)"]
    print(f"every rank >= 0.6: {bool(floored.ranks.min() >= 0.6)}")
    print(f"saved to {out}/")


# Registration, once the rule registry is in place (sketch):
#     from policyagg.solvers.registry import register_rule
#     register_rule(RULE_NAME, floored_utilitarian)
# after which a configuration can say `[[rules]] rule = "floored_utilitarian"`.

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples/own-rule"))
    main(parser.parse_args().out)
