"""Norms (policyagg.norms) and their solver side (policyagg.solvers.norms).

Checks are independent of the code under test: forbidden actions are checked on the result's
policy and its exact occupancy (``mdp.occupancy(policy)``), optima against scipy's linprog on
rows written out by loops (tests/reference.py), conflicts and chance constraints against
brute force over subsets.
"""

from itertools import combinations

import numpy as np
import pytest
from conftest import RULE_OPTIONS, leaky_average, random_problems
from hypothesis import given, settings
from reference import dense_polytope, lp_max
from scipy.optimize import linprog

from policyagg import solvers
from policyagg.errors import InfeasibleError, InvalidProblemError, NormConflictError
from policyagg.lottery import Lottery
from policyagg.mdp import TabularMDP
from policyagg.norms import (
    AllOf,
    AmbiguousNorm,
    Guarantee,
    Norms,
    Obligation,
    Prohibition,
    Rate,
    Role,
    big_m,
    upper_rows,
)
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.norms import (
    ALL_NORMS,
    conflicting_norms,
    norm_prices,
    resolve_norms,
    run_with_norms,
    selection_program,
)

TOL = 1e-7


def dense(problem):
    """P (S, A, S), rho, gamma of a problem, for the reference LPs."""
    mdp = problem.mdp
    S, A = mdp.n_states, mdp.n_actions
    P = mdp.P.toarray().reshape(S, A, S)
    return P, mdp.rho, mdp.gamma


def indicator(S, A, states, actions):
    """The row 1 on (s, a) for s in states, a in actions, written out by loops."""
    row = np.zeros(S * A)
    for s in states:
        for a in actions:
            row[s * A + a] = 1.0
    return row


def ref_ranges(problem):
    P, rho, gamma = dense(problem)
    R = problem.reward_matrix
    upper = np.array([lp_max(r, P, rho, gamma)[0] for r in R])
    lower = np.array([-lp_max(-r, P, rho, gamma)[0] for r in R])
    return lower, upper


