"""Many agents: 30 agents with random rewards on a small random MDP.

Compares utilitarian, egalitarian (leximin) and max-quantile on normalised returns: the
sum of normalised returns (efficiency), the smallest normalised return, the smallest rank
(the quantile reached) and the Gini index of the normalised returns (0 = all equal).
Expect utilitarian to have the largest sum and the largest Gini, egalitarian the largest
minimum normalised return, and max-quantile the largest quantile reached.

With 30 agents the PVC verifier runs as one minimum cut instead of over the ``2^n``
coalitions (``report["pvc_epsilon_method"] == "min_cut"``); the whole fairness report is computed.

Run: ``python examples/many_agents.py [--out DIR] [--agents N]`` (a few seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from policyagg import Problem, TabularMDP, sample_returns, solvers


def random_problem(n_agents: int, *, n_states: int = 10, n_actions: int = 3, seed: int = 0) -> Problem:
    """A random discounted MDP (each ``P(.|s, a)`` ~ Dirichlet(1)) and ``N(0, 1)`` rewards per agent."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    mdp = TabularMDP(P, rho=np.full(n_states, 1.0 / n_states), gamma=0.9)
    rewards = rng.normal(size=(n_agents, n_states, n_actions))
    return Problem(mdp, rewards, names=[f"agent{i:02d}" for i in range(n_agents)])


def main(out: Path, n_agents: int) -> None:
    problem = solvers.with_ranges(random_problem(n_agents))
    samples = sample_returns(problem, 5_000, measure="policy", rng=0)
    print(
        f"{n_agents} agents, {problem.mdp.n_states} states, {problem.mdp.n_actions} actions, "
        f"{samples.n_samples} sampled policies"
    )
    results = {
        "utilitarian": solvers.utilitarian(problem, samples, normalize=True),
        "egalitarian": solvers.egalitarian(problem, samples, normalize=True),
        # Utilitarian completion inside the quantile region. The default leximin completion
        # (completion="egalitarian") stops with an InfeasibleError on this problem: a numerical
        # issue of the tight region {J_i >= t_i(q*)}, reported to the maintainers.
        "max_quantile": solvers.max_quantile(problem, samples, completion="utilitarian"),
    }
    print(f"{'rule':<14} {'sum normalised':>14} {'min normalised':>14} {'min rank':>9} {'gini':>7}")
    for name, result in results.items():
        print(
            f"{name:<14} {result.normalized.sum():>14.3f} {result.normalized.min():>14.4f} "
            f"{result.min_rank:>9.4f} {result.gini:>7.4f}"
        )
        result.save(out / name)
    print(f"saved to {out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples/many-agents"))
    parser.add_argument("--agents", type=int, default=30)
    args = parser.parse_args()
    main(args.out, args.agents)
