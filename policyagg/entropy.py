"""Causal entropy of a policy and entropy-regularised planning (soft policy iteration).

For a normalised occupancy ``d`` (``sum d = 1``) with policy ``pi(a|s) = d(s,a) / sum_a' d(s,a')``
the causal (conditional) entropy is

.. math:: H(d) = -\\sum_{s,a} d(s,a) \\log \\frac{d(s,a)}{\\sum_{a'} d(s,a')}
               = \\mathbb{E}_d[-\\log \\pi(a|s)],

concave in ``d``. Maximising ``<r, d> + beta H(d)`` over ``O`` is the soft (maximum-entropy)
MDP: discounted, ``V(s) = beta log sum_a exp(Q(s,a)/beta)`` with ``Q = r + gamma P V`` and the
optimum ``(1 - gamma) rho @ V``; average reward, the same with ``V`` a bias and the optimum the
gain. :func:`soft_value_iteration` solves it by soft policy iteration (evaluate the entropy-
augmented reward exactly, then ``pi <- softmax(Q / beta)``), which converges like Newton's method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp, softmax

from policyagg.errors import InvalidProblemError, PolicyEvaluationError
from policyagg.mdp import TabularMDP
from policyagg.planning import evaluate_policy

#: Soft policy iteration stops when the soft Bellman residual is at most this (relative to the
#: largest ``|r| + beta log A``).
SOFT_TOL = 1e-11
SOFT_MAX_ITER = 500


@dataclass(frozen=True, eq=False)
class SoftSolution:
    """The entropy-regularised optimum: a full-support ``policy`` (S, A), its ``occupancy``
    (S, A), the soft values ``value`` (S,) (discounted: ``V``; average reward: a bias), the
    ``objective`` ``<r, d> + beta H(d)``, its ``entropy`` ``H(d)``, the final soft Bellman
    ``residual`` and the number of ``iterations``."""

    policy: NDArray[np.float64]
    occupancy: NDArray[np.float64]
    value: NDArray[np.float64]
    objective: float
    entropy: float
    residual: float
    iterations: int


def causal_entropy(d: ArrayLike) -> float:
    """``H(d) = -sum_{s,a} d(s,a) log(d(s,a) / sum_a' d(s,a'))`` for an occupancy of shape (S, A)
    (``0 log 0 = 0``)."""
    x = np.clip(np.asarray(d, dtype=float), 0.0, None)
    if x.ndim != 2:
        raise InvalidProblemError(f"`d` must be an occupancy of shape (S, A); got {x.shape}")
    state = x.sum(axis=1, keepdims=True)
    ratio = np.where(x > 0, x / np.where(state > 0, state, 1.0), 1.0)
    return float(-(x * np.log(ratio)).sum())


def soft_value_iteration(
    mdp: TabularMDP, reward: ArrayLike, beta: float, *, tol: float = SOFT_TOL, max_iter: int = SOFT_MAX_ITER
) -> SoftSolution:
    """``max_{d in O} <r, d> + beta H(d)`` (module docstring) by soft policy iteration.

    ``reward`` has shape (S, A) or (S*A,); ``beta > 0``. Average reward needs every
    full-support policy to be unichain (true for a communicating MDP); otherwise the evaluation
    raises :class:`~policyagg.errors.PolicyEvaluationError`. Not converging within ``max_iter``
    raises it too.
    """
    S, A = mdp.n_states, mdp.n_actions
    r = np.asarray(reward, dtype=float).reshape(S, A)
    if not (np.isfinite(beta) and beta > 0):
        raise InvalidProblemError(f"`beta` must be a positive number; got {beta}")
    if not np.all(np.isfinite(r)):
        raise InvalidProblemError("`reward` must be finite")
    scale = float(np.abs(r).max(initial=0.0)) + beta * np.log(A) + 1e-300
    gamma = mdp.gamma
    pi = np.full((S, A), 1.0 / A)
    for iteration in range(1, max_iter + 1):
        with np.errstate(divide="ignore"):
            log_pi = np.log(pi)
        c_pi = (pi * (r - beta * np.where(pi > 0, log_pi, 0.0))).sum(axis=1)
        try:
            evaluation = evaluate_policy(mdp.transition_under(pi), c_pi, gamma=gamma, rho=mdp.rho)
        except PolicyEvaluationError as exc:
            raise PolicyEvaluationError(
                f"soft policy iteration cannot evaluate a full-support policy ({exc}); with `gamma` = 1 it "
                "needs every such policy to be unichain (a communicating MDP): use `gamma` < 1 or the "
                "convex program"
            ) from None
        V = evaluation.potential
        Q = r + gamma * np.asarray(mdp.P @ V).reshape(S, A)
        soft_v = beta * logsumexp(Q / beta, axis=1)
        shift = evaluation.gain if evaluation.gain is not None else 0.0
        residual = float(np.abs(soft_v - V - shift).max())
        if residual <= tol * scale:
            d = evaluation.mu[:, None] * pi
            objective = evaluation.gain if evaluation.gain is not None else float((1.0 - gamma) * mdp.rho @ V)
            return SoftSolution(pi, d, V, float(objective), causal_entropy(d), residual, iteration)
        pi = softmax(Q / beta, axis=1)
    raise PolicyEvaluationError(
        f"soft policy iteration did not converge in {max_iter} iterations (residual {residual:.3g}); "
        "increase `beta` or `max_iter`"
    )
