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
    The environment's state can be snapshotted and restored (a deep copy of the
    ``__dict__`` of ``env.unwrapped`` and of its wrappers, that steps identically to the
    original). States are found by breadth-first search from ``reset`` over the
    environment's *internal* states (:mod:`.states`): one working copy is reused, a state
    is what a step reassigned (immutable values shared, mutable ones owned), and every
    other object is shared and proved unchanged after each run; a step that
    changes a shared object in place makes the search start over with every attribute
    copied (``info["shared"]``). Rendering resources held in a layer's attribute (pygame's
    fonts, windows, clocks: :data:`~.snapshot.RENDERING_PACKAGES`) are shared and never copied;
    they are taken as constants that do not change what ``step`` returns (``info["rendering"]``
    names them). The model is over observations, so it is exact only when every
    internal state behind an observation steps like the first one (same distribution of
    observation, reward and termination under every action); otherwise the route is
    unavailable with a :class:`ModelWarning` ("does not identify the environment's state").
    Exact: randomness is accepted only through ``env.unwrapped.np_random``,
    which is replaced by a scripted generator whose ``random``/``uniform``/``integers``/``choice``
    draws are fixed numbers ``u`` in ``[0, 1)`` (and so are the ``random`` module's
    ``random``, ``uniform``, ``randint``, ``randrange`` and ``choice``, looked up on the
    module at call time); the outcome is mapped on a grid of ``u``
    and every change point is located to the last bit by bisection over doubles, so each
    outcome's probability is the exact length of its interval of ``u`` (the
    environment's own comparisons, e.g. ``np_random.random() < p``, give ``p``).
    Caveat: a piece of ``u`` narrower than ``1 / PROBE_GRID`` that sits between two grid
    points with the *same* outcome is not seen; code of the form ``u < p`` or a
    categorical draw never does that.
    Every other generator is watched during the probes, and a draw from any of them makes
    this route fall back to ``"sampled"`` with a :class:`ModelWarning` naming it: a
    ``numpy.random.Generator``, ``RandomState`` or ``random.Random`` held anywhere in the
    environment or its wrappers (its state changes), one the step creates, the ``random``
    module's generator (any use other than the scripted functions), the global
    ``numpy.random``, and generators at the top level of the modules
    that define the environment and its wrappers (checked after every batch of
    :data:`~.routes.BATCH` states). Randomness from nowhere that can be
    watched (fresh OS entropy, the clock) is caught only when two identical restored runs,
    or the snapshot check's copies, differ; a source like that which rarely changes the
    outcome can still go unseen. A step that needs more than ``PROBE_BUDGET`` probe runs,
    or draws with an unsupported method (e.g. ``normal``), falls back too (the reason is
    in ``info["skipped"]``). A progress bar (tqdm, shown on a terminal) carries an early
    estimate of the number of states (the product of the values each observation
    component took so far); when it exceeds ``2 x max_states`` the conversion is refused
    at once (the estimate can be too high when components are correlated: the message
    says so and gives it).
``"sampled"``
    ``n_samples`` sampled transitions per ``(state, action)``: from restored states when
    possible (one working copy as in ``"enumerate"``, set to each observation's first internal
    state by restoring what changed; shared objects proved unchanged after every sample, else
    every attribute is copied per sample, ``info["shared"]``; the environment's generators
    and the process-wide ones seeded once from ``rng`` and drawn from as one stream each),
    otherwise by exploring the live environment (least-tried action
    first, resetting at the end of each episode; a :class:`ModelWarning` when some pair got
    fewer than ``n_samples``). ``info`` reports ``min_count`` (the fewest
    samples of any pair), ``max_std_error`` (largest standard error of an estimated
    probability, ``sqrt(p (1 - p) / count)``) and ``max_reward_std_error``. States reached
    with a probability too small to show up in the samples are missing from the model.

Start distribution: read from the environment (``"protocol"``, ``"model"``), probed
exactly from ``reset``, or else estimated from ``reset_samples`` seeded resets (``info``
then has ``reset_samples``, ``start_states`` and the Good--Turing estimate
``unseen_start_mass``; a :class:`ModelWarning` when new start states still appeared in the
last 10% of the samples). A model whose ``rho`` was sampled has ``info["exact"] = False``.

Wrappers (:mod:`.chain`): the model describes the environment as the user steps it.
Transparent wrappers (``TimeLimit``, ``OrderEnforcing``, the env checker, statistics,
rendering) are skipped; value maps (``ObservationWrapper``, ``RewardWrapper``,
``ActionWrapper`` subclasses that override only ``observation``/``reward``/``action``,
assumed to be fixed functions; checked not to draw random numbers) are applied to the
table of the ``"model"`` route; any other wrapper makes the table routes unavailable and is
stepped by ``"enumerate"``/``"sampled"``; wrappers whose output depends on the history
(``StickyAction``, ``DelayObservation``, ``NormalizeObservation``, ``NormalizeReward``)
are refused by name. ``"protocol"`` applies only when no wrapper changes what ``step``
returns. The user's environment itself is never stepped by the exact routes.

Spaces: observations (of the environment as wrapped) must be ``Discrete``,
``MultiDiscrete``, ``MultiBinary``, an integer ``Box`` with finite bounds, or a ``Tuple``
or ``Dict`` of these (they become ints or nested tuples of ints; ``Dict`` components in
sorted key order); actions ``Discrete``, ``MultiDiscrete`` or a small integer ``Box``
(model action ``a`` is the environment action ``EnvModel.actions[a]``). Anything else
raises :class:`InvalidProblemError` naming the space (and the component).

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
``context``  :func:`make_env`, the validated options and lazily verified snapshot the routes share; sampled resets.
``chain``    which wrappers are transparent, value maps, stepped, or refused.
``routes``   the exact routes ``"protocol"``, ``"model"``, ``"enumerate"``.
``sampled``  the route ``"sampled"``.
``probe``    the scripted generator and the exact distribution of one random step.
``states``   compact internal states of one reused working copy, for ``"enumerate"``.
``snapshot`` copying, restoring, verifying and reseeding an environment's state; the generators it can draw from.
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
