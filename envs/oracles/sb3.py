"""A deep-RL oracle: any stable-baselines3 algorithm trained on a weighted sum of a vector reward.

``best_response(w)`` trains the algorithm (PPO, DQN, A2C, ...) on the scalarised reward

.. math:: r_w(s, a) = \\sum_i \\bar w_i\\, r_i(s, a), \\qquad \\bar w = w / \\|w\\|_1

(the best response is invariant to scaling ``w``; training on ``\\bar w`` keeps the reward scale
fixed), through :class:`ScalarizedReward`, which reads the vector reward as MO-Gymnasium returns
it (a numpy vector) or from ``info["rewards"]``. ``evaluate(pi)`` runs seeded rollouts and
returns each agent's *per-step* return, the units of :attr:`policyagg.result.Result.returns`:

.. math:: \\hat J_i = \\frac{1}{E} \\sum_{e=1}^{E} (1 - \\gamma) \\sum_{t < T_e} \\gamma^t r_{i,t}^{(e)}

(``gamma == 1``: each episode's mean reward), with standard errors ``std / sqrt(E)`` over the
``E`` episodes. An episode ends when the environment terminates or truncates it, or after
``horizon`` steps. Every policy is evaluated on the same environment seeds (common random
numbers), so differences between policies are estimated with less noise.

Trained policies are checkpointed in ``folder`` without pickle: the policy's ``state_dict`` is
written with ``torch.save`` and read back with ``torch.load(weights_only=True)`` into a freshly
built model of the same spec, next to a JSON file holding that spec and the file's SHA-256
(both written atomically). A checkpoint's name is a hash of everything that determines the
training (algorithm, options, timesteps, seed, gamma, environment, normalised weights), so a
killed run that asks for the same best response again loads it instead of retraining.

Reproducibility: one ``seed`` seeds Python, numpy and torch (SB3's ``set_random_seed``), the
training environment and the action space; evaluation episodes use environment seeds
``eval_seed + e``. Same seed, same numbers on one machine (with ``torch.set_num_threads(1)``).
RL comes with no optimality guarantee, so :attr:`SB3Oracle.tolerance` is ``None`` and the rules
over oracles report their certificates with status ``"gap"``.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import CheckpointWarning, InvalidProblemError, check_count, check_real
from policyagg.io import atomic_write_bytes, atomic_write_json
from policyagg.oracle import Evaluation, OraclePolicy, check_weights

try:
    import stable_baselines3
    import torch
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the deep-RL oracle needs stable-baselines3 and torch: `pip install 'policyagg[rl]'` "
        "(on a CPU-only machine install a CPU build of torch first, e.g. `pip install torch==2.13.0` "
        "from the CPU wheel index, or pip fetches a multi-GB CUDA build)"
    ) from exc

#: The prefix of the oracle names in configurations: ``"sb3:PPO"``.
SB3_PREFIX = "sb3:"
#: Format of the checkpoint JSON files.
CHECKPOINT_FORMAT = 1
CHECKPOINT_KIND = "sb3-best-response"
#: Default evaluation horizon when ``gamma < 1``: ``gamma^H <= DISCOUNT_CUTOFF`` (the environment may end episodes earlier).
DISCOUNT_CUTOFF = 1e-4
#: Default evaluation horizon when ``gamma == 1`` (the environment may end episodes earlier).
AVERAGE_HORIZON = 1000
#: Environments stepped side by side during evaluation (their observations go through the network in one batch).
EVAL_BATCH = 50

EnvFactory = Callable[[], gym.Env]


# ---------------------------------------------------------------------- the reward wrapper
def vector_reward(reward: Any, info: Mapping[str, Any], n: int) -> NDArray[np.float64]:
    """The vector reward of one step, shape (n,): the reward itself when it is a vector
    (MO-Gymnasium's convention), else ``info["rewards"]``."""
    if np.ndim(reward) >= 1:
        vector = np.asarray(reward, dtype=float).reshape(-1)
    elif "rewards" in info:
        vector = np.asarray(info["rewards"], dtype=float).reshape(-1)
    else:
        raise InvalidProblemError(
            "the environment returned a scalar reward and no `info['rewards']`; a multi-objective "
            "environment must return a vector reward (as MO-Gymnasium does) or put it in `info['rewards']`"
        )
    if vector.shape != (n,):
        raise InvalidProblemError(
            f"the environment's vector reward has {vector.size} entries; expected {n}, one per agent"
        )
    return vector


def reward_dim(env: gym.Env) -> int | None:
    """The number of reward components an environment declares (``reward_dim`` or ``reward_space``), or ``None``."""
    raw = env.unwrapped
    dim = getattr(raw, "reward_dim", None)
    space = getattr(raw, "reward_space", None)
    if dim is None and space is not None:
        dim = int(np.prod(space.shape))
    return None if dim is None else int(dim)


class ScalarizedReward(gym.Wrapper):
    """The environment with the scalar reward ``w @ r`` in place of its vector reward ``r``
    (a numpy vector as in MO-Gymnasium, or ``info["rewards"]``); the vector is kept in
    ``info["rewards"]``."""

    def __init__(self, env: gym.Env, weights: ArrayLike):
        super().__init__(env)
        dim = reward_dim(env)
        w = np.asarray(weights, dtype=float).reshape(-1)
        self.weights = check_weights(w, w.size if dim is None else dim)
        self.weights.flags.writeable = False

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        vector = vector_reward(reward, info, self.weights.size)
        return obs, float(self.weights @ vector), terminated, truncated, {**info, "rewards": vector}


# ---------------------------------------------------------------------- training helpers
class _Progress(BaseCallback):  # type: ignore[misc]  # Any when mypy runs without the extra
    """Counts finished training episodes and shows a tqdm bar of timesteps (``show``: ``None``
    shows it on a terminal only)."""

    def __init__(self, total: int, description: str, show: bool | None):
        super().__init__()
        from tqdm.auto import tqdm

        self.episodes = 0
        self._bar = tqdm(
            total=total, desc=description, unit="step", leave=False, disable=None if show is None else not show
        )

    def _on_step(self) -> bool:
        self.episodes += int(np.sum(self.locals.get("dones", 0)))
        # SB3 may overshoot `total` to finish its last rollout
        self._bar.update(max(0, min(self.training_env.num_envs, self._bar.total - self._bar.n)))
        return True

    def _on_training_end(self) -> None:
        self._bar.close()


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The stable-baselines3 (or sb3-contrib) algorithm class called ``name``."""
    modules = [stable_baselines3]
    try:
        import sb3_contrib

        modules.append(sb3_contrib)
    except ImportError:
        pass
    for module in modules:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseAlgorithm):
            return cls
    known = sorted(
        n
        for m in modules
        for n in dir(m)
        if isinstance(getattr(m, n), type) and issubclass(getattr(m, n), BaseAlgorithm)
    )
    raise InvalidProblemError(f"`algorithm` {name!r} is not a stable-baselines3 algorithm; use one of {known}")


def _env_factory(env: Any, env_kwargs: Mapping[str, Any]) -> tuple[EnvFactory, str]:
    """A factory of fresh environments and a name for it (part of every checkpoint's key), from a
    Gymnasium id, an ``EnvSpec``, an environment made by ``gymnasium.make`` (re-made from its
    spec) or a function returning a new environment."""
    if isinstance(env, gym.Env):
        if env.spec is None:
            raise InvalidProblemError(
                "`env` is an environment without a Gymnasium spec, so fresh copies cannot be made; "
                "give its registered id or a function returning a new environment"
            )
        env = env.spec
    if isinstance(env, gym.envs.registration.EnvSpec):
        if env_kwargs:
            raise InvalidProblemError("`env_kwargs` applies only to an environment given by its Gymnasium id")
        spec = env
        return (lambda: gym.make(spec)), f"{spec.id}{json.dumps(spec.kwargs, sort_keys=True, default=str)}"
    if isinstance(env, str):
        if env not in gym.registry:
            try:  # MO-Gymnasium registers its environments on import
                import mo_gymnasium  # noqa: F401
            except ImportError:
                pass
        if env not in gym.registry:
            raise InvalidProblemError(f"`env` {env!r} is not a registered Gymnasium environment id")
        kwargs = dict(env_kwargs)
        name = f"{env}{json.dumps(kwargs, sort_keys=True, default=str)}"
        # Gymnasium's passive checker warns on every vector reward (as MO-Gymnasium's make, it is off)
        kwargs.setdefault("disable_env_checker", True)
        return (lambda: gym.make(env, **kwargs)), name
    if not callable(env):
        raise InvalidProblemError(
            f"`env` must be a Gymnasium id, spec or environment, or a function returning a new environment; got {env!r}"
        )
    if env_kwargs:
        raise InvalidProblemError("`env_kwargs` applies only to an environment given by its Gymnasium id")
    name = f"{getattr(env, '__module__', '?')}.{getattr(env, '__qualname__', type(env).__name__)}"
    return env, name


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON (classes and functions by their qualified name)."""
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: getattr(v, "__qualname__", repr(v))))


