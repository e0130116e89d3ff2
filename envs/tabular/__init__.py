"""From a Gymnasium environment to a tabular model: :func:`from_gymnasium`.

One function, four routes, tried in this order with ``route="auto"`` (the route taken is
``EnvModel.route``; why each earlier route was skipped is ``EnvModel.info["skipped"]``):

``"protocol"``
    ``env.unwrapped.tabular_model(gamma)`` exists and returns
    ``(TabularMDP, rewards (n, S, A), observations)`` with ``observations[s]`` the
    observation of state ``s`` (an int or a tuple of ints). Any environment can implement
    this to hand over its exact model; ``envs.attention_env.AttentionAllocation`` does.
``"model"``
    ``env.unwrapped.P`` in the toy-text format ``P[s][a] = [(prob, next_s, reward,
    terminated), ...]`` (FrozenLake, CliffWalking, Taxi). Exact. Duplicate next states are
    summed; ``r(s, a) = sum prob * reward``; ``rho`` is ``env.unwrapped.initial_state_distrib``.
``"enumerate"``
    The environment's state can be snapshotted and restored (a deep copy of
    ``env.unwrapped.__dict__`` that steps identically to the original) and the observation
    is Markov. States are found by breadth-first search from ``reset`` over
    ``(observation, action)``, restoring the snapshot of the state before every step.
    Exact: randomness is accepted only through ``env.unwrapped.np_random``, which is
    replaced by a scripted generator whose ``random``/``uniform``/``integers``/``choice``
    draws are fixed numbers ``u`` in ``[0, 1)``; the outcome is mapped on a grid of ``u``
    and every change point is located to the last bit by bisection over doubles, so each
    outcome's probability is the exact length of its interval of ``u`` (the
    environment's own comparisons, e.g. ``np_random.random() < p``, give ``p``).
    Caveat: a piece of ``u`` narrower than ``1 / PROBE_GRID`` that sits between two grid
    points with the *same* outcome is not seen; code of the form ``u < p`` or a
    categorical draw never does that. A step whose randomness comes from elsewhere (another
    generator, the global ``numpy.random``, ``random``), or that needs more than
    ``PROBE_BUDGET`` probe runs, makes this route fall back to ``"sampled"`` (the reason is
    in ``info["skipped"]``).
``"sampled"``
    ``n_samples`` sampled transitions per ``(state, action)``: from restored snapshots when
    possible, otherwise by exploring the live environment (least-tried action first,
    resetting at the end of each episode). ``info`` reports ``min_count`` (the fewest
    samples of any pair), ``max_std_error`` (largest standard error of an estimated
    probability, ``sqrt(p (1 - p) / count)``) and ``max_reward_std_error``. States reached
    with a probability too small to show up in the samples are missing from the model.

Spaces: observations must be ``Discrete``, ``MultiDiscrete`` or an integer ``Box`` with
finite bounds (they become ints or tuples of ints); actions ``Discrete``,
``MultiDiscrete`` or a small integer ``Box`` (model action ``a`` is the environment action
``EnvModel.actions[a]``). Anything else raises :class:`InvalidProblemError` naming the space.

Rewards: a scalar reward gives one agent; a vector reward (MO-Gymnasium environments, with
``reward_dim``) gives one agent per component.

Termination and truncation. Truncation (``TimeLimit``) is ignored: the model is the
stationary dynamics, and discounting plays the role of a horizon. With
``on_termination="absorb"`` (default) every terminating transition goes to ONE extra
absorbing state (the last state, observation ``None``) that loops on itself with reward 0
under every action; the terminating step's own reward is kept in ``r(s, a)``. With
``gamma < 1`` this is the usual episodic discounted return. With ``gamma = 1`` (average
reward) it is rarely what you want: the long-run average of any policy that terminates is
0, and every such policy looks the same. For average reward on an episodic task use
``on_termination="reset"``: terminating transitions then go straight back to ``rho`` (no
absorbing state), so the average is taken over a never-ending sequence of episodes (the
renewal-reward rate: expected episode reward / expected episode length).
:func:`policyagg.envs.rollout.rollout` follows the same convention.

Modules
-------
``convert``  :func:`from_gymnasium`: the route order and the fallback between routes.
``context``  :func:`make_env`, the validated options and lazily verified snapshot the routes share.
``routes``   the exact routes ``"protocol"``, ``"model"``, ``"enumerate"``.
``sampled``  the route ``"sampled"``.
``probe``    the scripted generator and the exact distribution of one random step.
``snapshot`` copying, restoring, verifying and reseeding an environment's state.
``spaces``   which spaces can be tabulated; observations and steps as hashable keys.
``model``    :class:`EnvModel` and its assembly from transition entries.

Examples
--------
>>> import gymnasium
>>> model = from_gymnasium(gymnasium.make("FrozenLake-v1"), gamma=0.95)
>>> model.route, model.mdp.n_states, model.info["absorbing"]
('model', 17, 16)
"""

from policyagg.envs.tabular.context import ON_TERMINATION, RESET_SAMPLES, make_env
from policyagg.envs.tabular.convert import ROUTES, from_gymnasium
from policyagg.envs.tabular.model import EnvModel, ModelWarning
from policyagg.envs.tabular.probe import PROBE_BUDGET, PROBE_GRID
from policyagg.envs.tabular.spaces import MAX_ACTIONS

__all__ = [
    "MAX_ACTIONS",
    "ON_TERMINATION",
    "PROBE_BUDGET",
    "PROBE_GRID",
    "RESET_SAMPLES",
    "ROUTES",
    "EnvModel",
    "ModelWarning",
    "from_gymnasium",
    "make_env",
]