def ref_feasible(problem, A_ub, b_ub):
    P, rho, gamma = dense(problem)
    A_eq, b_eq = dense_polytope(P, rho, gamma)
    res = linprog(np.zeros(A_eq.shape[1]), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    return res.status == 0


def two_sites():
    """Average reward, 3 states (0, 1, 2 = a queue's length), actions 0 = serve, 1 = idle."""
    P = np.zeros((3, 2, 3))
    P[0, 0, 0] = 1.0
    P[0, 1] = [0.5, 0.5, 0.0]
    P[1, 0] = [1.0, 0.0, 0.0]
    P[1, 1] = [0.0, 0.5, 0.5]
    P[2, 0] = [0.0, 1.0, 0.0]
    P[2, 1] = [0.0, 0.0, 1.0]
    P = 0.9 * P + 0.1 / 3  # every transition possible: unichain
    rewards = np.zeros((2, 3, 2))
    rewards[0, :, 1] = 1.0  # agent 0 likes idling
    rewards[1, 0, :] = 1.0  # agent 1 likes an empty queue
    return solvers.with_ranges(Problem(TabularMDP(P, gamma=1.0), rewards))


# --------------------------------------------------------------------------- compilation
@settings(max_examples=15, deadline=None)
@given(problem=random_problems(max_states=4, max_actions=3, gammas=(0.5, 0.9, 1.0)))
def test_prohibition_is_never_taken_and_costs_what_the_reference_lp_says(problem):
    S, A = problem.mdp.n_states, problem.mdp.n_actions
    if A < 2:
        return
    role = [s for s in range(S) if s % 2 == 0]
    norm = Prohibition("no action 0 in even states", Role.of(role), [0])
    result = run_with_norms("utilitarian", problem, norms=[norm])
    exact = problem.mdp.occupancy(result.policy)
    for s in role:
        assert exact[s, 0] <= TOL
        if exact[s].sum() > 1e-6:  # a visited state: the policy never takes the action
            assert result.policy[s, 0] <= 1e-6
    row = indicator(S, A, role, [0])
    P, rho, gamma = dense(problem)
    best, _ = lp_max(problem.weights @ problem.reward_matrix, P, rho, gamma, A_ub=row[None], b_ub=[0.0])
    scale = 1.0 + np.abs(problem.rewards).max()
    assert problem.weights @ result.returns == pytest.approx(best, abs=1e-6 * scale)
    assert result.diagnostics["norms"]["satisfied"][norm.name]["satisfied"]


def test_obligation_forbids_every_other_action():
    problem = two_sites()
    norm = Obligation("serve when the queue is long", Role.of([2]), [0])
    constraints = norm.compile(problem)
    np.testing.assert_array_equal(constraints.A_ub.toarray()[0], indicator(3, 2, [2], [1]))
    assert constraints.labels_ub == (norm.name,)
    result = run_with_norms("utilitarian", problem, norms=[norm])
    exact = problem.mdp.occupancy(result.policy)
    assert exact[2, 1] <= TOL
    assert result.policy[2, 1] <= 1e-6  # state 2 is visited (every transition is possible)


@pytest.mark.parametrize(("at_most", "at_least"), [(0.2, None), (None, 0.7), (0.5, 0.4)])
def test_rate_norm_holds_on_the_exact_occupancy_and_matches_the_reference(at_most, at_least):
    problem = two_sites()
    norm = Rate("idle share", Role.every(), [1], at_most=at_most, at_least=at_least)
    result = run_with_norms("utilitarian", problem, norms=[norm])
    share = problem.mdp.occupancy(result.policy)[:, 1].sum()
    if at_most is not None:
        assert share <= at_most + TOL
    if at_least is not None:
        assert share >= at_least - TOL
    row = indicator(3, 2, range(3), [1])
    A_ub = [r for r, b in ((row, at_most), (-row, at_least)) if b is not None]
    b_ub = [b for b in (at_most, None if at_least is None else -at_least) if b is not None]
    best, _ = lp_max(problem.reward_matrix.sum(axis=0), *dense(problem), A_ub=np.array(A_ub), b_ub=b_ub)
    assert result.returns.sum() == pytest.approx(best, abs=1e-7)


def test_guarantee_floors_the_normalised_return_with_reference_ranges():
    problem = two_sites()
    lower, upper = ref_ranges(problem)
    norm = Guarantee("agent1 keeps 80%", "agent1", 0.8)
    result = run_with_norms("utilitarian", problem, norms=[norm])
    assert (result.returns[1] - lower[1]) / (upper[1] - lower[1]) >= 0.8 - 1e-7
    unconstrained = solvers.utilitarian(problem)
    assert (unconstrained.returns[1] - lower[1]) / (upper[1] - lower[1]) < 0.8  # the norm binds


def test_allof_and_robust_ambiguity_hold_every_part():
    problem = two_sites()
    parts = (Rate("idle <= .5", Role.every(), [1], at_most=0.5), Prohibition("no idle at 2", Role.of([2]), [1]))
    for norm in (AllOf("both", parts), AmbiguousNorm("both", parts, mode="robust")):
        constraints = norm.compile(problem)
        assert set(constraints.labels_ub) == {"both"}  # every row carries the norm's name
        result = run_with_norms("utilitarian", problem, norms=[norm])
        exact = problem.mdp.occupancy(result.policy)
        assert exact[:, 1].sum() <= 0.5 + TOL and exact[2, 1] <= TOL


def test_role_from_labels_and_norms_plug_into_constraints():
    problem = two_sites()
    labels = ["empty", "short", "long"]
    role = Role.where(lambda label: label != "empty", labels, "a queue")
    assert role.states == (1, 2)
    norm = Prohibition("no idling with a queue", role, [1])
    # norms plug in where constraints go today: the rule's `constraints=` option
    result = solvers.utilitarian(problem, constraints=Norms([norm]).compile(problem))
    exact = problem.mdp.occupancy(result.policy)
    assert exact[1:, 1].sum() <= TOL
    with pytest.raises(InvalidProblemError, match="labels of 2 states"):
        Prohibition("x", Role.where(bool, [1, 1], "two"), [0]).compile(problem)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Prohibition("", Role.every(), [0]), "non-empty string"),
        (lambda: Prohibition("p", Role.every(), []), "actions"),
        (lambda: Rate("r", Role.every()), "at_most"),
        (lambda: Rate("r", Role.every(), at_most=1.5), r"in \[0, 1\]"),
        (lambda: Guarantee("g", 0, -0.1), r"in \[0, 1\]"),
        (lambda: AmbiguousNorm("a", [Rate("r", Role.every(), at_most=0.1)], weights=[0.0]), "positive"),
        (lambda: AmbiguousNorm("a", [Rate("r", Role.every(), at_most=0.1)], mode="maybe"), "robust"),
        (lambda: AmbiguousNorm("a", [Rate("r", Role.every(), at_most=0.1)], mode="chance", level=0), r"\(0, 1\]"),
        (lambda: Norms([Rate("r", Role.every(), at_most=0.1)] * 2), "distinct"),
    ],
)
def test_bad_norms_are_typed_errors(build, match):
    with pytest.raises(InvalidProblemError, match=match):
        build()


