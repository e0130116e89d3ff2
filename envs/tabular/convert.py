"""The entry point :func:`from_gymnasium`: which route builds the model.

``route="auto"`` tries :data:`ROUTES` in order and takes the first that applies, recording
why each earlier one was skipped; a named route that does not apply is an error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import gymnasium

from policyagg.envs.tabular.context import RESET_SAMPLES, RouteContext, RouteUnavailable
from policyagg.envs.tabular.model import EnvModel, ModelWarning
from policyagg.envs.tabular.routes import route_enumerate, route_model, route_protocol
from policyagg.envs.tabular.sampled import route_sampled
from policyagg.errors import InvalidProblemError

#: The routes, in the order ``route="auto"`` tries them.
ROUTES = ("protocol", "model", "enumerate", "sampled")
_BUILDERS: dict[str, Callable[[RouteContext], EnvModel]] = {
    "protocol": route_protocol,
    "model": route_model,
    "enumerate": route_enumerate,
    "sampled": route_sampled,
}


def from_gymnasium(
    env: gymnasium.Env | str,
    *,
    gamma: float,
    route: str = "auto",
    on_termination: str = "absorb",
    n_samples: int = 200,
    max_states: int = 100_000,
    allow_multichain: bool = False,
    rng: Any = None,
    reset_samples: int = RESET_SAMPLES,
) -> EnvModel:
    """A tabular model of ``env`` (an instance or a registered id); see :mod:`policyagg.envs.tabular`.

    Parameters
    ----------
    env : gymnasium.Env or str
    gamma : float in (0, 1]
        Discount of the model's MDP; 1 = average reward (read the package docstring on
        termination first).
    route : "auto", "protocol", "model", "enumerate" or "sampled"
        ``"auto"`` takes the first available in that order; a named route that is not
        available raises :class:`InvalidProblemError` saying why.
    on_termination : "absorb" or "reset"
        Where terminating transitions go: one absorbing zero-reward state, or back to ``rho``.
    n_samples : int
        Sampled transitions per ``(state, action)`` (route ``"sampled"`` only).
    max_states : int
        Refuse (with an error) environments with more reachable states.
    allow_multichain : bool
        Passed to :class:`TabularMDP` (only matters with ``gamma = 1``).
    rng : seed or numpy Generator
        Seeds of sampled transitions and resets.
    reset_samples : int
        Resets sampled for ``rho`` when the start distribution can be neither read nor
        probed exactly; a :class:`ModelWarning` says when new start states still appeared
        in the last 10% of them (``info`` then has ``start_states`` and the Good--Turing
        ``unseen_start_mass``).

    Warns :class:`ModelWarning` when ``route="auto"`` falls back to ``"sampled"`` because
    the environment draws from a generator other than ``env.unwrapped.np_random`` (the
    message names it).

    Only route ``"sampled"`` without snapshots (and ``rho`` sampled from resets when the
    environment can be neither asked nor copied) steps ``env`` itself; otherwise the routes
    work on copies of ``env`` (its wrappers and ``env.unwrapped``) or read its attributes.
    """
    if route not in ("auto",) + ROUTES:
        raise InvalidProblemError(f"`route` must be 'auto' or one of {ROUTES}; got {route!r}")
    ctx = RouteContext(env, gamma, on_termination, n_samples, max_states, allow_multichain, rng, reset_samples)
    order = ROUTES if route == "auto" else (route,)
    skipped = {}
    for name in order:
        try:
            model = _BUILDERS[name](ctx)
        except RouteUnavailable as exc:
            if route != "auto":
                raise InvalidProblemError(f"route {name!r} is not available for {ctx.label}: {exc}") from None
            skipped[name] = str(exc)
            if exc.warn:
                warnings.warn(
                    f"{ctx.label} is not modelled exactly: route {name!r} found {exc}; the next route estimates "
                    "the model from sampled transitions (`info['exact']` is False)",
                    ModelWarning,
                    stacklevel=2,
                )
            continue
        model.info["skipped"] = skipped
        return model
    raise AssertionError("route 'sampled' never reports itself unavailable in auto mode")  # pragma: no cover
