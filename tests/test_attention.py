import time

import numpy as np
import pytest

from policyagg.envs.attention import AttentionModel, one_agent_per_site, random_site_subsets
from policyagg.errors import InvalidProblemError


def test_transition_probabilities_by_hand():
    q = np.array([[0.2, 0.3], [0.4, 0.5]])  # 2 sites, 3 phases
    model = AttentionModel(2, 3, escalation=q)
    P = model.transition_matrix().toarray().reshape(9, 3, 9)

    def s(p0, p1):
        return p0 + 3 * p1

    # both sites at phase 1, attend site 0: site 0 -> 0; site 1 rises w.p. 0.5
    np.testing.assert_allclose(P[s(1, 1), 0, [s(0, 1), s(0, 2)]], [0.5, 0.5])
    # no attention from (0, 2): site 0 rises w.p. 0.2, site 1 stays at top
    np.testing.assert_allclose(P[s(0, 2), 2, [s(0, 2), s(1, 2)]], [0.8, 0.2])
    # attend site 1 at top: it drops to 1; site 0 at phase 1 rises w.p. 0.3
    np.testing.assert_allclose(P[s(1, 2), 1, [s(1, 1), s(2, 1)]], [0.7, 0.3])
    np.testing.assert_allclose(P.sum(axis=2), 1.0)


def test_rewards_by_hand():
    model = AttentionModel(2, 3, seed=0, penalty=100.0)
    w = np.array([[0.5, 0.0], [0.2, 1.0]])
    r = model.rewards(w)
    top_both = 2 + 3 * 2
    # no attention with both sites at top: agent 0 pays 100 * .5, agent 1 100 * 1.2
    np.testing.assert_allclose(r[:, top_both, 2], [-50.0, -120.0])
    # attend site 0: cost 1, site 1 still unattended at top
    np.testing.assert_allclose(r[:, top_both, 0], [-1.0, -101.0])
    np.testing.assert_allclose(r[:, 0, 1], [-1.0, -1.0])


def test_model_is_communicating_and_matches_sizes():
    model = AttentionModel(5, 3, seed=1)
    mdp = model.mdp()
    assert (mdp.n_states, mdp.n_actions) == (243, 6)
    assert mdp.structure.communicating
    assert mdp.gamma == 1.0 and mdp.rho[0] == 1.0


def test_escalation_is_seeded():
    a, b, c = AttentionModel(3, 3, seed=4), AttentionModel(3, 3, seed=4), AttentionModel(3, 3, seed=5)
    np.testing.assert_array_equal(a.q, b.q)
    assert not np.array_equal(a.q, c.q)


def test_large_model_builds_sparse_and_fast():
    start = time.perf_counter()
    P = AttentionModel(8, 3, seed=0).transition_matrix()
    assert P.shape == (6561 * 9, 6561)
    assert time.perf_counter() - start < 30  # generous: measured ~1 s; guards against S^3 loops
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


def test_populations():
    a = one_agent_per_site(5, 0)
    assert a.shape == (5, 5) and np.count_nonzero(a) == 5
    b = random_site_subsets(10, 5, 0)
    assert b.shape == (10, 5) and (np.count_nonzero(b, axis=1) >= 1).all()
    np.testing.assert_array_equal(b, random_site_subsets(10, 5, 0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_sites": 0}, r"`n_sites` must be a positive integer"),
        ({"n_phases": 1}, r"`n_phases` must be an integer >= 2"),
        (
            {"n_sites": 2, "escalation": np.ones((2, 1))},
            r"`escalation` must have shape \(n_sites, n_phases - 1\) = \(2, 2\)",
        ),
        ({"n_sites": 1, "escalation": [[1.5, 0.0]]}, r"`escalation` probabilities must lie in \[0, 1\]"),
    ],
)
def test_invalid_model(kwargs, match):
    with pytest.raises(InvalidProblemError, match=match):
        AttentionModel(**kwargs)