def test_bad_references_are_named_when_compiled():
    problem = two_sites()
    with pytest.raises(InvalidProblemError, match="state 7"):
        Prohibition("p", Role.of([7]), [0]).compile(problem)
    with pytest.raises(InvalidProblemError, match="action 5"):
        Prohibition("p", Role.every(), [5]).compile(problem)
    with pytest.raises(InvalidProblemError, match="no agent named 'bob'"):
        Guarantee("g", "bob", 0.5).compile(problem)
    chance = AmbiguousNorm("a", [Rate("r", Role.every(), at_most=0.1)] * 1, mode="chance", level=0.5)
    with pytest.raises(InvalidProblemError, match="resolve_norms"):
        chance.compile(problem)


# --------------------------------------------------------------------------- conflicts
def conflict_instance():
    problem = two_sites()
    norms = [
        Rate("idle at least 80%", Role.every(), [1], at_least=0.8),  # 0
        Rate("serve at least 30%", Role.every(), [0], at_least=0.3),  # 1: conflicts with 0
        Prohibition("never idle when long", Role.of([2]), [1]),  # 2: harmless alone
        Guarantee("agent1 floor", 1, 0.9),  # 3: conflicts with 0
        Rate("serve at most 60%", Role.every(), [0], at_most=0.6),  # 4: harmless
    ]
    return problem, norms


def test_conflicting_norms_are_an_irreducible_infeasible_subset():
    problem, norms = conflict_instance()

    def feasible(subset):
        rows = [upper_rows(n.compile(problem)) for n in subset]
        if not rows:
            return ref_feasible(problem, None, None)
        return ref_feasible(problem, np.vstack([A.toarray() for A, _ in rows]), np.concatenate([b for _, b in rows]))

    conflict = conflicting_norms(problem, norms)
    chosen = [n for n in norms if n.name in conflict]
    assert len(chosen) >= 2
    assert not feasible(chosen)  # infeasible together
    for k in range(len(chosen)):  # irreducible: dropping any one makes it feasible
        assert feasible(chosen[:k] + chosen[k + 1 :])
    with pytest.raises(NormConflictError, match="conflict") as info:
        run_with_norms("egalitarian", problem, norms=norms)
    assert set(info.value.norms) == set(conflict)
    assert isinstance(info.value, InfeasibleError)
    assert conflicting_norms(problem, norms[2:3] + norms[4:]) == ()


def test_a_single_impossible_norm_is_named_alone():
    problem = two_sites()
    impossible = Rate("always at 2", Role.of([2]), at_least=1.0)  # every transition is possible
    with pytest.raises(NormConflictError, match="'always at 2' alone") as info:
        run_with_norms("utilitarian", problem, norms=[Prohibition("ok", Role.of([0]), [1]), impossible])
    assert info.value.norms == ("always at 2",)


# --------------------------------------------------------------------------- ambiguity
def test_big_m_is_valid_on_the_simplex():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 8))
    A[A < 0.3] = 0.0
    b = rng.normal(size=5)
    M = big_m(A, b)
    points = rng.dirichlet(np.ones(8), size=2000)
    points = np.vstack([points, np.eye(8)])  # the vertices, where a d is largest
    assert np.all(points @ A.T - b <= M + 1e-12)
    assert np.all(M >= 0)


