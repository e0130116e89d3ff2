"""Tests for solvers.lp: hand-solved LPs/MILPs, KKT checks of the duals, warm starts, typed errors."""

import re
import subprocess
import sys
from pathlib import Path

import highspy
import numpy as np
import pytest
import scipy.sparse as sp

from policyagg.errors import InfeasibleError, InvalidProblemError, SolverError, SolverTimeLimitError, UnboundedError
from policyagg.solvers.lp import (
    BACKENDS,
    HighsModel,
    LinearProgram,
    LPModel,
    LPSolution,
    PulpModel,
    make_model,
    solve,
    worst_status,
)

INF = np.inf


def hand_lp(maximize=True, flip_rows=False, name="hand"):
    """max x + y  s.t.  x + 2y <= 4,  3x + y <= 6,  x, y >= 0  ->  (1.6, 1.2), value 2.8.

    Dual by hand: y1 + 3 y2 = 1, 2 y1 + y2 = 1  ->  y = (0.4, 0.2).
    """
    A, b = np.array([[1.0, 2.0], [3.0, 1.0]]), np.array([4.0, 6.0])
    cost = np.array([1.0, 1.0]) * (1 if maximize else -1)
    if flip_rows:  # -x - 2y >= -4, -3x - y >= -6: same set, written as '>=' rows
        return LinearProgram(
            cost,
            -A,
            -b,
            np.full(2, INF),
            np.zeros(2),
            np.full(2, INF),
            maximize=maximize,
            name=name,
            row_families=(("capacity", 0, 2),),
        )
    return LinearProgram.build(cost, A_ub=A, b_ub=b, maximize=maximize, name=name, families=(("capacity", 2),))


def knapsack(n, m, seed):
    """Random multi-dimensional 0/1 knapsack, values correlated with weights (hard for B&B)."""
    rng = np.random.default_rng(seed)
    W = rng.integers(100, 1000, (m, n)).astype(float)
    v = W.mean(0) + rng.integers(0, 30, n)
    return LinearProgram.build(
        v, A_ub=W, b_ub=W.sum(1) / 2, bounds=(0, 1), integrality=np.ones(n, bool), maximize=True, name="knapsack"
    )


def random_lp(rng, m=8, n=6):
    """Feasible (built around a point x0) and bounded (finite box) LP with mixed row types."""
    A = rng.normal(size=(m, n)) * (rng.random((m, n)) < 0.7)
    lo_c, up_c = -rng.uniform(1, 5, n), rng.uniform(1, 5, n)
    x0 = rng.uniform(lo_c, up_c)
    ax = A @ x0
    kind = rng.integers(0, 4, m)  # 0: <=, 1: >=, 2: ranged, 3: ==
    lo = np.where(kind == 0, -INF, ax - rng.uniform(0, 1, m) * (kind != 3))
    up = np.where(kind == 1, INF, ax + rng.uniform(0, 1, m) * (kind != 3))
    return LinearProgram(
        rng.normal(size=n), sp.csr_array(A), lo, up, lo_c, up_c, maximize=bool(rng.integers(2)), name="random"
    )


def assert_kkt(lp, sol, tol=1e-6):
    """Feasibility, and the documented dual convention checked through complementary slackness."""
    x, y = sol.x, sol.row_duals
    ax = lp.A @ x
    assert np.all(ax >= lp.row_lower - tol) and np.all(ax <= lp.row_upper + tol)
    assert np.all(x >= lp.col_lower - tol) and np.all(x <= lp.col_upper + tol)
    s = -1 if lp.maximize else 1  # for min, y > 0 means the lower row bound is active
    z = lp.cost - lp.A.T @ y  # reduced costs
    assert np.all(np.abs(ax - lp.row_lower)[s * y > tol] < 1e-5)
    assert np.all(np.abs(ax - lp.row_upper)[s * y < -tol] < 1e-5)
    assert np.all(np.abs(x - lp.col_lower)[s * z > tol] < 1e-5)
    assert np.all(np.abs(x - lp.col_upper)[s * z < -tol] < 1e-5)