def test_invalid_site_weights():
    with pytest.raises(InvalidProblemError, match="`site_weights` must be non-negative"):
        AttentionModel(2, 3).rewards([[1.0, -1.0]])


@pytest.mark.parametrize("name, value", [("attention_cost", -1.0), ("penalty", float("nan")), ("penalty", "high")])
def test_invalid_costs(name, value):
    with pytest.raises(InvalidProblemError, match=f"`{name}` must be a non-negative finite number"):
        AttentionModel(2, 3, **{name: value})


# --------------------------------------------------------------------------- variants
def test_classic_variant_is_the_former_draw():
    """The default (classic) escalation is exactly the former U(0.1, 0.6) draw from the seed."""
    for seed in (0, 7):
        expected = np.random.default_rng(seed).uniform(0.1, 0.6, size=(5, 2))
        np.testing.assert_array_equal(AttentionModel(5, 3, seed=seed).q, expected)
        np.testing.assert_array_equal(AttentionModel(5, 3, seed=seed, variant="classic").q, expected)


def test_paper_variant_escalation_is_on_the_papers_grid():
    from policyagg.envs.attention import PAPER_ESCALATIONS

    np.testing.assert_array_equal(PAPER_ESCALATIONS, [x / 100 for x in range(50, 80)])
    q = np.concatenate([AttentionModel(5, 3, seed=s, variant="paper").q.ravel() for s in range(200)])
    assert np.all(np.isin(q, PAPER_ESCALATIONS))
    assert set(np.round(q * 100).astype(int)) == set(range(50, 80))  # every value drawn (2,000 draws of 30)
    np.testing.assert_array_equal(
        AttentionModel(5, 3, seed=3, variant="paper").q, AttentionModel(5, 3, seed=3, variant="paper").q
    )


def test_paper_populations():
    from policyagg.envs.attention import (
        PAPER_AGENT_MULTIPLES,
        PAPER_SITE_WEIGHTS,
        paper_one_agent_per_site,
        paper_random_site_subsets,
    )

    np.testing.assert_array_equal(PAPER_AGENT_MULTIPLES, [0.25 * k for k in range(1, 24)])
    a = paper_one_agent_per_site(5, 0)
    assert a.shape == (5, 5) and np.array_equal(a, np.diag(np.diag(a)))
    assert np.all(np.isin(np.diag(a), PAPER_AGENT_MULTIPLES))
    subsets = set()
    for seed in range(30):
        b = paper_random_site_subsets(10, 5, seed)
        assert b.shape == (10, 5) and (np.count_nonzero(b, axis=1) >= 1).all()
        # w_ij = m_i w_j on the agent's subset, w_j shared by every agent: find (m_i, w_j) by brute force
        sites = {}
        for i in range(10):
            on = np.flatnonzero(b[i])
            subsets.add(tuple(on))
            fits = [m for m in PAPER_AGENT_MULTIPLES if np.all(np.isin(np.round(b[i, on] / m, 12), PAPER_SITE_WEIGHTS))]
            assert fits
            for j in on:
                sites.setdefault(j, set()).add(round(b[i, j] / fits[0], 12) if len(fits) == 1 else None)
        assert all(len(values - {None}) <= 1 for values in sites.values())
    assert len(subsets) == 31  # every non-empty subset of 5 sites occurs (300 draws)
    np.testing.assert_array_equal(paper_random_site_subsets(10, 5, 1), paper_random_site_subsets(10, 5, 1))


def test_unknown_variant_is_refused():
    from policyagg.envs.attention import site_weights

    with pytest.raises(InvalidProblemError, match=r"`variant` must be one of 'classic', 'paper'; got 'papr'"):
        AttentionModel(5, 3, variant="papr")
    with pytest.raises(InvalidProblemError, match=r"`variant` must be one of"):
        site_weights("a", 5, 0, variant="papr")
    with pytest.raises(InvalidProblemError, match=r"`experiment` must be 'a'"):
        site_weights("c", 5, 0)