def ambiguous_instance(level):
    return AmbiguousNorm(
        "idling",
        [
            Rate("idle <= 20%", Role.every(), [1], at_most=0.2),
            Rate("idle <= 50%", Role.every(), [1], at_most=0.5),
            Prohibition("never idle when long", Role.of([2]), [1]),
            Rate("empty >= 60%", Role.of([0]), at_least=0.6),
        ],
        weights=[1.0, 2.0, 1.5, 0.5],
        mode="chance",
        level=level,
    )


def brute_force_choice(problem, norm, select):
    """The best criterion value over every subset of interpretations of weight >= level (linprog)."""
    S, A = problem.mdp.n_states, problem.mdp.n_actions
    P, rho, gamma = dense(problem)
    lower, upper = ref_ranges(problem)
    width = upper - lower
    n = problem.n_agents
    best = -np.inf
    K = len(norm.interpretations)
    for size in range(K + 1):
        for subset in combinations(range(K), size):
            if sum(norm.weights[k] for k in subset) < norm.level - 1e-9:
                continue
            rows = [upper_rows(norm.interpretations[k].compile(problem)) for k in subset]
            A_ub = np.vstack([R.toarray() for R, _ in rows]) if rows else np.zeros((0, S * A))
            b_ub = np.concatenate([b for _, b in rows]) if rows else np.zeros(0)
            if select == "utilitarian":
                c = problem.weights @ (problem.reward_matrix / width[:, None]) / problem.weights.sum()
                if not ref_feasible(problem, A_ub if rows else None, b_ub if rows else None):
                    continue
                value, _ = lp_max(c, P, rho, gamma, A_ub=A_ub if rows else None, b_ub=b_ub if rows else None)
                value -= problem.weights @ (lower / width) / problem.weights.sum()
            else:  # egalitarian: max t, t <= (R_i d - lower_i) / width_i
                A_eq, b_eq = dense_polytope(P, rho, gamma)
                A_eq = np.hstack([A_eq, np.zeros((A_eq.shape[0], 1))])
                floors = np.hstack([-problem.reward_matrix / width[:, None], np.ones((n, 1))])
                A_all = np.vstack([np.hstack([A_ub, np.zeros((A_ub.shape[0], 1))]), floors])
                b_all = np.concatenate([b_ub, -lower / width])
                c = np.zeros(S * A + 1)
                c[-1] = -1.0
                res = linprog(
                    c, A_ub=A_all, b_ub=b_all, A_eq=A_eq, b_eq=b_eq, bounds=[(0, None)] * (S * A) + [(None, None)]
                )
                if res.status != 0:
                    continue
                value = -res.fun
            best = max(best, value)
    return best


@pytest.mark.parametrize("level", [0.3, 0.5, 0.75, 1.0])
@pytest.mark.parametrize("select", ["utilitarian", "egalitarian"])
def test_chance_constrained_choice_matches_brute_force(level, select):
    problem = two_sites()
    norm = ambiguous_instance(level)
    resolved = resolve_norms(problem, [norm], select=select)
    expected = brute_force_choice(problem, norm, select)
    if level >= 1.0:  # all must hold: a robust norm, no MILP
        assert resolved.objective is None and len(resolved.chosen) == 0
        return
    C_offset = 0.0
    if select == "utilitarian":  # the MILP's objective omits the constant of the normalised returns
        lower, upper = ref_ranges(problem)
        C_offset = problem.weights @ (lower / (upper - lower)) / problem.weights.sum()
    assert resolved.objective - C_offset == pytest.approx(expected, abs=1e-6)
    chosen = resolved.chosen["idling"]
    weight = sum(w for w, i in zip(norm.weights, norm.interpretations) if i.name in chosen)
    assert weight >= level - 1e-9
    result = run_with_norms("utilitarian", problem, norms=[norm], select=select)
    held = result.diagnostics["norms"]["satisfied"]["idling"]
    assert all(held["interpretations"][name] for name in chosen)  # the chosen ones hold
    assert held["satisfied"] and held["weight_satisfied"] >= level - 1e-9


def test_selection_program_rows_switch_off_with_their_binary():
    problem = two_sites()
    norm = ambiguous_instance(0.3)
    lp, layout = selection_program(problem, Norms([norm]), feasibility=True)
    assert lp.is_mip and layout.z_start == (problem.mdp.n_state_actions,)


