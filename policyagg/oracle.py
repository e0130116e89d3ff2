"""The protocol of a policy-optimisation oracle (issue 16), in the model layer.

An *oracle* hides an environment behind two calls:

* ``best_response(w)`` returns a policy maximising the scalarised return ``sum_i w_i J_i(pi)``
  (any real ``w``: ``-e_i`` asks for agent ``i``'s worst policy);
* ``evaluate(policy)`` returns each agent's per-step return ``J_i`` with standard errors
  (zero for an exact evaluation).

Returns are in the units of :attr:`policyagg.result.Result.returns`: ``(1 - gamma)`` times the
discounted value from ``rho``, or the gain when ``gamma == 1``. Policies found by an oracle are
mixed into a :class:`policyagg.lottery.Lottery` (one policy drawn per episode). Implementations
that need an environment or an RL library live in ``policyagg.envs`` (the tabular exact oracle,
which needs only a :class:`~policyagg.problem.Problem`, lives here); the rules over oracles live
in ``policyagg.solvers.oracle_rules``.

The names below are the protocol agreed in issue 16 (``Evaluation``, ``OraclePolicy``,
``Oracle``). Compatible extensions: ``Evaluation.episodes`` defaults to 0; an oracle *may* state
``tolerance`` (best responses within ``tolerance * ||w||_1`` of optimal in per-step return;
absent or ``None``: unknown, and the rules over it then certify nothing); a tabular oracle *may*
offer ``occupancy(policy)`` and ``problem`` (the rules then build a tabular lottery);
:func:`check_weights` and :class:`ExactOracle` are additions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidProblemError
from policyagg.planning import PolicyIteration
from policyagg.problem import Problem


@dataclass(frozen=True)
class Evaluation:
    """Each agent's estimated per-step return ``J_i`` (shape (n,)) with its standard error
    (0 for an exact evaluation) and the evaluation episodes it cost (0 when exact)."""

    returns: NDArray[np.float64]  # (n,)
    standard_errors: NDArray[np.float64]  # (n,)
    episodes: int = 0


@dataclass(frozen=True)
class OraclePolicy:
    """A policy an oracle returned: its ``key`` (unique within the oracle, e.g. ``"br-0003"``),
    the ``weights`` it best-responds to, and either a tabular ``table`` (S, A) or the ``path``
    of a checkpoint (relative to the oracle's folder) for trained policies."""

    key: str
    weights: NDArray[np.float64]  # (n,)
    table: NDArray[np.float64] | None = None  # (S, A)
    path: str | None = None


@runtime_checkable
class Oracle(Protocol):
    """A policy-optimisation oracle over ``n`` agents (see the module docstring)."""

    names: tuple[str, ...]
    calls: int  # best_response calls so far
    episodes: int  # evaluation (and training) episodes so far

    def best_response(self, weights: ArrayLike) -> OraclePolicy:
        """A policy maximising ``sum_i w_i J_i(pi)`` (any real ``w``)."""
        ...

    def evaluate(self, policy: OraclePolicy) -> Evaluation:
        """Each agent's per-step return of ``policy``, with standard errors."""
        ...


def check_weights(weights: ArrayLike, n: int) -> NDArray[np.float64]:
    """Validate a weight vector of length ``n`` (finite reals) and return it as floats."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,) or not np.all(np.isfinite(w)):
        raise InvalidProblemError(f"`weights` must be {n} finite numbers, one per agent; got shape {w.shape}")
    return w


class ExactOracle:
    """The exact tabular oracle: policy iteration on the scalarised reward ``sum_i w_i r_i`` of
    ``problem`` (:class:`policyagg.planning.PolicyIteration`, warm-started across calls) and exact
    evaluation ``J = R d``. Best responses are deterministic policies, optimal up to the
    certificate of policy iteration (:attr:`tolerance`, in scalarised per-step return per unit
    ``||w||_1``). Extra linear constraints of ``problem`` cannot be honoured by a best response
    and are refused.

    ``occupancy(policy)`` gives the state-action occupancy ``(S, A)`` of a policy it returned
    (what :func:`policyagg.lottery.build_lottery` needs).
    """

    #: Stated accuracy of a best response: ``max_pi w.J(pi) - w.J(BR(w)) <= tolerance * ||w||_1``.
    tolerance: float = 1e-9

    def __init__(self, problem: Problem) -> None:
        if len(problem.constraints):
            raise InvalidProblemError(
                "the exact oracle cannot honour the problem's extra linear constraints; "
                'use the LP route (`route = "lp"`) or drop the constraints'
            )
        self.problem = problem
        self.names: tuple[str, ...] = problem.names
        self.calls = 0
        self.episodes = 0
        self._planner = PolicyIteration(problem.mdp)
        self._occupancies: dict[str, NDArray[np.float64]] = {}
        self.gaps: list[float] = []  # certified suboptimality of each best response (per unit ||w||_1)

    def best_response(self, weights: ArrayLike) -> OraclePolicy:
        """A deterministic policy maximising ``w @ J(pi)`` by policy iteration."""
        mdp = self.problem.mdp
        w = check_weights(weights, len(self.names))
        c = w @ self.problem.reward_matrix
        result = self._planner.run(c)
        table = np.zeros((mdp.n_states, mdp.n_actions))
        table[np.arange(mdp.n_states), result.policy] = 1.0
        d = np.zeros((mdp.n_states, mdp.n_actions))
        d[np.arange(mdp.n_states), result.policy] = result.mu / result.mu.sum()
        value = float(c @ d.ravel())
        self.gaps.append(max(0.0, result.bound - value) / max(1.0, float(np.abs(w).sum())))
        key = f"br-{self.calls:04d}"
        self.calls += 1
        self._occupancies[key] = d
        return OraclePolicy(key=key, weights=w, table=table)

    def evaluate(self, policy: OraclePolicy) -> Evaluation:
        """Exact per-step returns ``J_i = <r_i, d_pi>`` (standard errors 0, no episodes)."""
        d = self.occupancy(policy)
        n = len(self.names)
        return Evaluation(returns=self.problem.returns(d), standard_errors=np.zeros(n), episodes=0)

    def occupancy(self, policy: OraclePolicy) -> NDArray[np.float64]:
        """The exact occupancy ``(S, A)`` of a tabular policy."""
        if policy.key in self._occupancies:
            return self._occupancies[policy.key]
        if policy.table is None:
            raise InvalidProblemError(
                f"policy {policy.key!r} has no table; the exact oracle evaluates tabular policies"
            )
        d = self.problem.mdp.occupancy(policy.table)
        self._occupancies[policy.key] = d
        return d