# ---------------------------------------------------------------------- the oracle
class SB3Oracle:
    """A policy-optimisation oracle (:class:`policyagg.oracle.Oracle`) that trains a
    stable-baselines3 algorithm on the scalarised reward (see the module docstring).

    Parameters
    ----------
    env : str, EnvSpec, gymnasium.Env or callable
        A Gymnasium id (``env_kwargs`` passed to ``gymnasium.make``), its spec, an environment
        made by ``gymnasium.make`` (copies are made from its spec) or a function returning a new
        environment; the environment has a vector reward. Its episodes must end (a time limit) or set ``horizon``.
    algorithm : str
        A stable-baselines3 class name: ``"PPO"``, ``"DQN"``, ``"A2C"``, ...
    timesteps : int
        Environment steps of training per best response.
    seed : int
        Seeds training (Python, numpy, torch, environment, action space); evaluation episodes
        use environment seeds ``eval_seed + e`` (default ``eval_seed = seed + 10**6``).
    folder : path, optional
        Where checkpoints go (``None``: kept in memory only, nothing resumes).
    gamma : float
        The discount of training and of evaluated returns.
    eval_episodes : int
        Episodes per evaluation.
    horizon : int, optional
        Longest evaluated episode (default: ``gamma^H <= 1e-4``, or 1000 when ``gamma == 1``).
    policy : str
        The SB3 policy (``"MlpPolicy"``). ``algorithm_options`` go to the algorithm's constructor
        (``learning_rate``, ``n_steps``, ``policy_kwargs``, ...).
    deterministic : bool
        Evaluate the trained policy's greedy action (``True``) or sample from it.
    progress : bool, optional
        A tqdm bar of training steps (default: on a terminal only).
    names : agent names (default ``env.unwrapped.names`` or ``agent0``, ...).

    Attributes
    ----------
    calls : int
        ``best_response`` calls so far (including those answered from checkpoints).
    episodes : int
        Episodes run in this process: training and evaluation (a policy loaded from its
        checkpoint costs none; its recorded training episodes are in ``training_episodes``).
    training_episodes : int
        Training episodes of every best response returned, loaded ones included.
    trained : int
        Best responses trained in this process (the others were loaded).
    """

    #: RL gives no optimality guarantee: the stated best-response accuracy is unknown.
    tolerance: float | None = None

    def __init__(
        self,
        env: Any,
        *,
        algorithm: str = "PPO",
        timesteps: int = 20_000,
        seed: int = 0,
        folder: str | Path | None = None,
        gamma: float = 0.99,
        eval_episodes: int = 100,
        eval_seed: int | None = None,
        horizon: int | None = None,
        policy: str = "MlpPolicy",
        algorithm_options: Mapping[str, Any] | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        deterministic: bool = True,
        progress: bool | None = None,
        names: Sequence[str] | None = None,
        device: str = "cpu",
    ) -> None:
        self.make_env, self.env_name = _env_factory(env, env_kwargs or {})
        self.algorithm = algorithm_class(algorithm)
        self.timesteps = check_count("timesteps", timesteps)
        self.seed = check_count("seed", seed, minimum=0)
        self.eval_seed = self.seed + 10**6 if eval_seed is None else check_count("eval_seed", eval_seed, minimum=0)
        self.gamma = check_real("gamma", gamma)
        if not 0 < self.gamma <= 1:
            raise InvalidProblemError(f"`gamma` must be in (0, 1]; got {gamma}")
        self.eval_episodes = check_count("eval_episodes", eval_episodes, minimum=2, why="standard errors need two")
        if horizon is None:
            horizon = (
                AVERAGE_HORIZON if self.gamma == 1 else math.ceil(math.log(DISCOUNT_CUTOFF) / math.log(self.gamma))
            )
        self.horizon = check_count("horizon", horizon)
        self.policy_name = policy
        self.algorithm_options = dict(algorithm_options or {})
        self.deterministic = bool(deterministic)
        self.progress = None if progress is None else bool(progress)
        self.device = device
        self.folder = None if folder is None else Path(folder)

        probe = self.make_env()
        try:
            n = reward_dim(probe)
            if n is None:
                raise InvalidProblemError(
                    "the environment declares no `reward_dim` or `reward_space`; give a multi-objective "
                    "environment (vector reward, MO-Gymnasium style)"
                )
            default_names = getattr(probe.unwrapped, "names", None) or tuple(f"agent{i}" for i in range(n))
            self.names: tuple[str, ...] = tuple(str(x) for x in (default_names if names is None else names))
            if len(self.names) != n:
                raise InvalidProblemError(f"`names` must name the {n} reward components; got {len(self.names)} names")
            self._spaces = f"{probe.observation_space!r} {probe.action_space!r}"
        finally:
            probe.close()
        self.calls = 0
        self.episodes = 0
        self.training_episodes = 0
        self.trained = 0  # best responses trained in this process (the rest were loaded from checkpoints)
        self._models: dict[str, BaseAlgorithm] = {}
        self._policies: dict[str, OraclePolicy] = {}
        self._evaluations: dict[tuple[str, int], Evaluation] = {}

    # ------------------------------------------------------------------ the protocol
    def best_response(self, weights: ArrayLike) -> OraclePolicy:
        """A policy trained to maximise ``sum_i w_i J_i`` (loaded from its checkpoint if one
        was trained for the same weights, seed and spec)."""
        w = check_weights(weights, len(self.names))
        key, spec = self._key(w)
        self.calls += 1
        if key not in self._models:
            model = self._load(key, spec)
            if model is None:
                model = self._train(key, spec, np.asarray(spec["weights"], dtype=float))
            self._models[key] = model
        if key not in self._policies:
            path = None if self.folder is None else f"{key}.pt"
            self._policies[key] = OraclePolicy(key=key, weights=w, path=path)
        return self._policies[key]

    def evaluate(self, policy: OraclePolicy, episodes: int | None = None) -> Evaluation:
        """Each agent's per-step return of ``policy`` over ``episodes`` (default
        ``eval_episodes``) seeded rollouts, with standard errors (see the module docstring)."""
        E = self.eval_episodes if episodes is None else check_count("episodes", episodes, minimum=2)
        cache = (self._resolve(policy)[0], E)
        if cache not in self._evaluations:
            returns = self.episode_returns(policy, np.arange(E) + self.eval_seed)
            self._evaluations[cache] = summarize(returns)
        return self._evaluations[cache]

    # ------------------------------------------------------------------ rollouts
    def model(self, policy: OraclePolicy) -> BaseAlgorithm:
        """The trained SB3 model of ``policy``: found by its key, its checkpoint ``path`` (in
        ``folder``) or the weights it answers (a caller may rename the key, as the
        configurations' checkpointing does); loaded from ``folder`` if needed."""
        key, spec = self._resolve(policy)
        if key in self._models:
            return self._models[key]
        if self.folder is None:
            raise InvalidProblemError(f"policy {policy.key!r} was not trained by this oracle and has no checkpoint")
        if spec is None:
            meta = self._read_meta(self.folder / f"{key}.json")
            if meta is None:
                raise InvalidProblemError(f"no checkpoint for policy {policy.key!r} in {self.folder}")
            spec = meta["spec"]
        model = self._load(key, spec)
        if model is None:
            raise InvalidProblemError(
                f"no valid checkpoint for policy {policy.key!r} in {self.folder} (missing, damaged or of "
                "another spec); train it again"
            )
        self._models[key] = model
        return model

    def _key(self, weights: NDArray[np.float64]) -> tuple[str, dict[str, Any]]:
        """The checkpoint key and spec of the best response to ``weights`` (scaled to ``||w||_1 = 1``)."""
        scale = float(np.abs(weights).sum())
        spec = self._spec(weights / scale if scale > 0 else weights)
        return "br-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16], spec

    def _resolve(self, policy: OraclePolicy) -> tuple[str, dict[str, Any] | None]:
        """This oracle's key of ``policy`` (and its spec when known from the weights)."""
        if policy.key in self._models:
            return policy.key, None
        if policy.path is not None:
            return Path(policy.path).stem, None
        if np.any(policy.weights):
            return self._key(check_weights(policy.weights, len(self.names)))
        return policy.key, None

    def episode_returns(self, policy: OraclePolicy, seeds: ArrayLike) -> NDArray[np.float64]:
        """Per-step returns of one episode per environment seed, shape (E, n)."""
        model = self.model(policy)
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        out = np.empty((seeds.size, len(self.names)))
        if not self.deterministic:
            torch.manual_seed(int(seeds[0]) if seeds.size else 0)
        for start in range(0, seeds.size, EVAL_BATCH):
            chunk = seeds[start : start + EVAL_BATCH]
            out[start : start + chunk.size] = self._rollouts(model, chunk)
        self.episodes += int(seeds.size)
        return out

    def _rollouts(self, model: BaseAlgorithm, seeds: NDArray[np.int64]) -> NDArray[np.float64]:
        """Episodes of ``model`` in lock step, one environment per seed; per-step returns (E, n)."""
        envs = [self.make_env() for _ in seeds]
        n, E = len(self.names), seeds.size
        total = np.zeros((E, n))
        steps = np.zeros(E)
        obs = [env.reset(seed=int(seed))[0] for env, seed in zip(envs, seeds)]
        active = np.ones(E, dtype=bool)
        discount = 1.0
        try:
            for _ in range(self.horizon):
                idx = np.flatnonzero(active)
                if idx.size == 0:
                    break
                batch = np.stack([np.asarray(obs[i]) for i in idx])
                with torch.no_grad():
                    actions, _ = model.policy.predict(batch, deterministic=self.deterministic)
                for j, i in enumerate(idx):
                    obs[i], reward, terminated, truncated, info = envs[i].step(actions[j])
                    total[i] += discount * vector_reward(reward, info, n)
                    steps[i] += 1
                    if terminated or truncated:
                        active[i] = False
                discount *= self.gamma
        finally:
            for env in envs:
                env.close()
        if self.gamma == 1:
            return total / np.maximum(steps, 1)[:, None]
        return (1 - self.gamma) * total

    # ------------------------------------------------------------------ training and checkpoints
    def _spec(self, unit: NDArray[np.float64]) -> dict[str, Any]:
        """Everything that determines a trained best response (hashed into its key)."""
        return {
            "algorithm": self.algorithm.__name__,
            "policy": self.policy_name,
            "options": _jsonable(self.algorithm_options),
            "timesteps": self.timesteps,
            "seed": self.seed,
            "gamma": self.gamma,
            "env": self.env_name,
            "spaces": self._spaces,
            "weights": [float(f"{x:.12g}") for x in unit],
        }

    def _build(self, unit: ArrayLike, seed: int) -> BaseAlgorithm:
        env = ScalarizedReward(self.make_env(), unit)
        options = {"gamma": self.gamma, "seed": seed, "device": self.device, "verbose": 0, **self.algorithm_options}
        return self.algorithm(self.policy_name, env, **options)

    def _train(self, key: str, spec: dict[str, Any], unit: NDArray[np.float64]) -> BaseAlgorithm:
        started = time.monotonic()
        model = self._build(unit, self.seed)
        progress = _Progress(self.timesteps, f"best response {self.calls} ({key})", self.progress)
        model.learn(total_timesteps=self.timesteps, callback=progress, progress_bar=False)
        self.trained += 1
        self.training_episodes += progress.episodes
        self.episodes += progress.episodes
        if self.folder is not None:
            buffer = io.BytesIO()
            torch.save(model.policy.state_dict(), buffer)
            payload = buffer.getvalue()
            atomic_write_bytes(self.folder / f"{key}.pt", payload)
            meta = {
                "format_version": CHECKPOINT_FORMAT,
                "kind": CHECKPOINT_KIND,
                "key": key,
                "spec": spec,
                "checkpoint": f"{key}.pt",
                "sha256": hashlib.sha256(payload).hexdigest(),
                "training_episodes": progress.episodes,
                "training_seconds": time.monotonic() - started,
            }
            atomic_write_json(self.folder / f"{key}.json", meta)
        return model

    def _read_meta(self, path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(f"{path}: unreadable checkpoint ({exc}); training again", CheckpointWarning, stacklevel=3)
            return None
        if not isinstance(meta, dict) or meta.get("kind") != CHECKPOINT_KIND or "spec" not in meta:
            warnings.warn(f"{path}: not a best-response checkpoint; training again", CheckpointWarning, stacklevel=3)
            return None
        return meta

    def _load(self, key: str, spec: dict[str, Any]) -> BaseAlgorithm | None:
        """The checkpointed model for ``key`` if a valid one matching ``spec`` is in ``folder``."""
        if self.folder is None:
            return None
        meta = self._read_meta(self.folder / f"{key}.json")
        if meta is None:
            return None
        path = self.folder / f"{key}.pt"
        try:
            payload = path.read_bytes()
        except OSError as exc:
            warnings.warn(
                f"{path}: cannot read the checkpoint ({exc}); training again", CheckpointWarning, stacklevel=3
            )
            return None
        if meta.get("spec") != spec or meta.get("sha256") != hashlib.sha256(payload).hexdigest():
            warnings.warn(
                f"{path}: the checkpoint does not match its record (damaged or another spec); training again",
                CheckpointWarning,
                stacklevel=3,
            )
            return None
        model = self._build(spec["weights"], int(spec["seed"]))
        try:
            state = torch.load(io.BytesIO(payload), weights_only=True, map_location=self.device)
            model.policy.load_state_dict(state)
        except Exception as exc:  # torch raises RuntimeError, pickle errors, ... on a bad file
            warnings.warn(
                f"{path}: cannot load the checkpoint ({exc}); training again", CheckpointWarning, stacklevel=3
            )
            return None
        self.training_episodes += int(meta.get("training_episodes", 0))
        return model


def make_oracle(algorithm: str, env: Any = None, **options: Any) -> SB3Oracle:
    """The oracle a configuration names: ``make_oracle("sb3:PPO", env, seed=0, folder=...)`` (the
    ``"sb3:"`` prefix is optional) is ``SB3Oracle(env, algorithm="PPO", ...)``."""
    name = algorithm[len(SB3_PREFIX) :] if algorithm.startswith(SB3_PREFIX) else algorithm
    if env is None:
        raise InvalidProblemError(f"the {SB3_PREFIX}{name} oracle needs an environment (`env`)")
    return SB3Oracle(env, algorithm=name, **options)


def check_options(algorithm: str, options: Mapping[str, Any]) -> None:
    """Check an oracle's name and option names before any work starts (values are checked when it is built)."""
    algorithm_class(algorithm[len(SB3_PREFIX) :] if algorithm.startswith(SB3_PREFIX) else algorithm)
    allowed = [p for p in inspect.signature(SB3Oracle.__init__).parameters if p not in ("self", "env", "algorithm")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidProblemError(
            f"unknown option {unknown[0]!r} of the sb3 oracle; its options are: {', '.join(allowed)}"
        )


def summarize(returns: ArrayLike) -> Evaluation:
    """Mean per-step returns over episodes (rows) with standard errors ``std(ddof=1) / sqrt(E)``."""
    J = np.asarray(returns, dtype=float)
    E = J.shape[0]
    se = J.std(axis=0, ddof=1) / math.sqrt(E) if E > 1 else np.full(J.shape[1], np.inf)
    return Evaluation(returns=J.mean(axis=0), standard_errors=se, episodes=E)


def rollout_lottery(
    oracle: SB3Oracle, policies: Sequence[OraclePolicy], probabilities: ArrayLike, *, episodes: int, seed: int
) -> Evaluation:
    """Execute a lottery: per episode, draw one of ``policies`` with ``probabilities`` (seeded by
    ``seed``) and run it on environment seed ``seed + e``. Mean per-step returns over the episodes
    with standard errors (the ex-ante returns, estimated with the lottery's own randomness)."""
    E = check_count("episodes", episodes, minimum=2)
    p = np.asarray(probabilities, dtype=float)
    if p.shape != (len(policies),):
        raise InvalidProblemError(f"`probabilities` must have one entry per policy ({len(policies)})")
    drawn = np.random.default_rng(seed).choice(len(policies), size=E, p=p / p.sum())
    returns = np.empty((E, len(oracle.names)))
    env_seeds = np.arange(E, dtype=np.int64) + seed
    for k, policy in enumerate(policies):
        rows = np.flatnonzero(drawn == k)
        if rows.size:
            returns[rows] = oracle.episode_returns(policy, env_seeds[rows])
    return summarize(returns)


def lottery_policies(oracle: SB3Oracle, lottery: Any) -> list[OraclePolicy]:
    """The support policies of a lottery built from ``oracle`` (by the keys and checkpoint
    paths in ``lottery.diagnostics``)."""
    keys = lottery.diagnostics.get("support_keys")
    paths = lottery.diagnostics.get("support_paths") or [None] * len(keys or [])
    if keys is None or len(keys) != lottery.size:
        raise InvalidProblemError("the lottery does not name its support policies (`diagnostics['support_keys']`)")
    return [
        oracle._policies.get(key) or OraclePolicy(key=key, weights=np.zeros(len(oracle.names)), path=path)
        for key, path in zip(keys, paths)
    ]


__all__ = [
    "SB3_PREFIX",
    "SB3Oracle",
    "ScalarizedReward",
    "algorithm_class",
    "check_options",
    "lottery_policies",
    "make_oracle",
    "rollout_lottery",
    "summarize",
    "vector_reward",
]