# --------------------------------------------------------------------------- every rule
@pytest.mark.parametrize("name", sorted(solvers.RULES))
def test_every_rule_runs_under_norms_and_satisfies_them(name):
    problem = two_sites()
    samples = sample_policy_returns(problem, 300, rng=0, progress=False)
    norms = [
        Rate("idle at most 40%", Role.every(), [1], at_most=0.4),
        AmbiguousNorm(
            "long queue",
            [Prohibition("never idle when long", Role.of([2]), [1]), Rate("long <= 5%", Role.of([2]), at_most=0.05)],
            mode="chance",
            level=0.5,
        ),
    ]
    try:
        result = run_with_norms(name, problem, samples, norms=norms, **RULE_OPTIONS.get(name, {}))
    except InfeasibleError as exc:
        if name == "pvc" and "veto thresholds" in str(exc):  # documented in solvers/pvc.py: the vetoes
            pytest.xfail("pvc: the samples' vetoes (over O) can cut off the whole normed region")
        raise
    # a lottery: every policy it may draw obeys the norms
    policies = result.support_policies if isinstance(result, Lottery) else [result.policy]
    for policy in policies:
        exact = problem.mdp.occupancy(policy)
        assert exact[:, 1].sum() <= 0.4 + 1e-6
    report = result.diagnostics["norms"]["satisfied"]
    assert report["idle at most 40%"]["satisfied"] and report["long queue"]["satisfied"]
    chosen = result.diagnostics["norms"]["chosen"]["long queue"]
    assert chosen and all(report["long queue"]["interpretations"][c] for c in chosen)


# --------------------------------------------------------------------------- price
def test_price_of_a_norm_against_reference_lps():
    base = leaky_average()
    problem = Problem(base.mdp, base.rewards, weights=[2.0, 1.0])  # utilitarian: stay in state 0
    norms = [
        Prohibition("no staying in 1", Role.of([1]), [0]),
        Rate("state 1 at least 60%", Role.of([1]), at_least=0.6),
    ]
    prices = norm_prices("utilitarian", problem, norms=norms, normalize=False)
    assert [p.norm for p in prices] == ["no staying in 1", "state 1 at least 60%", ALL_NORMS]
    P, rho, gamma = dense(problem)
    w = problem.weights @ problem.reward_matrix
    free, _ = lp_max(w, P, rho, gamma)
    for price, (A_ub, b_ub) in zip(
        prices[:2], [(indicator(2, 2, [1], [0])[None], [0.0]), (-indicator(2, 2, [1], [0, 1])[None], [-0.6])]
    ):
        bound, _ = lp_max(w, P, rho, gamma, A_ub=A_ub, b_ub=b_ub)
        assert price.objective_without == pytest.approx(free, abs=1e-7)
        assert price.objective_with == pytest.approx(bound, abs=1e-7)
        assert price.losers == int(np.sum(price.normalized_change < -1e-3))
    # at least 60% in state 1 needs staying there: the two norms conflict
    assert prices[2].status == "infeasible" and np.isnan(prices[2].objective_with)
    # the 60% norm takes return from agent 0 (rewarded in state 0)
    assert prices[1].return_change[0] < 0 and prices[1].losers >= 1


# --------------------------------------------------------------------------- configurations
def norms_config(output, norms, **changes):
    config = {
        "name": "tiny-norms",
        "output": str(output),
        "seeds": [0],
        "environment": {"id": "attention", "kwargs": {"n_sites": 3, "n_phases": 3}, "gamma": 1.0},
        "agents": {"population": "one_per_site"},
        "measure": {"name": "policy", "samples": 200},
        "rules": [{"label": "utilitarian", "rule": "utilitarian"}, {"label": "max-quantile", "rule": "max_quantile"}],
        "norms": norms,
    }
    return config | changes


