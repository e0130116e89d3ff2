"""Environments of policyagg; importing this package registers them with Gymnasium."""

from typing import Any

import gymnasium

from policyagg.envs.attention import AttentionModel, one_agent_per_site, random_site_subsets
from policyagg.envs.attention_env import AttentionAllocation
from policyagg.envs.goals_env import GoalsOnALine

# `envs.rollout` is the function (it shadows the submodule attribute); `from policyagg.envs.rollout import ...` still works
from policyagg.envs.rollout import rollout
from policyagg.envs.tabular import EnvModel, from_gymnasium

__all__ = [
    "AttentionAllocation",
    "AttentionModel",
    "EnvModel",
    "GoalsOnALine",
    "from_gymnasium",
    "one_agent_per_site",
    "random_site_subsets",
    "rollout",
]

# One place for every registration; the guard keeps a re-import (importlib.reload) silent.
# The passive env checker is off, as in MO-Gymnasium's `make`: it only knows scalar rewards
# and would warn on every environment's first step. Tests run `check_env` explicitly.
_REGISTRATIONS: list[dict[str, Any]] = [
    dict(
        id="policyagg/AttentionAllocation-v0",
        entry_point="policyagg.envs.attention_env:AttentionAllocation",
        max_episode_steps=1000,
        disable_env_checker=True,
        kwargs={"n_sites": 5, "n_phases": 3},
    ),
    dict(
        id="policyagg/GoalsOnALine-v0",
        entry_point="policyagg.envs.goals_env:GoalsOnALine",
        max_episode_steps=100,
        disable_env_checker=True,
    ),
]
for _spec in _REGISTRATIONS:
    if _spec["id"] not in gymnasium.registry:
        gymnasium.register(**_spec)