# ---------------------------------------------------------------- results ---


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_lp_primal_and_duals(backend):
    sol = solve(hand_lp(), backend=backend)
    assert isinstance(sol, LPSolution) and sol.backend == backend and sol.status == "optimal"
    np.testing.assert_allclose(sol.x, [1.6, 1.2], atol=1e-9)
    assert sol.objective == pytest.approx(2.8)
    np.testing.assert_allclose(sol.row_duals, [0.4, 0.2], atol=1e-9)
    assert sol.mip_gap is None and sol.solve_time >= 0 and sol.build_time >= 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "maximize, flip, duals",
    [
        (False, False, [-0.4, -0.2]),  # min -x-y: raising a '<=' bound lowers the min
        (True, True, [-0.4, -0.2]),  # max, '>=' rows: raising the bound tightens, value drops
        (False, True, [0.4, 0.2]),
    ],
)
def test_dual_sign_convention(backend, maximize, flip, duals):
    sol = solve(hand_lp(maximize, flip), backend=backend)
    assert sol.objective == pytest.approx(2.8 if maximize else -2.8)
    np.testing.assert_allclose(sol.row_duals, duals, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equality_and_ub_rows_from_build(backend):
    # min x + 2y  s.t. x <= 0.7 (ub), x + y == 1 (eq), x, y >= 0  ->  (0.7, 0.3), value 1.3
    # d value / d 0.7 = 1 - 2 = -1 ;  d value / d 1 = +2
    lp = LinearProgram.build(
        [1, 2],
        A_ub=sp.csr_matrix([[1.0, 0.0]]),
        b_ub=[0.7],
        A_eq=[[1, 1]],
        b_eq=1,
        name="eq",
        families=(("cap", 1), ("mass", 1)),
    )
    assert lp.row_families == (("cap", 0, 1), ("mass", 1, 2)) and lp.A.format == "csc"
    np.testing.assert_array_equal(lp.row_lower, [-INF, 1])
    sol = solve(lp, backend=backend)
    np.testing.assert_allclose(sol.x, [0.7, 0.3], atol=1e-9)
    assert sol.objective == pytest.approx(1.3)
    np.testing.assert_allclose(sol.row_duals, [-1.0, 2.0], atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_milp(backend):
    # max 5x + 4y  s.t. 6x + 4y <= 24, x + 2y <= 6, x, y >= 0 integer.
    # LP optimum (3, 1.5) = 21; integer points: (4,0)=20, (3,1)=19, (2,2)=18 -> (4, 0), 20.
    lp = LinearProgram.build(
        [5, 4], A_ub=[[6, 4], [1, 2]], b_ub=[24, 6], integrality=[True, True], maximize=True, name="milp"
    )
    sol = solve(lp, backend=backend)
    np.testing.assert_allclose(sol.x, [4, 0], atol=1e-6)
    assert sol.objective == pytest.approx(20)
    assert sol.row_duals is None
    if backend == "highs":
        assert sol.mip_gap == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_column_in_no_row_keeps_its_bounds(backend):
    lp = LinearProgram.build(
        [1, 1, 0], A_ub=[[1, 2, 0], [3, 1, 0]], b_ub=[4, 6], bounds=([0, 0, 2], [None, None, 3]), maximize=True
    )
    x = solve(lp, backend=backend).x
    assert 2 <= x[2] <= 3 and x[:2] == pytest.approx([1.6, 1.2])


def test_backends_agree_on_random_lps():
    rng = np.random.default_rng(12345)
    for _ in range(20):
        lp = random_lp(rng)
        a, b = solve(lp, backend="highs"), solve(lp, backend="pulp")
        assert a.objective == pytest.approx(b.objective, abs=1e-6, rel=1e-6)
        assert_kkt(lp, a)
        assert_kkt(lp, b)


# ---------------------------------------------------------- warm models ---


def test_warm_row_bound_change_matches_fresh_model(capsys):
    rng = np.random.default_rng(0)
    m, n = 80, 60
    A = rng.uniform(0, 1, (m, n))
    b = rng.uniform(5, 10, m)
    lp = LinearProgram.build(rng.uniform(0, 1, n), A_ub=A, b_ub=b, maximize=True, name="warm")
    model = HighsModel(lp)
    cold = model.solve()
    rows = np.arange(m)
    new_b = b * rng.uniform(0.7, 1.0, m)  # moves the optimal basis: the warm solve must pivot
    model.set_row_bounds(rows, -INF, new_b)
    warm = model.solve()
    fresh_lp = LinearProgram.build(lp.cost, A_ub=A, b_ub=new_b, maximize=True, name="fresh")
    fresh = solve(fresh_lp)
    assert warm.objective == pytest.approx(fresh.objective, rel=1e-9)
    np.testing.assert_allclose(warm.x, fresh.x, atol=1e-8)
    assert warm.objective < cold.objective - 1e-6
    assert 0 < warm.iterations <= fresh.iterations
    pulp_model = make_model(lp, backend="pulp")
    pulp_model.set_row_bounds(rows, -INF, new_b[rows])
    assert pulp_model.solve().objective == pytest.approx(fresh.objective, rel=1e-7)
    with capsys.disabled():
        print(
            f"\n[warm start] iterations cold={cold.iterations} warm={warm.iterations} "
            f"fresh={fresh.iterations}; times cold={cold.solve_time:.4f}s warm={warm.solve_time:.4f}s"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_added_rows_match_a_fresh_model(backend):
    # hand LP, then the cut x - y <= 0.2 (optimum (22/15, 19/15)), then a ranged row 0.5 <= y <= 1,
    # two rounds like a cutting-plane loop, each checked against a fresh HiGHS model of all rows
    model = make_model(hand_lp(), backend=backend)
    assert model.solve().objective == pytest.approx(2.8)
    rows = model.add_rows(sp.csr_array([[1.0, -1.0]]), -INF, 0.2, name="cut")
    assert rows.tolist() == [2]
    first = model.solve()
    rows = model.add_rows(np.array([[0.0, 1.0]]), [0.5], [1.0], name="range")
    second = model.solve()
    A = np.array([[1.0, 2.0], [3.0, 1.0], [1.0, -1.0], [0.0, 1.0]])
    full = LinearProgram(
        [1.0, 1.0], A, [-INF, -INF, -INF, 0.5], [4.0, 6.0, 0.2, 1.0], [0.0, 0.0], [INF, INF], maximize=True
    )
    one = LinearProgram([1.0, 1.0], A[:3], [-INF] * 3, [4.0, 6.0, 0.2], [0.0, 0.0], [INF, INF], maximize=True)
    for got, lp in ((first, one), (second, full)):
        fresh = solve(lp, backend="highs")
        tol = 1e-9 if backend == "highs" else 1e-6  # CBC's solution file has 1e-7 precision
        assert got.objective == pytest.approx(fresh.objective, abs=tol)
        np.testing.assert_allclose(got.x, fresh.x, atol=tol)
        assert_kkt(lp, got)
    current = model.current_lp()
    assert current.n_rows == 4 and [f for f, _, _ in current.row_families] == ["capacity", "cut", "range"]
    model.set_row_bounds(rows, 0.5, 0.6)  # an added row's bounds can change like any other
    np.testing.assert_allclose(model.solve().x[1], 0.6, atol=1e-6)
    with pytest.raises(InvalidProblemError, match=r"add_rows: `A` must have 2 columns"):
        model.add_rows(np.ones((1, 3)), -INF, 1.0)
    with pytest.raises(InvalidProblemError, match=r"lower\[0\] = 2.0 > upper\[0\] = 1.0"):
        model.add_rows(np.ones((1, 2)), 2.0, 1.0)


def test_added_rows_keep_the_highs_basis():
    rng = np.random.default_rng(1)
    m, n = 60, 40
    A = rng.uniform(0, 1, (m, n))
    lp = LinearProgram.build(rng.uniform(0, 1, n), A_ub=A, b_ub=rng.uniform(5, 10, m), maximize=True, name="warm")
    model = HighsModel(lp)
    x = model.solve().x
    cut = rng.uniform(0, 1, (3, n))
    model.add_rows(cut, -INF, 0.9 * cut @ x)
    warm = model.solve()
    fresh = solve(
        LinearProgram.build(
            lp.cost, A_ub=np.vstack([A, cut]), b_ub=np.concatenate([lp.row_upper, 0.9 * cut @ x]), maximize=True
        )
    )
    assert warm.objective == pytest.approx(fresh.objective, rel=1e-9)
    assert 0 < warm.iterations < fresh.iterations


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_cost_and_col_bounds(backend):
    model = make_model(hand_lp(), backend=backend)
    model.solve()
    model.set_cost([1, 3])  # vertices (0,0) (2,0) (1.6,1.2) (0,2): values 0, 2, 5.2, 6
    sol = model.solve()
    np.testing.assert_allclose(sol.x, [0, 2], atol=1e-9)
    assert sol.objective == pytest.approx(6)
    model.set_cost([1, 1])
    model.set_col_bounds(0, 0, 1)  # x <= 1: y = min(1.5, 3) -> value 2.5
    assert model.solve().objective == pytest.approx(2.5)
    with pytest.raises(InvalidProblemError, match="cost"):
        model.set_cost([1, np.nan])
    with pytest.raises(InvalidProblemError, match=r"\[0, 2\)"):
        model.set_row_bounds([5], 0, 1)


# ---------------------------------------------------------------- errors ---


def infeasible_lp():
    # floor: x + y >= 3 cannot hold with x, y <= 1; "budget" x <= 5 is innocent.
    A = np.array([[1.0, 1.0], [1.0, 0.0]])
    return LinearProgram(
        np.ones(2),
        A,
        np.array([3, -INF]),
        np.array([INF, 5]),
        np.zeros(2),
        np.ones(2),
        name="rule-X",
        row_families=(("agent floor", 0, 1), ("budget", 1, 2)),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_names_model_families_and_culprit(backend):
    with pytest.raises(InfeasibleError, match=r"'rule-X'.*'agent floor', 'budget'") as info:
        solve(infeasible_lp(), backend=backend)
    culprits = re.search(r"feasible: (\[.*?\])", str(info.value)).group(1)
    assert culprits == "['agent floor']"
    assert info.value.status == "infeasible"


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbounded(backend):
    lp = LinearProgram.build([1, 0], A_ub=[[0, 1]], b_ub=[1], maximize=True, name="runaway")
    with pytest.raises(UnboundedError, match="runaway"):
        solve(lp, backend=backend)


def _ambiguous_milp(rhs):
    # min -z with z >= 0 free above and in no row; rows x + y <= 1, x + 2y >= rhs.
    # rhs = 3: infeasible; rhs = 1: feasible, hence unbounded. HiGHS presolve answers
    # "Primal infeasible or unbounded" for both.
    return LinearProgram(
        np.array([0, 0, -1.0]),
        np.array([[1.0, 1, 0], [1, 2, 0]]),
        np.array([-INF, rhs]),
        np.array([1, INF]),
        np.zeros(3),
        np.full(3, INF),
        integrality=np.ones(3, bool),
        name="amb",
        row_families=(("a", 0, 1), ("b", 1, 2)),
    )


@pytest.mark.parametrize("rhs, error", [(3, InfeasibleError), (1, UnboundedError)])
def test_unbounded_or_infeasible_is_disambiguated(monkeypatch, rhs, error):
    model = HighsModel(_ambiguous_milp(rhs))
    seen = []
    run = model._run
    monkeypatch.setattr(model, "_run", lambda: seen.append(run()) or seen[-1])
    with pytest.raises(error, match="amb"):
        model.solve()
    assert seen[0][0] == highspy.HighsModelStatus.kUnboundedOrInfeasible and len(seen) == 2
    assert model._h.getOptionValue("presolve")[1] == "choose"  # restored after the retry


def test_every_highs_status_maps_to_result_or_typed_error():
    model = HighsModel(hand_lp(name="mapper"))
    h = highspy.Highs()
    special = {
        "kInfeasible": InfeasibleError,
        "kUnbounded": UnboundedError,
        "kUnboundedOrInfeasible": InfeasibleError,
        "kTimeLimit": SolverTimeLimitError,
    }
    for name, status in highspy.HighsModelStatus.__members__.items():
        if name == "kOptimal":
            continue
        err = model.error_for(status)
        assert type(err) is special.get(name, SolverError), name
        assert "mapper" in str(err) and h.modelStatusToString(status) in str(err), name
    assert "infeasible or unbounded" in str(model.error_for(highspy.HighsModelStatus.kUnboundedOrInfeasible))


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_limit_attaches_feasible_incumbent(backend):
    lp = knapsack(200, 30, seed=0)
    with pytest.raises(SolverTimeLimitError, match="knapsack") as info:
        solve(lp, backend=backend, time_limit=1.0)
    inc = info.value.solution
    assert inc is not None and inc.status == "time-limit"
    assert np.all(lp.A @ inc.x <= lp.row_upper + 1e-6)
    np.testing.assert_allclose(inc.x, np.round(inc.x), atol=1e-6)
    assert inc.objective == pytest.approx(lp.cost @ inc.x)


def test_mip_start_is_the_incumbent_when_time_runs_out():
    """With a feasible start (greedy by value) HiGHS stopped after 1 ms still returns a point at
    least as good as the start (without one it has, here, no incumbent yet)."""
    lp = knapsack(200, 30, seed=0)
    start = np.zeros(lp.n_cols)
    for j in np.argsort(-lp.cost):
        start[j] = 1.0
        if (lp.A @ start > lp.row_upper).any():
            start[j] = 0.0
    model = make_model(lp, time_limit=1e-3)
    model.set_start(start)
    with pytest.raises(SolverTimeLimitError) as started:
        model.solve()
    incumbent = started.value.solution
    assert incumbent is not None and incumbent.objective >= lp.cost @ start - 1e-9
    assert np.all(lp.A @ incumbent.x <= lp.row_upper + 1e-6)


def test_mip_start_must_cover_every_column():
    model = make_model(knapsack(20, 3, seed=0))
    with pytest.raises(InvalidProblemError, match=r"MIP start .* shape \(20,\)"):
        model.set_start(np.zeros(19))
    with pytest.raises(InvalidProblemError, match="MIP start"):
        model.set_start(np.full(20, np.nan))


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_time_limit(backend):
    with pytest.raises(SolverTimeLimitError, match="time_limit=0.001") as info:
        solve(knapsack(60, 10, seed=1), backend=backend, time_limit=1e-3)
    assert info.value.solution is None or info.value.solution.status == "time-limit"


def test_other_highs_limit_is_plain_solver_error():
    model = HighsModel(knapsack(60, 10, seed=1))
    model.set_option("mip_max_improving_sols", 1)
    with pytest.raises(SolverError, match="Solution limit reached") as info:
        model.solve()
    assert type(info.value) is SolverError
    with pytest.raises(InvalidProblemError, match="no_such_option"):
        model.set_option("no_such_option", 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_is_an_lp_model_with_options(backend):
    model = make_model(hand_lp(), backend=backend)
    assert isinstance(model, LPModel) and model.backend == backend
    model.set_option("time_limit", 30.0)
    assert model.solve().objective == pytest.approx(2.8)
    with pytest.raises(InvalidProblemError, match="no_such_option"):
        model.set_option("no_such_option", 1)


def test_pulp_options_are_checked():
    model = PulpModel(hand_lp())
    model.set_option("threads", 1)
    assert model.threads == 1
    with pytest.raises(InvalidProblemError, match="time_limit"):
        model.set_option("time_limit", -1)
    with pytest.raises(InvalidProblemError, match="mip_rel_gap"):
        model.set_option("mip_rel_gap", "tight")


def test_worst_status_orders_optimal_gap_time_limit():
    assert worst_status([]) == "optimal"
    assert worst_status(["optimal", "gap", "optimal"]) == "gap"
    assert worst_status(["gap", "time-limit"]) == "time-limit"
    assert worst_status(["optimal", "something new"]) == "something new"  # unknown statuses are never hidden


def test_unknown_backend_lists_valid_names():
    with pytest.raises(InvalidProblemError, match=r"'gurobi'.*highs, pulp"):
        make_model(hand_lp(), backend="gurobi")
    with pytest.raises(InvalidProblemError, match="time_limit"):
        make_model(hand_lp(), time_limit=-1)
    assert isinstance(make_model(hand_lp(), backend="pulp"), PulpModel)


def test_solving_prints_nothing():
    code = (
        "from policyagg.solvers.lp import *; import numpy as np\n"
        "lp = LinearProgram.build([1, 1], A_ub=[[1, 2]], b_ub=[4], maximize=True)\n"
        "[solve(lp, backend=b) for b in BACKENDS]\n"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout == "" and out.stderr == ""


# ------------------------------------------------------------ validation ---


def _good():
    return dict(
        cost=np.ones(2),
        A=sp.csc_array(np.eye(2)),
        row_lower=np.zeros(2),
        row_upper=np.ones(2),
        col_lower=np.zeros(2),
        col_upper=np.ones(2),
    )


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("cost", np.array([1.0, np.inf]), "cost: must be .*finite"),
        ("cost", np.array([1.0, np.nan]), "cost.*NaN"),
        ("cost", np.ones((2, 1)), r"cost: expected shape \(2,\)"),
        ("A", sp.csc_array(np.ones((2, 3))), "A: shape"),
        ("A", np.array([[1.0, np.nan], [0, 1]]), "A: contains NaN"),
        ("row_lower", np.zeros(3), r"row_lower: expected shape \(2,\)"),
        ("row_upper", np.array([1.0, np.nan]), "row_upper: contains NaN"),
        ("row_lower", np.array([0.0, 2.0]), r"row_lower\[1\] = 2.0 > row_upper"),
        ("col_lower", np.array([0.0, INF]), r"col_lower: \+inf"),
        ("col_upper", np.array([-INF, 1.0]), "col_upper: -inf"),
        ("col_upper", np.array([-1.0, 1.0]), r"col_lower\[0\] = 0.0 > col_upper"),
        ("integrality", np.array([0, 2]), "integrality"),
        ("integrality", np.ones(3, bool), "integrality"),
        ("name", "", "name"),
        ("row_families", (("flow", 0, 3),), "row_families.*'flow'"),
    ],
)
def test_validation_names_the_field(field, value, match):
    kwargs = _good() | {field: value}
    with pytest.raises(InvalidProblemError, match=match):
        LinearProgram(**kwargs)


def test_valid_problem_is_normalised_and_frozen():
    lp = LinearProgram(**(_good() | {"A": sp.csr_matrix(np.eye(2)), "integrality": np.zeros(2)}))
    assert lp.A.format == "csc" and lp.integrality is None and not lp.is_mip
    with pytest.raises(ValueError):
        lp.cost[0] = 5.0
    with pytest.raises(InvalidProblemError, match="families cover 3 rows"):
        LinearProgram.build([1, 1], A_ub=np.eye(2), b_ub=1, families=(("a", 3),))