TOP_UNATTENDED = {
    "kind": "rate",
    "name": "top unattended <= 30%",
    "role": {"site": "each", "phase": 2},
    "actions": "other",
    "at_most": 0.3,
}
NO_IDLING = {"kind": "prohibition", "name": "no idling", "role": {"site": "any", "phase": 2}, "actions": "none"}
FAIR = {
    "kind": "ambiguous",
    "name": "fair",
    "mode": "chance",
    "level": 0.5,
    "interpretations": [
        {"kind": "rate", "name": "share >= 20%", "role": {"site": "each"}, "actions": "attend", "at_least": 0.2},
        {"kind": "guarantee", "name": "site0 floor", "agent": "site0", "floor": 0.9},
    ],
}


def test_config_norms_build_the_rows_an_independent_phase_table_gives():
    from policyagg.envs.attention import AttentionModel
    from policyagg.experiments.config import parse_config
    from policyagg.experiments.norms import build_norms
    from policyagg.experiments.run import build_problem

    config = parse_config(norms_config("/tmp/unused", [TOP_UNATTENDED, NO_IDLING, FAIR]))
    problem = build_problem(config, 0)
    norms = build_norms(config, problem)
    phases = AttentionModel(3, 3).phases()  # (S, k) from the environment itself
    S, A = len(phases), 4
    rate = norms["top unattended <= 30%"].compile(problem)
    assert rate.A_ub.shape[0] == 3 and set(rate.labels_ub) == {"top unattended <= 30%"}
    for j in range(3):
        expected = indicator(S, A, np.flatnonzero(phases[:, j] == 2), [a for a in range(A) if a != j])
        np.testing.assert_array_equal(rate.A_ub.toarray()[j], expected)
    idle = norms["no idling"].compile(problem)
    np.testing.assert_array_equal(idle.A_ub.toarray()[0], indicator(S, A, np.flatnonzero((phases == 2).any(1)), [3]))
    result = run_with_norms("utilitarian", problem, norms=norms)
    report = result.diagnostics["norms"]["satisfied"]
    assert all(entry["satisfied"] for entry in report.values())
    exact = problem.mdp.occupancy(result.policy)
    for j in range(3):
        assert exact[phases[:, j] == 2][:, [a for a in range(A) if a != j]].sum() <= 0.3 + 1e-6


@pytest.mark.parametrize(
    ("norm", "match"),
    [
        ({"kind": "ban", "name": "x"}, r"norms\[0\].kind"),
        ({"kind": "rate", "name": "x", "at_most": 0.1, "atmost": 1}, r"norms\[0\].atmost"),
        ({"kind": "rate", "name": "x", "at_most": 1.5}, r"norms\[0\].at_most"),
        ({"kind": "rate", "name": "x"}, "at_most"),
        ({"kind": "prohibition", "name": "x", "role": "all"}, r"norms\[0\].actions"),
        ({"kind": "prohibition", "name": "x", "role": {"states": [27]}, "actions": [0]}, r"norms\[0\].role.states"),
        ({"kind": "prohibition", "name": "x", "role": {"site": 3, "phase": 0}, "actions": [0]}, "role.site"),
        ({"kind": "prohibition", "name": "x", "role": {"site": 0, "phase": 3}, "actions": [0]}, "role.phase"),
        ({"kind": "prohibition", "name": "x", "role": "all", "actions": [4]}, r"norms\[0\].actions"),
        ({"kind": "prohibition", "name": "x", "role": "all", "actions": "attend"}, "needs a role with a site"),
        ({"kind": "guarantee", "name": "x", "agent": True, "floor": 0.5}, "agent"),
        ({"kind": "ambiguous", "name": "x", "interpretations": []}, "interpretations"),
        ({**FAIR, "weights": [1.0]}, r"norms\[0\].weights"),
        ({**FAIR, "level": 0}, r"norms\[0\].level"),
    ],
)
def test_bad_norm_tables_name_the_key(norm, match):
    from policyagg.experiments.config import InvalidConfigError, parse_config

    with pytest.raises(InvalidConfigError, match=match):
        parse_config(norms_config("/tmp/unused", [norm]))


def test_config_refuses_duplicate_names_and_bad_selection():
    from policyagg.experiments.config import InvalidConfigError, parse_config

    with pytest.raises(InvalidConfigError, match="distinct"):
        parse_config(norms_config("/tmp/unused", [NO_IDLING, NO_IDLING]))
    with pytest.raises(InvalidConfigError, match="norm_selection"):
        parse_config(norms_config("/tmp/unused", [NO_IDLING], norm_selection="best"))


