"""Oracles that learn from an environment (issue 16): tabular Q-learning here; the
stable-baselines3 oracle in :mod:`policyagg.envs.oracles.sb3` (extra ``policyagg[rl]``, imported
lazily). The protocol and the exact tabular oracle are in :mod:`policyagg.oracle`."""

from policyagg.envs.oracles.qlearning import GymSimulator, QLearningOracle, TabularSimulator

__all__ = ["GymSimulator", "QLearningOracle", "TabularSimulator"]
