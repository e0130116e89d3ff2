"""The reference measures ``mu`` on the occupancy polytope, behind one function.

``sample_returns(problem, N, measure=...)`` returns the ``(N, n)`` sampled returns of

* ``"policy"`` — random policies, each state's action distribution ~ Dirichlet(1)
  (:func:`policyagg.sampling.sample_policy_returns`; the paper's experiments);
* ``"volume"`` — ``d`` uniform on ``O`` (:func:`policyagg.volume.sample_volume_returns`,
  Metropolis in policy coordinates; the paper's theory);
* ``"optimal-mixture"`` — ``d = sum_j w_j d*_j`` with ``w ~ Dirichlet(concentration)`` over
  the agents' optimal occupancies ``d*_j`` (:func:`sample_mixture_returns`).

In high dimension the first two concentrate: almost all their mass sits in a thin band of
each agent's return range, so every clearly good policy gets rank ~ 1 and quantile rules
lose resolution. The optimal mixture spreads its mass over the part of ``O`` between the
agents' optima, where the trade-offs are, at any size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from policyagg.errors import InvalidProblemError, check_count, check_real
from policyagg.parallel import Executor
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.sampling import METHODS, SOLVERS, sample_policy_returns

MEASURES = ("policy", "volume", "optimal-mixture")


def sample_mixture_returns(
    problem: Problem,
    n_samples: int,
    *,
    rng: np.random.Generator | int | None = None,
    concentration: float = 1.0,
    progress: bool | str | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
) -> ReturnSamples:
    """Returns of ``d = sum_j w_j d*_j``, ``w ~ Dirichlet(concentration * 1_n)``.

    ``d*_j`` is agent ``j``'s optimal occupancy over ``O`` (``problem.ranges.best``, attached by
    ``solvers.with_ranges``). ``O`` is convex, so every ``d`` is a point of ``O``, and
    ``J(d) = sum_j w_j J(d*_j)`` is exact without forming ``d``. (``progress`` and
    ``workers``, ``executor`` are accepted for a uniform interface; this measure needs none.)
    """
    check_count("n_samples", n_samples)
    if not (np.isfinite(concentration) and concentration > 0):
        raise InvalidProblemError(f"`concentration` must be a positive number; got {concentration}")
    ranges = problem.require_ranges()
    corners = ranges.best @ problem.reward_matrix.T  # (n optima, n agents): J(d*_j)
    rng = np.random.default_rng(rng)
    weights = rng.dirichlet(np.full(len(corners), float(concentration)), size=n_samples)
    info = {
        "n_samples": int(n_samples),
        "concentration": float(concentration),
        "gamma": problem.mdp.gamma,
        "optima": len(corners),
    }
    return ReturnSamples(weights @ corners, measure="optimal-mixture", info=info)


def _sampler(measure: str) -> Callable[..., ReturnSamples]:
    if measure == "policy":
        return sample_policy_returns
    if measure == "volume":
        from policyagg.volume import sample_volume_returns  # scipy-heavy, and only needed here

        return sample_volume_returns
    if measure == "optimal-mixture":
        return sample_mixture_returns
    raise InvalidProblemError(f"`measure` must be one of {', '.join(MEASURES)}; got {measure!r}")


#: Keyword arguments of every sampler that say how to run it, not what to sample.
_RUN_OPTIONS = ("rng", "workers", "progress", "executor")


def measure_options(measure: str) -> tuple[str, ...]:
    """The keyword options ``measure``'s sampler accepts (besides :data:`_RUN_OPTIONS`)."""
    params = inspect.signature(_sampler(measure)).parameters
    return tuple(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY and name not in _RUN_OPTIONS)


def check_measure_options(measure: str, options: dict[str, Any]) -> None:
    """Check ``options`` for ``measure``'s sampler, names and values, before anything is sampled;
    an :class:`InvalidProblemError` names the option and says what is allowed."""
    allowed = measure_options(measure)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidProblemError(
            f"measure {measure!r} has no option {unknown[0]!r}; its options are: " + (", ".join(allowed) or "none")
        )
    for name, value in options.items():
        _OPTION_CHECKS[name](name, value)


def _positive_real(name: str, value: Any) -> None:
    if not (np.isfinite(check_real(name, value)) and value > 0):
        raise InvalidProblemError(f"`{name}` must be a positive finite number; got {value!r}")


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or value not in choices:
            raise InvalidProblemError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}")

    return check


def _count_or_none(minimum: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value is not None:
            check_count(name, value, minimum)

    return check


def _volume_kernels() -> tuple[str, ...]:
    from policyagg.volume_chain import KERNELS

    return KERNELS


#: Value checks of every sampler option (see :func:`measure_options` for which measure takes which).
_OPTION_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "concentration": _positive_real,
    "method": _choice(METHODS),
    "solver": _choice(SOLVERS),
    "batch_size": _count_or_none(1),
    "chains": _count_or_none(1),
    "burn_in": _count_or_none(0),
    "thin": _count_or_none(1),
    "refresh": _count_or_none(1),
    "kernel": lambda name, value: _choice(_volume_kernels())(name, value),
}


def sample_returns(
    problem: Problem,
    n_samples: int,
    *,
    measure: str = "policy",
    rng: np.random.Generator | int | None = None,
    workers: int | None = None,
    progress: bool | str | None = None,
    executor: Executor | None = None,
    **options: Any,
) -> ReturnSamples:
    """``n_samples`` sampled returns ``(N, n)`` of ``problem`` under ``measure`` (see the module
    docstring); ``options`` go to that measure's sampler. Same seed, same numbers, whatever
    ``workers`` or ``executor`` (:class:`~policyagg.parallel.Executor`: where the batches or chains run)."""
    sampler = _sampler(measure)
    check_measure_options(measure, options)
    return sampler(problem, n_samples, rng=rng, workers=workers, progress=progress, executor=executor, **options)