def test_run_passes_norms_to_every_rule_and_cli_writes_the_price_table(tmp_path, capsys):
    from policyagg.experiments.cli import main
    from policyagg.experiments.run import run_config

    config = norms_config(tmp_path / "run", [TOP_UNATTENDED, NO_IDLING, FAIR])
    run = run_config(config, progress=False, figures=False)
    for result in run.seeds[0].results.values():
        satisfied = result.diagnostics["norms"]["satisfied"]
        assert set(satisfied) == {"top unattended <= 30%", "no idling", "fair"}
        assert all(entry["satisfied"] for entry in satisfied.values())
    path = tmp_path / "tiny.toml"
    path.write_text(
        f"""name = "tiny-norms"
output = "{tmp_path / "prices"}"
seeds = [0]
[environment]
id = "attention"
kwargs = {{ n_sites = 3, n_phases = 3 }}
[agents]
population = "one_per_site"
[measure]
samples = 100
[[rules]]
rule = "utilitarian"
[[rules]]
label = "max-quantile"
rule = "max_quantile"
[[norms]]
kind = "prohibition"
name = "no idling"
role = {{ site = "any", phase = 2 }}
actions = "none"
[[norms]]
kind = "rate"
name = "top unattended <= 30%"
role = {{ site = "each", phase = 2 }}
actions = "other"
at_most = 0.3
""",
        encoding="utf-8",
    )
    assert main(["norms", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| utilitarian | no idling |" in out and "| max-quantile | all norms |" in out
    for name in ("norms.md", "norms.csv", "norms.png", "norms.svg"):
        assert (tmp_path / "prices" / name).stat().st_size > 0


def _transient_start():
    """Average reward. State 0 is transient (nothing leads back to it): action 0 goes to state 1,
    action 1 to state 2. In states 1 and 2 action 0 stays and action 1 moves to the other.
    The agent is rewarded in state 1, so every optimum lives there and d(0, .) = 0."""
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = P[0, 1, 2] = 1.0
    P[1, 0, 1] = P[1, 1, 2] = 1.0
    P[2, 0, 2] = P[2, 1, 1] = 1.0
    rewards = np.zeros((1, 3, 2))
    rewards[0, 1, :] = 1.0
    return Problem(TabularMDP(P, rho=[1.0, 0.0, 0.0], gamma=1.0), rewards)


def _rollout_actions(mdp, policy, steps, rng):
    """The (state, action) pairs of one trajectory from rho, simulated step by step."""
    P = mdp.P.toarray().reshape(mdp.n_states, mdp.n_actions, mdp.n_states)
    s = rng.choice(mdp.n_states, p=mdp.rho)
    pairs = []
    for _ in range(steps):
        a = rng.choice(mdp.n_actions, p=policy[s])
        pairs.append((s, a))
        s = rng.choice(mdp.n_states, p=P[s, a])
    return pairs


@pytest.mark.filterwarnings("ignore::policyagg.mdp.StructureWarning")  # state 0 is transient on purpose
@pytest.mark.parametrize("how", ["norm", "forbid"])
def test_prohibitions_hold_in_transient_states_too(how):
    """Under average reward a transient state has no long-run occupancy, so the occupancy alone
    cannot keep a prohibition there; the derived policy must still never take the action."""
    from policyagg.polytope import forbid

    problem = _transient_start()
    if how == "norm":
        constraints = Prohibition("never take action 0 at the start", Role.of([0]), [0]).compile(problem)
    else:
        constraints = forbid(problem.mdp, 0, 0)
    plain = solvers.utilitarian(problem)
    assert plain.policy[0, 0] > 0  # without the norm the shortest way to state 1 is action 0
    result = solvers.utilitarian(problem, constraints=constraints)
    assert result.policy[0, 0] == 0.0
    np.testing.assert_allclose(result.returns, [1.0], atol=1e-9)  # still reaches state 1 (via 2)
    np.testing.assert_allclose(problem.mdp.evaluate(result.policy, problem.rewards), result.returns, atol=1e-9)
    rng = np.random.default_rng(3)
    for _ in range(20):
        assert (0, 0) not in _rollout_actions(problem.mdp, result.policy, 6, rng)
