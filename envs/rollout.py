"""Roll a policy out in the real environment and compare with the LP's prediction.

The prediction is ``J = <r, d_pi>`` from :meth:`TabularMDP.evaluate` on the model
(per step; for a :class:`Result` on the same model it equals ``result.returns``). The
empirical figure is on the same per-step scale:

* discounted (``gamma < 1``): each episode gives ``(1 - gamma) sum_{t < H} gamma^t r_t``
  with ``H = ceil(log(1e-4) / log(gamma))`` by default; cutting at ``H`` moves the mean by
  at most ``gamma^H max |r|``, which :meth:`RolloutReport.agrees` adds to its tolerance;
* average reward (``gamma = 1``): each episode is an independent chain started from
  ``rho``, run for ``burn_in`` steps and then averaged over ``H`` steps (default 2000 and
  ``H // 10``). The chains are independent, so the standard error over episodes is honest;
  what it does not cover is the bias of a finite ``H`` (slowly mixing chains need more).
  A periodic chain (a deterministic policy on a cycle of ``p`` states, say) would add a
  bias of order ``p / H`` that no standard error shows (every episode repeats the same
  cycle, so the interval has zero width): the default ``H`` is therefore rounded up to a
  multiple of the *period* of the policy's chain on the model (the least common multiple
  of the periods of its closed classes, :func:`chain_period`), so that every window of
  ``H`` steps inside a closed class covers each phase of the cycle equally often.

The confidence interval is ``mean +- 1.96 s.e.`` over episodes, widened on both sides by a
tolerance of each agent's own (the truncation bias bound ``gamma^H max|r_i|`` and rounding,
``1e-9 (1 + max|r_i|)``): an agent with small rewards is judged on its own scale, not on
the largest agent's. :meth:`RolloutReport.verdict` says the outcome in words with each
agent's statistic ``z = (|predicted - mean| - tolerance_i)^+ / s.e.``. It rests on the normal
approximation of the mean, which is poor when the per-episode returns are strongly skewed
(rare, large rewards or penalties: a sample that has seen too few of them has a mean too
high *and* a standard error too small). The report gives each agent's sample skewness
``g1`` and :meth:`RolloutReport.reliable` applies Cochran's rule (episodes ``> 25 g1^2``,
Cochran, *Sampling Techniques*, 1977, section 2.15); the table marks the agents that fail
it. A rare event the sample never saw cannot show in ``g1``, so prefer generous episode
counts for such rewards. As in
:mod:`policyagg.envs.tabular`, truncation is ignored (the environment keeps being stepped past its
``TimeLimit``) and termination follows the model's ``info["on_termination"]``: with
``"absorb"`` the rest of the episode contributes 0; with ``"reset"`` the environment is
reset and the episode goes on.

Rewards (``reward=``): ``"model"`` scores each step ``(s, a)`` with ``rewards[:, s, a]``
(the model's, or any agents' ``rewards`` of shape ``(n, S, A)``), ``"env"`` with the
reward the environment returns (its scalar or vector reward; then the model's rewards
must be the environment's own). Both estimate the same expectation; ``"env"`` also
checks the model's reward table against the environment.

Episodes are stepped one after another in one environment: a Gymnasium
``SyncVectorEnv`` steps its copies in a Python loop as well, and its automatic resets on
truncation would cut episodes the model does not cut. Action choice and reward lookup
are array operations; the report gives the throughput.

Examples
--------
>>> import gymnasium
>>> from policyagg import solvers
>>> from policyagg.envs.tabular import from_gymnasium
>>> env = gymnasium.make("FrozenLake-v1")
>>> model = from_gymnasium(env, gamma=0.95)
>>> result = solvers.utilitarian(model.problem())
>>> rollout(env, model, result, episodes=500).agrees()
True
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from policyagg.envs.tabular import EnvModel, make_env
from policyagg.errors import InvalidProblemError, check_count
from policyagg.lottery import Lottery
from policyagg.mdp import TabularMDP
from policyagg.planning import closed_components, positive_graph

#: Default discounted horizon: ``gamma^H <= DISCOUNT_CUTOFF``.
DISCOUNT_CUTOFF = 1e-4
#: Default average-reward horizon (steps averaged per episode).
AVERAGE_HORIZON = 2000
#: Half-width of the confidence interval in standard errors.
Z95 = 1.96
#: The default average-reward horizon is rounded up to a multiple of the chain's period only
#: while that period is at most this (beyond it, the ``p / H`` bias is not addressed).
MAX_PERIOD = 100_000


@dataclass(frozen=True, eq=False)
class RolloutReport:
    """Empirical per-agent returns of a policy next to the LP's prediction (all per step)."""

    mean: np.ndarray  # (n,)
    ci_low: np.ndarray  # (n,)
    ci_high: np.ndarray  # (n,)
    predicted: np.ndarray  # (n,): the model's evaluation of the policy from rho
    episodes: int
    horizon: int
    gamma: float
    std_error: np.ndarray | None = None  # (n,)
    tolerance: np.ndarray | float = 0.0  # (n,), added to both ends of the interval: truncation bias bound + rounding
    burn_in: int = 0
    reward: str = "model"
    lp_returns: np.ndarray | None = None  # result.returns when a Result was rolled out
    steps: int = 0
    seconds: float = 0.0
    skewness: np.ndarray | None = None  # (n,) sample skewness g1 of the per-episode returns
    period: int = 1  # average reward: the period of the policy's chain on the model (H is a multiple of it)
    # a lottery: episodes drawn per support policy, their empirical means (k, n) and predictions (k, n)
    support_counts: np.ndarray | None = None
    support_means: np.ndarray | None = None
    support_predicted: np.ndarray | None = None

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")

    def agreement(self, z: float | None = None) -> np.ndarray:
        """Per agent: the prediction lies in ``[ci_low - tolerance, ci_high + tolerance]``, or,
        given ``z``, within ``z`` standard errors (+ tolerance) of the mean."""
        if z is None:
            low, high = self.ci_low, self.ci_high
        else:
            # without stored standard errors, the interval's half-width is Z95 of them
            se = self.std_error if self.std_error is not None else (self.ci_high - self.ci_low) / (2 * Z95)
            low, high = self.mean - z * se, self.mean + z * se
        return (self.predicted >= low - self.tolerance) & (self.predicted <= high + self.tolerance)

    def z_scores(self) -> np.ndarray:
        """Per agent: ``z = sign * max(|predicted - mean| - tolerance, 0) / s.e.``, the distance of
        the prediction from the empirical mean beyond the tolerance, in standard errors
        (``+-inf`` when the episodes all gave the same return and the prediction is outside the
        tolerance; ``0`` inside it). ``|z| <= 1.96`` is the 95% agreement of :meth:`agreement`."""
        se = self._se()
        difference = self.predicted - self.mean
        beyond = np.maximum(np.abs(difference) - self.tolerance, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(beyond > 0, np.sign(difference) * beyond / se, 0.0)
        return np.asarray(z, dtype=float)

    def verdict(self, names=None, z: float | None = None) -> str:
        """The outcome in words, with the statistic: which agents' predictions the rollout
        confirms and which it contradicts, each with ``z`` (:meth:`z_scores`)."""
        names = self._names(names)
        level = Z95 if z is None else z
        scores, ok = self.z_scores(), self.agreement(z)
        worst = int(np.argmax(np.abs(scores)))
        if ok.all():
            return (
                f"agrees: every agent's prediction lies within {level:g} standard errors (+ its tolerance) of the "
                f"empirical mean over {self.episodes} episodes; largest |z| = {abs(scores[worst]):.3g} ({names[worst]})"
            )
        parts = [
            f"{names[i]}: predicted {self.predicted[i]:.6g}, empirical {self.mean[i]:.6g} "
            f"+- {self._se()[i]:.3g} (s.e.), z = {scores[i]:.3g}"
            for i in np.flatnonzero(~ok)
        ]
        return (
            f"DISAGREES for {int((~ok).sum())} of {ok.size} agent(s) at {level:g} standard errors over "
            f"{self.episodes} episodes: " + "; ".join(parts)
        )

    def _se(self) -> np.ndarray:
        return self.std_error if self.std_error is not None else (self.ci_high - self.ci_low) / (2 * Z95)

    def _names(self, names) -> list[str]:
        return [f"agent{i}" for i in range(self.mean.size)] if names is None else list(map(str, names))

    def agrees(self, z: float | None = None) -> bool:
        """Every agent's prediction lies in its (tolerance-widened) 95% confidence interval.

        Each agent is a separate 95% check, so with many agents some miss by chance; pass a
        larger ``z`` (e.g. 3.29 for 99.9% per agent) when checking many at once.
        """
        return bool(self.agreement(z).all())

    def reliable(self) -> np.ndarray:
        """Per agent: enough episodes for the normal interval by Cochran's rule ``episodes > 25 g1^2``."""
        if self.skewness is None:
            return np.ones(self.mean.shape, dtype=bool)
        return self.episodes > 25.0 * self.skewness**2

    def table(self, names=None) -> str:
        """A plain-text table: one line per agent with the prediction, the mean and the 95% CI."""
        names = self._names(names)
        criterion = (
            f"gamma: {self.gamma:g}"
            if self.gamma < 1
            else f"average reward, burn-in {self.burn_in}, chain period {self.period}"
        )
        lines = [
            f"rollout: {self.episodes} episodes x {self.horizon} steps   {criterion}   reward: {self.reward}   "
            f"{self.steps_per_second:,.0f} steps/s",
            f"{'agent':>12} {'predicted':>12} {'empirical':>12} {'95% CI':>27} {'z':>8} {'agrees':>7}",
        ]
        ok, reliable, scores = self.agreement(), self.reliable(), self.z_scores()
        for i, name in enumerate(names):
            ci = f"[{self.ci_low[i]:.6g}, {self.ci_high[i]:.6g}]"
            mark = "" if reliable[i] else " *"
            lines.append(
                f"{name:>12} {self.predicted[i]:>12.6g} {self.mean[i]:>12.6g} {ci:>27} {scores[i]:>8.3g} "
                f"{'yes' if ok[i] else 'NO':>7}{mark}"
            )
        if not reliable.all() and self.skewness is not None:  # unreliable only with skewness known
            need = int(np.ceil(25.0 * np.max(self.skewness[~reliable] ** 2)))
            lines.append(
                f"* skewed returns: the normal CI wants more than {need} episodes (Cochran: 25 g1^2); "
                f"this run has {self.episodes}"
            )
        if self.support_counts is not None and self.support_means is not None and self.support_predicted is not None:
            lines.append("ex post: one support policy drawn per episode")
            lines.append(f"{'policy':>12} {'episodes':>9} " + " ".join(f"{n:>12}" for n in names))
            for k, count in enumerate(self.support_counts):
                cells = " ".join(f"{m:>12.6g}" if count else f"{'-':>12}" for m in self.support_means[k])
                lines.append(f"{k:>12} {int(count):>9} {cells}")
        lines.append(self.verdict(names))
        return "\n".join(lines)

    def ex_post_spread(self) -> np.ndarray | None:
        """A lottery's rollout: per agent, the largest minus the smallest empirical mean over the
        support policies drawn at least once (``None`` for a single policy)."""
        if self.support_counts is None or self.support_means is None:
            return None
        drawn = self.support_means[self.support_counts > 0]
        return np.asarray(drawn.max(axis=0) - drawn.min(axis=0), dtype=float)


def rollout(
    env,
    model: EnvModel,
    policy_or_result,
    *,
    episodes: int = 200,
    horizon: int | None = None,
    burn_in: int | None = None,
    seed: int = 0,
    reward: str = "model",
    rewards=None,
) -> RolloutReport:
    """Run a policy ``(S, A)`` (or ``result.policy``) in ``env`` and report per-agent returns.

    A :class:`~policyagg.lottery.Lottery` is executed as it is meant to be: each episode draws one
    support policy with the lottery's probabilities (seeded by ``seed``) and runs it. The mean over
    episodes then estimates the ex-ante returns ``sum_k p_k J(pi_k)`` (the prediction), its standard
    error including the spread between the policies drawn; the report also gives each support
    policy's episode count and empirical mean (:meth:`RolloutReport.ex_post_spread`).

    Parameters
    ----------
    env : gymnasium.Env or str
        The environment ``model`` was built from (or its id).
    model : EnvModel
    policy_or_result : array (S, A), Result or Lottery (tabular)
    episodes : int >= 2
    horizon : int, optional
        Steps per episode (defaults in the module docstring; with ``gamma = 1`` the default
        is rounded up to a multiple of the policy chain's period).
    burn_in : int, optional
        Average reward only: steps discarded before averaging (default ``horizon // 10``).
    seed : int
        Seeds the episodes' resets and the action draws; the same seed gives the same report.
    reward : "model" or "env"
    rewards : array (n, S, A), optional
        Agents to score with ``reward="model"`` (default ``model.rewards``).
    """
    env = make_env(env)
    mdp = model.mdp
    if isinstance(policy_or_result, Lottery):
        if policy_or_result.support_policies is None:
            raise InvalidProblemError(
                "this lottery's policies are not tabular (an oracle's); roll each policy out where it lives"
            )
        support = [mdp.check_policy(pi) for pi in policy_or_result.support_policies]
        probabilities = policy_or_result.probabilities
    else:
        support = [mdp.check_policy(getattr(policy_or_result, "policy", policy_or_result))]
        probabilities = np.ones(1)
    check_count("episodes", episodes, 2, why="for a standard error")
    if reward not in ("model", "env"):
        raise InvalidProblemError(f"`reward` must be 'model' or 'env'; got {reward!r}")
    if rewards is None:
        R = model.rewards
    else:
        if reward == "env":
            raise InvalidProblemError(
                "`rewards` only applies with reward='model' (reward='env' scores with the environment's reward)"
            )
        R = np.asarray(rewards, dtype=float)
        R = R[None] if R.ndim == 2 else R
        if R.ndim != 3 or R.shape[1:] != (mdp.n_states, mdp.n_actions):
            raise InvalidProblemError(
                f"`rewards` must have shape (n, S, A) = (n, {mdp.n_states}, {mdp.n_actions}); got {np.shape(rewards)}"
            )
    gamma = mdp.gamma
    discounted = gamma < 1.0
    period = 1 if discounted else _common_period(mdp, support)
    if horizon is None:
        if discounted:
            horizon = int(np.ceil(np.log(DISCOUNT_CUTOFF) / np.log(gamma)))
        else:
            horizon = AVERAGE_HORIZON if period > MAX_PERIOD else period * -(-AVERAGE_HORIZON // period)
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise InvalidProblemError(f"`horizon` must be a positive integer; got {horizon!r}")
    if burn_in is None:
        burn_in = 0 if discounted else horizon // 10
    if discounted and burn_in:
        raise InvalidProblemError(
            "`burn_in` only applies to average reward (gamma = 1); discounted returns start at t = 0"
        )
    if not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise InvalidProblemError(f"`burn_in` must be a non-negative integer; got {burn_in!r}")

    support_predicted = np.stack([mdp.evaluate(pi, R) for pi in support])
    predicted = probabilities @ support_predicted
    lp_returns = getattr(policy_or_result, "returns", None)
    if lp_returns is not None and rewards is None:
        lp_returns = np.asarray(lp_returns, dtype=float)
        if lp_returns.shape == predicted.shape and not np.allclose(lp_returns, predicted, rtol=1e-6, atol=1e-8):
            warnings.warn(
                f"the result's returns {lp_returns} differ from the model's evaluation of its policy {predicted}: "
                "the result was computed on other rewards (pass them as `rewards=`) or, with gamma = 1, its "
                "occupancy is not reached from `rho`; the rollout is compared with the evaluation",
                UserWarning,
                stacklevel=2,
            )

    if len(support) == 1 and not isinstance(policy_or_result, Lottery):
        returns, steps, seconds = _run_episodes(
            env,
            model,
            support[0],
            R,
            episodes=int(episodes),
            horizon=int(horizon),
            burn_in=int(burn_in),
            seed=seed,
            use_env_reward=(reward == "env"),
        )
        counts = means = None
    else:
        returns, steps, seconds, counts, means = _run_lottery(
            env,
            model,
            support,
            probabilities,
            R,
            episodes=int(episodes),
            horizon=int(horizon),
            burn_in=int(burn_in),
            seed=seed,
            use_env_reward=(reward == "env"),
        )
    mean = returns.mean(axis=0)
    se = returns.std(axis=0, ddof=1) / np.sqrt(episodes)
    centred = returns - mean
    m2, m3 = (centred**2).mean(axis=0), (centred**3).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant returns: skewness 0
        skewness = np.where(m2 > 1e-24 * (1.0 + mean**2), m3 / m2**1.5, 0.0)
    scale = np.abs(R).reshape(R.shape[0], -1).max(axis=1, initial=0.0)  # each agent's own reward scale
    tolerance = (gamma**horizon * scale if discounted else 0.0) + 1e-9 * (1.0 + scale)
    return RolloutReport(
        mean=mean,
        ci_low=mean - Z95 * se,
        ci_high=mean + Z95 * se,
        predicted=predicted,
        episodes=int(episodes),
        horizon=int(horizon),
        gamma=gamma,
        std_error=se,
        tolerance=tolerance,
        burn_in=int(burn_in),
        reward=reward,
        lp_returns=lp_returns,
        steps=steps,
        seconds=seconds,
        skewness=skewness,
        period=period,
        support_counts=counts,
        support_means=means,
        support_predicted=None if counts is None else support_predicted,
    )


def _common_period(mdp: TabularMDP, policies: list[np.ndarray]) -> int:
    """The least common multiple of the policies' chain periods (:func:`chain_period`), capped
    just above :data:`MAX_PERIOD` (beyond it the horizon is not rounded anyway)."""
    period = 1
    for policy in policies:
        period = min(math.lcm(period, chain_period(mdp, policy)), MAX_PERIOD + 1)
    return period


def _run_lottery(env, model, support, probabilities, R, *, episodes, horizon, burn_in, seed, use_env_reward):
    """Episodes of a lottery: episode ``e`` runs support policy ``k_e ~ probabilities`` (drawn from
    ``seed``), each policy's episodes from its own seed. Returns ``(returns (episodes, n) in episode
    order, steps, seconds, counts (k,), means (k, n) with NaN rows for policies never drawn)``."""
    sequence = np.random.SeedSequence(seed)
    draw_seed, *policy_seeds = sequence.spawn(len(support) + 1)
    drawn = np.random.default_rng(draw_seed).choice(len(support), size=episodes, p=probabilities)
    returns = np.zeros((episodes, R.shape[0]))
    counts = np.bincount(drawn, minlength=len(support))
    means = np.full((len(support), R.shape[0]), np.nan)
    steps, seconds = 0, 0.0
    for k, policy in enumerate(support):
        if counts[k] == 0:
            continue
        part, k_steps, k_seconds = _run_episodes(
            env,
            model,
            policy,
            R,
            episodes=int(counts[k]),
            horizon=horizon,
            burn_in=burn_in,
            seed=int(policy_seeds[k].generate_state(1)[0]),
            use_env_reward=use_env_reward,
        )
        returns[drawn == k] = part
        means[k] = part.mean(axis=0)
        steps, seconds = steps + k_steps, seconds + k_seconds
    return returns, steps, seconds, counts, means


def chain_period(mdp: TabularMDP, policy: np.ndarray) -> int:
    """The period of the chain ``P_pi`` on its closed classes: the least common multiple of
    each class's period ``gcd{ level(u) + 1 - level(v) : u -> v }`` (``level``: breadth-first
    distance from one state of the class). 1 for aperiodic chains."""
    P_pi = positive_graph(mdp.transition_under(policy))
    labels, closed = closed_components(P_pi)
    coo = sp.coo_array(P_pi)
    period = 1
    for k in closed:
        states = np.flatnonzero(labels == k)
        if states.size == 1:  # a closed single state has a self-loop: period 1
            continue
        inside = (labels[coo.row] == k) & (labels[coo.col] == k)
        level = np.asarray(csgraph.dijkstra(sp.csr_array(P_pi), directed=True, unweighted=True, indices=int(states[0])))
        gaps = level[coo.row[inside]] + 1 - level[coo.col[inside]]
        class_period = int(np.gcd.reduce(np.abs(gaps).astype(np.int64))) if gaps.size else 1
        period = math.lcm(period, max(class_period, 1))
    return period


def _run_episodes(env, model, policy, R, *, episodes, horizon, burn_in, seed, use_env_reward):
    """``(returns (episodes, n) on the per-step scale, steps taken, seconds)``."""
    gamma = model.mdp.gamma
    discounted = gamma < 1.0
    reset_on_termination = model.info.get("on_termination") == "reset"
    n, A = R.shape[0], model.mdp.n_actions
    cumulative = np.cumsum(policy, axis=1)
    cumulative[:, -1] = 1.0  # u < 1 always picks an action
    weights = gamma ** np.arange(horizon) if discounted else np.ones(horizon)
    sequence = np.random.SeedSequence(seed)
    env_seeds = sequence.generate_state(episodes, dtype=np.uint32)
    draws = np.random.default_rng(sequence.spawn(1)[0])
    length = burn_in + horizon
    returns = np.zeros((episodes, n))
    steps = 0
    started = time.perf_counter()
    for e in range(episodes):
        obs, _ = env.reset(seed=int(env_seeds[e]))
        s = model.state_index(obs)
        u = draws.random(length)
        total = np.zeros(n)
        for t in range(length):
            a = min(int(np.searchsorted(cumulative[s], u[t], side="right")), A - 1)
            obs, r, terminated, _truncated, _ = env.step(model.actions[a])
            steps += 1
            if t >= burn_in:
                if use_env_reward:
                    r = np.asarray(r, dtype=float).ravel()
                    if r.size != n:
                        raise InvalidProblemError(
                            f"the environment's reward has {r.size} component(s); the model has {n} agent(s)"
                        )
                    total += weights[t - burn_in] * r
                else:
                    total += weights[t - burn_in] * R[:, s, a]
            if terminated:
                if not reset_on_termination:
                    break  # absorbing: zero reward from here on
                obs, _ = env.reset()
            s = model.state_index(obs)
        returns[e] = (1.0 - gamma) * total if discounted else total / horizon
    return returns, steps, time.perf_counter() - started
