"""Route "sampled" on one working copy (issue 15, item 5): nothing big is copied per sample,
in-place changes of shared objects are still caught after every run, seeded runs repeat, and
Taxi with a fickle passenger converts with its deterministic moves intact."""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from policyagg.envs.tabular import from_gymnasium

TABLES: list[dict] = []  # the table each step of `BigTable` saw (module level: not environment state)


class BigTable(gymnasium.Env):
    """Discrete(3) cycle driven by a large constant table; action 1 advances iff a normal draw is
    below 0 (not enumerable exactly, so the route is "sampled")."""

    observation_space = spaces.Discrete(3)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.table = {s: {a: [(1.0, (s + a) % 3)] for a in range(2)} for s in range(3)}
        self.table["padding"] = [[i] * 10 for i in range(2_000)]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def step(self, action):
        TABLES.append(self.table)
        if action == 0 or self.np_random.normal() < 0.0:
            self.s = self.table[self.s][action][0][1]
        return self.s, float(self.s == 2), False, False, {}


class Lamp(gymnasium.Env):
    """A lamp kept in a list made in ``__init__`` and toggled IN PLACE by action 1 (action 0 waits).
    The observation is the lamp; the reward is a normal draw (so the route is "sampled")."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.lamp = [0]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.lamp[0] = 0
        return 0, {}

    def step(self, action):
        if action == 1:
            self.lamp[0] ^= 1
        return self.lamp[0], float(self.np_random.normal()), False, False, {}


def test_big_shared_table_is_not_copied_per_sample():
    TABLES.clear()
    model = from_gymnasium(BigTable(), gamma=0.9, n_samples=50, rng=0)
    assert model.route == "sampled" and model.info["shared"] == "yes"
    # the last 3 x 2 x 50 steps are the samples (earlier ones: the snapshot check and the enumerate
    # route's probes): one working copy, its table never copied
    samples = TABLES[-3 * 2 * 50 :]
    assert all(table is samples[0] for table in samples)
    i = model.state_index
    for s in range(3):
        assert model.mdp.P_dense[i(s), 0, i(s)] == 1.0
        advance = model.mdp.P_dense[i(s), 1, i((s + 1) % 3)]
        assert abs(advance - 0.5) <= 5 * np.sqrt(0.25 / 50)


@pytest.mark.parametrize("n_samples", [2, 50, 51])
def test_in_place_toggle_is_caught_after_every_run(n_samples):
    """Sharing the lamp's list would leave it toggled between samples, and an even number of
    samples per pair would toggle it back by the end of the pair: only a check after every run
    sees it. Owning every attribute, each sample starts from the state's own lamp."""
    model = from_gymnasium(Lamp(), gamma=0.9, n_samples=n_samples, rng=0)
    P, i = model.mdp.P_dense, model.state_index
    for lamp in (0, 1):
        assert P[i(lamp), 0, i(lamp)] == 1.0
        assert P[i(lamp), 1, i(1 - lamp)] == 1.0
    assert model.route == "sampled" and model.info["shared"].startswith("no: a step")


def test_seeded_runs_repeat_and_seeds_differ():
    a, b, c = (from_gymnasium(BigTable(), gamma=0.9, n_samples=20, rng=seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(a.mdp.P_dense, b.mdp.P_dense)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.mdp.P_dense, c.mdp.P_dense)


def test_taxi_fickle_passenger_keeps_its_deterministic_moves():
    """With the passenger outside the taxi, Taxi's moves are the deterministic ones of its `P`
    (the fickle passenger only changes destination on the first move after a pickup)."""
    exact = from_gymnasium(gymnasium.make("Taxi-v4"), gamma=0.9)
    model = from_gymnasium(gymnasium.make("Taxi-v4", fickle_passenger=True), gamma=0.9, n_samples=4, rng=0)
    assert model.route == "sampled" and model.info["shared"] == "yes"
    assert "reset" in model.info["skipped"]["enumerate"]
    base = gymnasium.make("Taxi-v4").unwrapped
    checked = 0
    for s, obs in enumerate(model.observations):
        if obs is None or base.decode(obs)[2] == 4:  # absorbing, or the passenger in the taxi
            continue
        e = exact.state_index(obs)
        for a in range(6):
            row = model.mdp.P_dense[s, a]
            nxt = [model.observations[t] for t in np.flatnonzero(row)]
            assert len(nxt) == 1 and row.max() == 1.0
            want = exact.observations[int(np.argmax(exact.mdp.P_dense[e, a]))]
            assert nxt[0] == want
            assert model.rewards[0, s, a] == exact.rewards[0, e, a]
            checked += 1
    assert checked >= 6 * 250
