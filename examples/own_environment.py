"""Your own Gymnasium environment, end to end: model it, aggregate two agents, roll the policy out.

A cleaning robot patrols a ring of five rooms. Each step it either stays or moves one room
clockwise; a move fails (the robot stays) 20% of the time. Two people use the house: the
reward is a vector with one entry per person (MO-Gymnasium style), paid while the robot is in
their room: Ann works in room 0, Bo in rooms 2 and 3 (but each of his rooms pays only half).

Steps: ``from_gymnasium`` turns the environment into an exact tabular model (here by
enumerating the states through snapshots of the environment, since it has no model of its
own), a rule picks one collective policy, and a rollout in the real environment checks the
LP's predicted returns.

Run: ``python examples/own_environment.py [--out DIR]`` (a few seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

from policyagg import sample_policy_returns, solvers
from policyagg.envs.rollout import rollout
from policyagg.envs.tabular import from_gymnasium

ROOMS = 5
SLIP = 0.2
PAY = np.array(
    [
        [1.0, 0.0, 0.0, 0.0, 0.0],  # Ann: room 0
        [0.0, 0.0, 0.5, 0.5, 0.0],
    ]
)  # Bo: rooms 2 and 3, half each


class CleaningRobot(gym.Env):
    """A robot on a ring of rooms; action 0 stays, action 1 moves clockwise (fails with prob. SLIP)."""

    observation_space = gym.spaces.Discrete(ROOMS)
    action_space = gym.spaces.Discrete(2)
    reward_dim = PAY.shape[0]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.room = 1
        return self.room, {}

    def step(self, action):
        reward = PAY[:, self.room].copy()  # paid for the room the robot is in now
        if action == 1 and self.np_random.random() >= SLIP:
            self.room = (self.room + 1) % ROOMS
        return self.room, reward, False, False, {}


def main(out: Path) -> None:
    env = CleaningRobot()
    model = from_gymnasium(env, gamma=0.95)
    print(f"route: {model.route}, {model.mdp.n_states} states, {model.mdp.n_actions} actions, {model.n_agents} agents")

    problem = solvers.with_ranges(model.problem(names=["ann", "bo"]))
    samples = sample_policy_returns(problem, 2_000, rng=0)
    result = solvers.max_quantile(problem, samples)
    print(result.table())
    result.save(out / "max-quantile")

    report = rollout(env, model, result, episodes=1_000, seed=0)
    print(report.table(problem.names))
    print(f"rollout agrees with the LP: {report.agrees()}")
    print(f"saved to {out}/max-quantile.json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples/own-environment"))
    main(parser.parse_args().out)
