"""A fair lottery without a model: egalitarian aggregation through a deep-RL oracle (PPO).

``policyagg/GoalsOnALine-v0`` has a continuous observation (a position on ``[-1, 1]``) and one
reward per agent: three agents want the walker near their own goal (-0.8, 0.2 and 0.8). Nothing
is tabulated: every policy is trained by stable-baselines3's PPO on a weighted sum of the
rewards (:class:`policyagg.envs.oracles.sb3.SB3Oracle`), and the rules over oracles mix the
trained policies into lotteries (one policy drawn per episode):

* utilitarian: the single best response to equal weights;
* egalitarian: max-min of normalised returns over lotteries, by column generation with PPO
  as the pricing oracle.

Both lotteries are then executed in fresh episodes (seeds the oracle never evaluated on) and
each agent's per-step return is shown with a 95% confidence interval, raw and normalised by
the agent's range ``[J_i(BR(-e_i)), J_i(BR(e_i))]``.

Needs the extra ``policyagg[rl]``. Run: ``python examples/deep_rl_oracle.py [--out DIR]``
(8 PPO trainings of 5000 steps: about 2 CPU-minutes; checkpoints in ``DIR/checkpoints`` make
a second run, or a killed one, resume without retraining and print the same numbers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import policyagg.envs  # noqa: F401  (registers the environment)
from policyagg.envs.oracles.sb3 import SB3Oracle, lottery_policies, rollout_lottery
from policyagg.solvers.oracle_rules import PolicyPool, oracle_egalitarian, oracle_ranges, oracle_utilitarian

ENV_ID = "policyagg/GoalsOnALine-v0"
#: Small, fast PPO settings that learn this environment in a few thousand steps.
PPO_OPTIONS = {
    "n_steps": 256,
    "batch_size": 64,
    "n_epochs": 4,
    "learning_rate": 1e-3,
    "policy_kwargs": {"net_arch": [32, 32]},
}
Z95 = 1.959964


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples/deep-rl-oracle"))
    parser.add_argument("--timesteps", type=int, default=5000, help="PPO steps per best response")
    parser.add_argument("--max-calls", type=int, default=6, help="egalitarian's column-generation calls")
    parser.add_argument("--eval-episodes", type=int, default=200, help="episodes per policy evaluation")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes executing each lottery")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # same seed, same numbers

    oracle = SB3Oracle(
        ENV_ID,
        algorithm="PPO",
        timesteps=args.timesteps,
        seed=args.seed,
        gamma=0.9,
        eval_episodes=args.eval_episodes,
        folder=args.out / "checkpoints",
        algorithm_options=PPO_OPTIONS,
        progress=True,
    )
    fair = oracle_egalitarian(oracle, max_calls=args.max_calls, gap_tol=0.01)
    utilitarian = oracle_utilitarian(oracle)
    ranges, _, _ = oracle_ranges(PolicyPool(oracle))  # the same calls again: loaded, not retrained
    width = np.where(ranges.flat, 1.0, ranges.width)

    print(f"oracle: PPO, {args.timesteps} steps per best response, gamma 0.9, {args.eval_episodes} evaluation episodes")
    print(
        f"trained {oracle.trained} policies ({oracle.training_episodes} training episodes), {oracle.calls} oracle calls"
    )
    for name, lottery in (("egalitarian", fair), ("utilitarian", utilitarian)):
        lottery.save(args.out / name)
        print(f"\n{name}: lottery over {lottery.size} policies, p = {np.round(lottery.probabilities, 3).tolist()}")
        print(f"  status {lottery.status}, certified gap {lottery.report.get('certified_gap')}")
        executed = rollout_lottery(
            oracle, lottery_policies(oracle, lottery), lottery.probabilities, episodes=args.episodes, seed=10**7
        )
        print(f"  executed in {args.episodes} fresh episodes (95% confidence intervals):")
        print(f"  {'agent':>10} {'return':>16} {'normalised':>18}")
        for i, agent in enumerate(oracle.names):
            J, half = executed.returns[i], Z95 * executed.standard_errors[i]
            u, u_half = (J - ranges.lower[i]) / width[i], half / width[i]
            print(f"  {agent:>10} {J:>8.3f} +- {half:.3f} {u:>10.3f} +- {u_half:.3f}")
        normalised = (executed.returns - ranges.lower) / width
        print(f"  {'min':>10} {'':>16} {normalised.min():>10.3f}")


if __name__ == "__main__":
    main()
