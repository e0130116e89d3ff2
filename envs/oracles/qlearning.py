"""A sample-based tabular oracle: Q-learning on the scalarised reward, rollout evaluation.

The environment is seen through a *simulator* over integer states: :class:`TabularSimulator`
samples a :class:`~policyagg.problem.Problem`'s MDP (a batch of chains in one numpy step), and
:class:`GymSimulator` runs a discrete-action Gymnasium environment with vector rewards
(MO-Gymnasium), numbering observations as it meets them.

:class:`QLearningOracle` keeps a *vector* Q table ``Q[s, a, i]`` (agent ``i``'s discounted
return of the greedy policy) and, for weights ``w``, learns

.. math:: Q(s, a) \\leftarrow Q(s, a) + \\alpha\\,(r(s, a) + \\gamma\\, Q(s', a^*) - Q(s, a)),
          \\quad a^* = \\arg\\max_b w \\cdot Q(s', b)

with epsilon-greedy exploration, warm-started from the previous call's table. The best
response is the greedy policy; evaluation runs episodes of ``horizon`` steps and reports the
per-step return ``(1 - gamma) sum_t gamma^t r_t`` (the mean reward when ``gamma == 1``) with
its standard error. Its best responses carry no optimality guarantee (``tolerance = None``), so
rules over it report status ``"gap"``. Every call draws from ``numpy.random.default_rng([seed,
call, purpose])``: same seed, same numbers, also after a resumed run.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidProblemError, check_count, check_real
from policyagg.oracle import Evaluation, OraclePolicy, check_weights
from policyagg.problem import Problem

#: Evaluation episodes run until ``gamma^t`` falls below this (when no horizon is given).
DISCOUNT_CUTOFF = 1e-4
#: Episode length for average reward (``gamma == 1``) when no horizon is given.
AVERAGE_HORIZON = 1000
#: Q-learning with ``gamma == 1`` learns with this discount (evaluation stays average reward).
AVERAGE_TRAIN_GAMMA = 0.99


class Simulator(Protocol):
    """Integer-state access to an environment, a batch of episodes at a time."""

    names: tuple[str, ...]
    n_states: int  # an upper bound on the states met
    n_actions: int
    gamma: float

    def reset(self, rng: np.random.Generator, size: int) -> NDArray[np.int64]: ...

    def step(
        self, states: NDArray[np.int64], actions: NDArray[np.int64], rng: np.random.Generator
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
        """Next states, rewards (B, n), terminated (B,), truncated (B,)."""
        ...


class TabularSimulator:
    """Sample the MDP of ``problem``: ``s_0 ~ rho``, ``s' ~ P(.|s, a)``, reward ``r_i(s, a)``;
    episodes never terminate (the oracle ends them after ``horizon`` steps)."""

    def __init__(self, problem: Problem) -> None:
        mdp = problem.mdp
        self.problem = problem
        self.names = problem.names
        self.n_states, self.n_actions, self.gamma = int(mdp.n_states), int(mdp.n_actions), float(mdp.gamma)
        P = mdp.P.tocsr()
        self._indptr, self._indices = P.indptr, P.indices
        self._cum = np.cumsum(P.data)
        self._before = np.concatenate([[0.0], self._cum])
        self._rho_cum = np.cumsum(mdp.rho)
        self._rewards = np.moveaxis(np.asarray(problem.rewards), 0, -1)  # (S, A, n)

    def reset(self, rng: np.random.Generator, size: int) -> NDArray[np.int64]:
        u = rng.random(size) * self._rho_cum[-1]
        return np.minimum(np.searchsorted(self._rho_cum, u, side="right"), self.n_states - 1).astype(np.int64)

    def step(
        self, states: NDArray[np.int64], actions: NDArray[np.int64], rng: np.random.Generator
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
        rows = states * self.n_actions + actions
        start, end = self._indptr[rows], self._indptr[rows + 1]
        base = self._before[start]
        target = base + rng.random(rows.size) * (self._cum[end - 1] - base)
        pos = np.clip(np.searchsorted(self._cum, target, side="right"), start, end - 1)
        rewards = self._rewards[states, actions]
        none = np.zeros(rows.size, dtype=bool)
        return self._indices[pos].astype(np.int64), rewards, none, none


class GymSimulator:
    """One discrete-action Gymnasium environment with a vector reward (``reward_space`` of
    shape (n,), as in MO-Gymnasium), its observations numbered in the order met (at most
    ``max_states``). Runs one episode at a time. ``gamma`` is the criterion's discount."""

    def __init__(self, env: Any, *, gamma: float, names: tuple[str, ...] | None = None, max_states: int = 100_000):
        space = env.action_space
        if not hasattr(space, "n"):
            raise InvalidProblemError(f"the Q-learning oracle needs a Discrete action space; got {space}")
        n = int(np.prod(getattr(env.unwrapped, "reward_space", env.observation_space).shape or (1,)))
        self.env = env
        self.names = tuple(names) if names is not None else tuple(f"agent{i}" for i in range(n))
        self.n_states, self.n_actions = int(max_states), int(space.n)
        self.gamma = check_real("gamma", gamma)
        self._ids: dict[bytes, int] = {}
        self.observations: list[Any] = []  # observations[k]: the observation numbered k (a table's row k)

    @property
    def known_states(self) -> int:
        """How many observations have been numbered so far."""
        return len(self._ids)

    def _index(self, observation: Any) -> int:
        key = np.asarray(observation).tobytes()
        if key not in self._ids:
            if len(self._ids) >= self.n_states:
                raise InvalidProblemError(f"the environment has more than `max_states` = {self.n_states} observations")
            self._ids[key] = len(self._ids)
            self.observations.append(observation)
        return self._ids[key]

    def reset(self, rng: np.random.Generator, size: int) -> NDArray[np.int64]:
        if size != 1:
            raise InvalidProblemError("a GymSimulator runs one episode at a time (`batch` = 1)")
        observation, _ = self.env.reset(seed=int(rng.integers(2**31)))
        return np.array([self._index(observation)], dtype=np.int64)

    def step(
        self, states: NDArray[np.int64], actions: NDArray[np.int64], rng: np.random.Generator
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
        observation, reward, terminated, truncated, _ = self.env.step(int(actions[0]))
        r = np.asarray(reward, dtype=float).reshape(1, -1)
        return (
            np.array([self._index(observation)], dtype=np.int64),
            r,
            np.array([bool(terminated)]),
            np.array([bool(truncated)]),
        )


class QLearningOracle:
    """Tabular Q-learning best responses and rollout evaluations (see the module docstring).

    Parameters
    ----------
    simulator : TabularSimulator or GymSimulator (or anything with their methods)
    steps : int
        Transitions learned from per best response.
    batch : int
        Parallel episodes (1 for a :class:`GymSimulator`).
    epsilon : float
        Exploration rate of the epsilon-greedy behaviour policy.
    learning_rate : float
        ``alpha = max(learning_rate * visits^-0.6, min_learning_rate)`` per (state, action).
    eval_episodes : int
        Episodes per evaluation.
    horizon : int, optional
        Episode length (default: until ``gamma^t < 1e-4``, or 1000 steps with ``gamma == 1``).
    seed : int
    warm_start : bool
        Start each call from the previous call's Q table (off: a table learned for other
        weights misleads exploration).
    generative : bool, optional
        Synchronous Q-learning, sweeping every (state, action) with one sampled transition
        (needs a simulator that can start anywhere; default when it can). Off: online
        epsilon-greedy episodes from ``rho``.
    """

    tolerance: float | None = None

    def __init__(
        self,
        simulator: Simulator,
        *,
        steps: int = 200_000,
        batch: int = 64,
        epsilon: float = 0.2,
        learning_rate: float = 1.0,
        min_learning_rate: float = 0.02,
        eval_episodes: int = 200,
        horizon: int | None = None,
        seed: int = 0,
        warm_start: bool = False,
        generative: bool | None = None,
    ) -> None:
        check_count("steps", steps)
        check_count("batch", batch)
        check_count("eval_episodes", eval_episodes, minimum=2)
        for name, value in (
            ("epsilon", epsilon),
            ("learning_rate", learning_rate),
            ("min_learning_rate", min_learning_rate),
        ):
            if not 0.0 <= check_real(name, value) <= 1.0:
                raise InvalidProblemError(f"`{name}` must be in [0, 1]; got {value}")
        if isinstance(simulator, GymSimulator) and batch != 1:
            batch = 1
        self.simulator = simulator
        can_jump = isinstance(simulator, TabularSimulator)
        if generative and not can_jump:
            raise InvalidProblemError(
                "`generative` learning needs a simulator that can start from any state (TabularSimulator)"
            )
        self.generative = can_jump if generative is None else bool(generative)
        self.problem = getattr(simulator, "problem", None)
        self.names: tuple[str, ...] = tuple(simulator.names)
        self.steps, self.batch, self.epsilon = int(steps), int(batch), float(epsilon)
        self.learning_rate, self.min_learning_rate = float(learning_rate), float(min_learning_rate)
        self.eval_episodes, self.seed, self.warm_start = int(eval_episodes), int(seed), bool(warm_start)
        gamma = simulator.gamma
        if horizon is None:
            horizon = AVERAGE_HORIZON if gamma >= 1.0 else math.ceil(math.log(DISCOUNT_CUTOFF) / math.log(gamma))
        self.horizon = check_count("horizon", horizon)
        self.train_gamma = AVERAGE_TRAIN_GAMMA if gamma >= 1.0 else gamma
        self.calls = 0
        self.episodes = 0
        self.transitions = 0
        self._Q: NDArray[np.float64] | None = None

    # ------------------------------------------------------------------ the protocol
    def best_response(self, weights: ArrayLike) -> OraclePolicy:
        """The greedy policy of Q-learning on ``w . r`` (``steps`` transitions)."""
        w = check_weights(weights, len(self.names))
        rng = np.random.default_rng([self.seed, self.calls, 0])
        Q = self._learn(w, rng)
        known = int(self.simulator.known_states) if isinstance(self.simulator, GymSimulator) else int(Q.shape[0])
        table = np.zeros((known, Q.shape[1]))
        table[np.arange(known), (Q[:known] @ w).argmax(axis=1)] = 1.0
        key = f"br-{self.calls:04d}"
        self.calls += 1
        return OraclePolicy(key=key, weights=w, table=table)

    def evaluate(self, policy: OraclePolicy) -> Evaluation:
        """``eval_episodes`` rollouts of ``horizon`` steps: mean per-step return and its standard error."""
        if policy.table is None:
            raise InvalidProblemError(
                f"policy {policy.key!r} has no table; the Q-learning oracle runs tabular policies"
            )
        rng = np.random.default_rng([self.seed, zlib.crc32(policy.key.encode()), 1])
        totals = self._rollouts(policy.table.argmax(axis=1), rng)
        self.episodes += self.eval_episodes
        se = totals.std(axis=0, ddof=1) / math.sqrt(self.eval_episodes)
        return Evaluation(returns=totals.mean(axis=0), standard_errors=se, episodes=self.eval_episodes)

    # ------------------------------------------------------------------ learning
    def _learn(self, w: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
        """Q-learning on ``w . r``: the vector table ``Q`` (S, A, n) and its scalarisation ``Q @ w``."""
        sim, B = self.simulator, self.batch
        S, A, n = sim.n_states, sim.n_actions, len(self.names)
        Q = self._Q.reshape(S * A, n).copy() if (self.warm_start and self._Q is not None) else np.zeros((S * A, n))
        if self.generative:
            return self._learn_synchronously(Q, w, rng)
        Qw = Q @ w
        visits = np.zeros(S * A)
        states = sim.reset(rng, B)
        age = np.zeros(B, dtype=np.int64)
        iterations = max(1, self.steps // B)
        for _ in range(iterations):
            greedy = Qw.reshape(S, A)[states].argmax(axis=1)
            explore = rng.random(B) < self.epsilon
            actions = np.where(explore, rng.integers(A, size=B), greedy)
            nxt, rewards, terminated, truncated = sim.step(states, actions, rng)
            best = nxt * A + Qw.reshape(S, A)[nxt].argmax(axis=1)
            target = rewards + self.train_gamma * (~terminated)[:, None] * Q[best]
            flat = states * A + actions
            visits += np.bincount(flat, minlength=S * A)
            alpha = np.maximum(self.learning_rate * visits[flat] ** -0.6, self.min_learning_rate)
            Q[flat] += alpha[:, None] * (target - Q[flat])
            Qw[flat] = Q[flat] @ w
            age += 1
            ended = terminated | truncated | (age >= self.horizon)
            states = nxt
            if ended.any():
                states[ended] = sim.reset(rng, int(ended.sum())) if B > 1 else sim.reset(rng, 1)
                age[ended] = 0
                self.episodes += int(ended.sum())
        self.transitions += iterations * B
        self._Q = Q.reshape(S, A, n)
        return self._Q

    def _learn_synchronously(
        self, Q: NDArray[np.float64], w: NDArray[np.float64], rng: np.random.Generator
    ) -> NDArray[np.float64]:
        """Synchronous Q-learning from a generative model (Kearns and Singh, 1999): each sweep
        samples one next state for every (state, action) and updates all of them with
        ``alpha_k = max(learning_rate * (k + 1)^-0.6, min_learning_rate)``."""
        sim = self.simulator
        S, A, n = sim.n_states, sim.n_actions, len(self.names)
        states, actions = np.repeat(np.arange(S), A), np.tile(np.arange(A), S)
        sweeps = max(1, self.steps // (S * A))
        for k in range(sweeps):
            nxt, rewards, terminated, _ = sim.step(states, actions, rng)
            best = nxt * A + (Q.reshape(S, A, n)[nxt] @ w).argmax(axis=1)
            target = rewards + self.train_gamma * (~terminated)[:, None] * Q[best]
            alpha = max(self.learning_rate * (k + 1) ** -0.6, self.min_learning_rate)
            Q += alpha * (target - Q)
        self.transitions += sweeps * S * A
        self._Q = Q.reshape(S, A, n)
        return self._Q

    def _rollouts(self, actions: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.float64]:
        """Per-step returns ``(episodes, n)`` of the deterministic policy ``actions`` (S,)."""
        sim, n, gamma = self.simulator, len(self.names), self.simulator.gamma
        size = self.eval_episodes if self.batch > 1 else 1
        out: list[NDArray[np.float64]] = []
        while sum(x.shape[0] for x in out) < self.eval_episodes:
            states = sim.reset(rng, size)
            totals = np.zeros((size, n))
            alive = np.ones(size, dtype=bool)
            discount = 1.0
            for _ in range(self.horizon):
                known = states < actions.size
                chosen = np.where(
                    known, actions[np.minimum(states, actions.size - 1)], rng.integers(sim.n_actions, size=size)
                )
                nxt, rewards, terminated, truncated = sim.step(states, chosen, rng)
                totals += alive[:, None] * discount * rewards
                alive &= ~(terminated | truncated)
                if not alive.any():
                    break
                discount *= gamma
                states = nxt
            out.append(totals)
        totals = np.concatenate(out)[: self.eval_episodes]
        scale = 1.0 / self.horizon if gamma >= 1.0 else 1.0 - gamma
        return totals * scale
