"""Policy-optimisation oracles that need an environment or an RL library (issue 16).

:mod:`policyagg.envs.oracles.sb3` trains any stable-baselines3 algorithm on a weighted sum of a
vector reward (the optional extra ``policyagg[rl]``). Importing this package imports neither
torch nor stable-baselines3; :func:`make_oracle` resolves names such as ``"sb3:PPO"``.
"""

from __future__ import annotations

from typing import Any

SB3_PREFIX = "sb3:"


def make_oracle(name: str, **options: Any) -> Any:
    """The oracle called ``name`` built with ``options``: ``"sb3:<Algorithm>"`` (``"sb3:PPO"``,
    ``"sb3:DQN"``, any stable-baselines3 class) is an :class:`~policyagg.envs.oracles.sb3.SB3Oracle`."""
    from policyagg.errors import InvalidProblemError

    if not isinstance(name, str) or not name.startswith(SB3_PREFIX) or len(name) == len(SB3_PREFIX):
        raise InvalidProblemError(f"unknown oracle {name!r}; use 'sb3:<Algorithm>', e.g. 'sb3:PPO' or 'sb3:DQN'")
    from policyagg.envs.oracles.sb3 import SB3Oracle

    return SB3Oracle(algorithm=name[len(SB3_PREFIX) :], **options)


__all__ = ["SB3_PREFIX", "make_oracle"]
