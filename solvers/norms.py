"""Norms in the solvers: feasibility and named conflicts, chance-constrained ambiguity, rules
under norms, and the price of a norm.

* :func:`conflicting_norms` finds an irreducible infeasible subset (IIS) *over norms* with a
  deletion filter: starting from all norms, drop each one in turn for good if the rest are
  still infeasible (one feasibility LP, or MILP with chance norms, per norm). What is left is
  infeasible and every one of its norms is needed for that. :func:`check_norms` raises
  :class:`~policyagg.errors.NormConflictError` naming it.
* :func:`resolve_norms` turns norms into :class:`~policyagg.polytope.LinearConstraints` for
  any rule. A chance-constrained :class:`~policyagg.norms.AmbiguousNorm` needs a choice of
  interpretations first: one MILP with a binary ``z_k`` per interpretation,

  .. math:: \\max_{d \\in O, z} \\; \\text{criterion}(d) \\quad\\text{s.t.}\\quad
            A_k d \\le b_k + M_k (1 - z_k), \\quad \\sum_k w_k z_k \\ge p,

  ``M_k`` from :func:`~policyagg.norms.big_m` (valid on the simplex that contains ``O``).
  The *criterion* is not the rule's own objective (that would be a MILP only for LP rules):
  ``select="utilitarian"`` maximises the sum of weighted normalised returns,
  ``select="egalitarian"`` the smallest normalised return, ``select="weight"`` the total
  weight of the interpretations that hold. The chosen interpretations then become ordinary
  constraints of the rule, which runs unchanged.
* :func:`run_with_norms` runs a rule under norms and reports, in
  ``diagnostics["norms"]``, which interpretations were chosen and which norms and
  interpretations the result's policy satisfies (checked at the result's exact occupancy).
* :func:`norm_prices`: for a rule, each norm alone and all of them together against no norm:
  per-agent return change, the rule's objective change, how many agents lose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from policyagg.errors import InfeasibleError, InvalidProblemError, NormConflictError, SolverError
from policyagg.lottery import Lottery
from policyagg.norms import AmbiguousNorm, Norm, Norms, big_m, upper_rows
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.solvers.lp import LinearProgram, LPSolution, _highs_lp, quiet_highs, worst_status
from policyagg.solvers.lp import make_model as lp_make_model
from policyagg.solvers.occupancy import Rows, occupancy_program, utilities, with_ranges

#: How :func:`resolve_norms` chooses the interpretations of chance-constrained norms.
SELECTIONS = ("utilitarian", "egalitarian", "weight")
#: An agent *loses* under a norm when its normalised return drops by more than this (0.1% of its
#: range: rules that certify their optimum to a tolerance, such as Nash welfare's tangent cuts,
#: move agents by ~1e-4 between two solves of the same optimum; the exact changes are reported).
LOSS_TOL = 1e-3
#: The name of the price row that imposes every norm at once.
ALL_NORMS = "all norms"

_MS = highspy.HighsModelStatus


def as_norms(norms: Norms | Norm | Iterable[Norm]) -> Norms:
    """``norms`` as :class:`~policyagg.norms.Norms` (one norm, a list, or already Norms)."""
    if isinstance(norms, Norms):
        return norms
    if isinstance(norms, Norm):
        return Norms([norms])
    return Norms(norms)


def _check_select(select: str) -> str:
    if select not in SELECTIONS:
        raise InvalidProblemError(f"`select` must be one of {', '.join(SELECTIONS)}; got {select!r}")
    return select


# --------------------------------------------------------------------------- the selection program
@dataclass(frozen=True)
class _Layout:
    """Where each chance norm's binaries sit among the program's columns."""

    chance: tuple[AmbiguousNorm, ...]
    z_start: tuple[int, ...]  # column of each chance norm's first binary
    n_cols: int


def selection_program(
    problem: Problem, norms: Norms, *, select: str = "utilitarian", feasibility: bool = False
) -> tuple[LinearProgram, _Layout]:
    """The MILP over ``[d, z, (t)]`` that picks the interpretations of the chance norms (module
    doc); the other norms are plain rows. ``feasibility=True``: zero cost. ``problem`` must
    carry return ranges for guarantees and the criterion."""
    plain = [n for n in norms if not (isinstance(n, AmbiguousNorm) and n.chance)]
    chance = tuple(n for n in norms if isinstance(n, AmbiguousNorm) and n.chance)
    base = dataclasses.replace(problem, constraints=problem.constraints & Norms(plain).compile(problem))
    n_d = problem.mdp.n_state_actions
    n_z = sum(len(n.interpretations) for n in chance)
    egalitarian = select == "egalitarian" and not feasibility
    n_cols = n_d + n_z + int(egalitarian)
    rows: list[Rows] = []
    z_start, col = [], n_d
    for norm in chance:
        z_start.append(col)
        weight_row = sp.csr_array(
            (
                np.asarray(norm.weights),
                (np.zeros(len(norm.interpretations), dtype=int), col + np.arange(len(norm.interpretations))),
            ),
            shape=(1, n_cols),
        )
        for k, interpretation in enumerate(norm.interpretations):
            A, b = upper_rows(interpretation.compile(problem))
            M = big_m(A, b)
            # A d + M z_k <= b + M: with z_k = 1 the interpretation holds, with 0 the row is slack on O
            z_col = sp.csr_array((M, (np.arange(A.shape[0]), np.full(A.shape[0], col + k))), shape=(A.shape[0], n_cols))
            widened = sp.hstack([A, sp.csr_array((A.shape[0], n_cols - n_d))], format="csr")
            rows.append(Rows(norm.label(k), sp.csr_array(widened + z_col), np.full(A.shape[0], -np.inf), b + M))
        rows.append(
            Rows(f"{norm.name} (level {norm.level:g})", weight_row, np.array([norm.level - 1e-9]), np.array([np.inf]))
        )
        col += len(norm.interpretations)
    cost = np.zeros(n_cols)
    if not feasibility:
        C, c0 = utilities(problem, normalize=True)
        if select == "utilitarian":
            cost[:n_d] = problem.weights @ C / problem.weights.sum()
        elif select == "weight":
            for norm, start in zip(chance, z_start):
                cost[start : start + len(norm.interpretations)] = norm.weights
        else:  # egalitarian: max t with t <= u_i(d) = C_i d + c0_i
            cost[-1] = 1.0
            floor = sp.hstack(
                [sp.csr_array(-C), sp.csr_array((C.shape[0], n_z)), sp.csr_array(np.ones((C.shape[0], 1)))],
                format="csr",
            )
            rows.append(Rows("smallest normalised return", floor, np.full(C.shape[0], -np.inf), c0))
    lower = np.zeros(n_cols)
    upper = np.full(n_cols, np.inf)
    upper[n_d : n_d + n_z] = 1.0
    if egalitarian:
        lower[-1], upper[-1] = -np.inf, np.inf
    integrality = np.zeros(n_cols, dtype=bool)
    integrality[n_d : n_d + n_z] = True
    program = occupancy_program(
        base,
        cost,
        name="norm interpretations" if chance else "norm feasibility",
        maximize=True,
        extra_cols=n_cols - n_d,
        col_lower=lower,
        col_upper=upper,
        rows=rows,
        integrality=integrality if n_z else None,
    )
    return program.full, _Layout(chance, tuple(z_start), n_cols)


def _feasible(problem: Problem, norms: Norms, time_limit: float | None) -> bool:
    """Whether ``problem`` (its own constraints) and ``norms`` leave a policy: one LP/MILP
    with zero cost in HiGHS; :class:`SolverError` if HiGHS cannot tell in ``time_limit``."""
    lp, _ = selection_program(problem, norms, feasibility=True)
    h = quiet_highs()
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    if h.passModel(_highs_lp(lp)) == highspy.HighsStatus.kError:
        raise SolverError("norm feasibility: HiGHS refused the model; check the norms' data")
    h.run()
    status = h.getModelStatus()
    if status == _MS.kUnboundedOrInfeasible:  # presolve could not tell (zero cost: never unbounded)
        h.setOptionValue("presolve", "off")
        h.clearSolver()
        h.run()
        status = h.getModelStatus()
    if status in (_MS.kOptimal, _MS.kInfeasible):
        return bool(status == _MS.kOptimal)
    raise SolverError(
        f"norm feasibility: HiGHS stopped with status {h.modelStatusToString(status)!r}; raise `time_limit`",
        "time-limit" if status == _MS.kTimeLimit else "error",
    )


# --------------------------------------------------------------------------- conflicts
def conflicting_norms(
    problem: Problem, norms: Norms | Iterable[Norm], *, time_limit: float | None = None
) -> tuple[str, ...]:
    """The names of an irreducible infeasible subset of ``norms`` (``()`` if they are feasible).

    Deletion filter over norms (module doc): the subset is infeasible together with the
    problem's own constraints, and removing any one of its norms makes it feasible. A
    :class:`~policyagg.errors.InfeasibleError` if the problem's constraints alone are infeasible."""
    norms = as_norms(norms)
    problem = with_ranges(problem)
    if _feasible(problem, norms, time_limit):
        return ()
    if not _feasible(problem, Norms(), time_limit):
        raise InfeasibleError(
            "the problem's own constraints (before any norm) leave no policy; relax `problem.constraints`"
        )
    active = list(norms)
    for norm in list(active):
        trial = [n for n in active if n is not norm]
        if not _feasible(problem, Norms(trial), time_limit):
            active = trial
    return tuple(n.name for n in active)


def check_norms(problem: Problem, norms: Norms | Iterable[Norm], *, time_limit: float | None = None) -> None:
    """Raise :class:`~policyagg.errors.NormConflictError` naming an irreducible conflicting
    subset if ``norms`` leave no policy; return ``None`` otherwise."""
    conflict = conflicting_norms(problem, norms, time_limit=time_limit)
    if conflict:
        raise NormConflictError(_conflict_message(conflict), norms=conflict)


def _conflict_message(conflict: tuple[str, ...]) -> str:
    names = ", ".join(repr(n) for n in conflict)
    if len(conflict) == 1:
        return f"the norm {names} alone leaves no feasible policy (with the problem's own constraints); relax it"
    return (
        f"the norms {names} conflict: together they leave no feasible policy, and dropping any one of them "
        "makes the others feasible (an irreducible infeasible subset over norms, from a deletion filter); "
        "relax or drop one of them"
    )


# --------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class ResolvedNorms:
    """Norms made into constraints: ``constraints`` (plain norms, robust ambiguous norms and the
    chosen interpretations of chance norms), ``chosen`` (chance norm -> interpretation names),
    the ``select`` criterion, its value at the selection MILP's optimum (``None`` without chance
    norms) and the selection's ``status`` ("optimal", or "time-limit" for an incumbent)."""

    norms: Norms
    constraints: LinearConstraints
    chosen: dict[str, tuple[str, ...]]
    select: str
    objective: float | None
    status: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "norms": self.norms.names,
            "chosen": {k: list(v) for k, v in self.chosen.items()},
            "select": self.select,
            "selection_objective": self.objective,
            "selection_status": self.status,
        }


def resolve_norms(
    problem: Problem,
    norms: Norms | Norm | Iterable[Norm],
    *,
    select: str = "utilitarian",
    backend: str = "highs",
    time_limit: float | None = None,
) -> ResolvedNorms:
    """``norms`` as constraints for any rule, chance norms' interpretations chosen by ``select``
    (module doc). Infeasible norms raise :class:`~policyagg.errors.NormConflictError` naming an
    irreducible conflicting subset."""
    norms = as_norms(norms)
    _check_select(select)
    problem = with_ranges(problem, backend=backend)
    chance = [n for n in norms if isinstance(n, AmbiguousNorm) and n.chance]
    plain = Norms(n for n in norms if n not in chance)
    if not chance:
        check_norms(problem, norms, time_limit=time_limit)
        return ResolvedNorms(norms, norms.compile(problem), {}, select, None, "optimal")
    lp, layout = selection_program(problem, norms, select=select)
    model = lp_make_model(lp, backend=backend, time_limit=time_limit)
    try:
        solution: LPSolution = model.solve()
    except InfeasibleError:
        check_norms(problem, norms, time_limit=time_limit)
        raise  # the filter found the norms feasible after all: report the solver's own message
    except SolverError as exc:  # a MILP stopped by the time limit with a point: use it, say so
        found = getattr(exc, "solution", None)
        if not isinstance(found, LPSolution):
            raise
        solution = found
    constraints = plain.compile(problem)
    chosen: dict[str, tuple[str, ...]] = {}
    for norm, start in zip(layout.chance, layout.z_start):
        z = solution.x[start : start + len(norm.interpretations)]
        picked = [k for k in range(len(norm.interpretations)) if z[k] > 0.5]
        chosen[norm.name] = tuple(norm.interpretations[k].name for k in picked)
        constraints = constraints & norm.compile_interpretations(problem, picked)
    return ResolvedNorms(norms, constraints, chosen, select, float(solution.objective), solution.status)


# --------------------------------------------------------------------------- rules under norms
def _rule_function(rule: str | Callable[..., Any]) -> tuple[str, Callable[..., Any]]:
    from policyagg.solvers.registry import get_rule

    if isinstance(rule, str):
        return rule, get_rule(rule)
    if callable(rule):
        return getattr(rule, "__name__", "rule"), rule
    raise InvalidProblemError(f"`rule` must be a rule's name or a rule; got {rule!r}")


def run_with_norms(
    rule: str | Callable[..., Any],
    problem: Problem,
    samples: ReturnSamples | None = None,
    *,
    norms: Norms | Norm | Iterable[Norm],
    select: str = "utilitarian",
    **options: Any,
) -> Result | Lottery:
    """``rule(problem, samples, constraints=<norms>, **options)`` with ``norms`` resolved by
    :func:`resolve_norms`. ``diagnostics["norms"]``: the resolution (:meth:`ResolvedNorms.as_dict`)
    and ``satisfied``, per norm whether the result's exact occupancy meets it (an ambiguous
    norm: per interpretation, and the weight that holds). The status is the worse of the
    selection's and the rule's."""
    _, function = _rule_function(rule)
    norms = as_norms(norms)
    backend = options.get("backend", "highs")
    problem = with_ranges(problem, backend=backend)
    resolved = resolve_norms(problem, norms, select=select, backend=backend, time_limit=options.get("time_limit"))
    extra = options.pop("constraints", None)
    constraints = resolved.constraints if extra is None else resolved.constraints & extra
    result = function(problem, samples, constraints=constraints, **options)
    report = resolved.as_dict() | {"satisfied": _satisfied(norms, problem, result)}
    return dataclasses.replace(
        result,
        diagnostics=result.diagnostics | {"norms": report},
        status=worst_status([result.status, resolved.status]),
    )


def _satisfied(norms: Norms, problem: Problem, result: Result | Lottery) -> dict[str, Any]:
    """:meth:`Norms.report` at the result's occupancy; for a lottery, at every policy it may draw
    (a norm is satisfied when every support policy satisfies it; the worst violation, and an
    interpretation holds when it holds in every support policy)."""
    if not isinstance(result, Lottery):
        return norms.report(problem, result.occupancy)
    if result.support_occupancies is None:
        raise InvalidProblemError(
            f"{result.rule}: norms are checked on occupancies; this lottery has estimated returns only"
        )
    reports = [norms.report(problem, d) for d in result.support_occupancies]
    merged: dict[str, Any] = {}
    for name, first in reports[0].items():
        entries = [r[name] for r in reports]
        merged[name] = dict(first) | {"satisfied": all(e["satisfied"] for e in entries)}
        if "violation" in first:
            merged[name]["violation"] = max(e["violation"] for e in entries)
        if "interpretations" in first:
            merged[name]["interpretations"] = {
                i: all(e["interpretations"][i] for e in entries) for i in first["interpretations"]
            }
            merged[name]["weight_satisfied"] = min(e["weight_satisfied"] for e in entries)
    return merged


# --------------------------------------------------------------------------- the price of a norm
def rule_objective(result: Result | Lottery, problem: Problem) -> tuple[str, float]:
    """The rule's objective at ``result`` (``(what, value)``), read from the result: welfare for
    utilitarian, the smallest entitlement for egalitarian, the quantile for max_quantile, the
    number of approvers, the Borda score, Nash welfare on normalised returns, the OWA value,
    the bargaining rules' Nash product of gains, Kalai-Smorodinsky share and smallest gain,
    the PVC epsilon (smaller is better); any other rule: the mean normalised return."""
    w = problem.weights
    raw = result.options.get("normalize") is False
    u = result.returns if raw else result.normalized
    rule = result.rule
    if rule == "utilitarian":
        return "weighted welfare", float(w @ u)
    if rule == "egalitarian":
        return "smallest u_i / w_i", float(np.min(u / w))
    if rule == "max_quantile" and result.ranks is not None:
        return "quantile (min rank)", float(result.ranks.min())
    if rule == "approval" and result.ranks is not None:
        return "approvers", float(np.sum(w * (result.ranks >= result.options.get("alpha", 0.9))))
    if rule == "borda" and "borda" in result.report:
        return "Borda score", float(result.report["borda"])
    if rule == "nash_welfare":
        with np.errstate(divide="ignore"):
            return "sum w_i log u_i", float(w @ np.log(np.clip(result.normalized, 0.0, None)))
    if rule == "generalized_gini" and "owa_value" in result.diagnostics:
        return "OWA welfare", float(result.diagnostics["owa_value"])
    if rule == "nash_bargaining" and "nash_log_product" in result.diagnostics:
        return "sum w_i log(J_i - d_i)", float(result.diagnostics["nash_log_product"])
    if rule == "kalai_smorodinsky" and "ks_share" in result.diagnostics:
        return "equal share of ideal gains", float(result.diagnostics["ks_share"])
    if rule == "egalitarian_gains" and "disagreement_point" in result.diagnostics:
        gains = result.returns - np.asarray(result.diagnostics["disagreement_point"], dtype=float)
        if result.options.get("normalize"):
            gains = gains / np.where(problem.require_ranges().flat, 1.0, problem.require_ranges().width)
        return "smallest gain / w_i", float(np.min(gains / w))
    if rule == "pvc" and result.report.get("pvc_epsilon") is not None:
        return "PVC epsilon (lower is better)", float(result.report["pvc_epsilon"])
    return "mean normalised return", float(np.mean(result.normalized))


@dataclass(frozen=True)
class NormPrice:
    """What imposing ``norm`` (a norm's name, or :data:`ALL_NORMS`) costs under ``rule``, against
    the same rule without norms: returns and normalised returns without and with it (``(n,)``),
    the rule's objective (``objective_name``) without and with it, the agents that lose
    (normalised return down by more than :data:`LOSS_TOL`) and the status ("infeasible" when
    the norm leaves no policy: the ``with`` figures are then NaN)."""

    rule: str
    norm: str
    objective_name: str
    objective_without: float
    objective_with: float
    returns_without: NDArray[np.float64]
    returns_with: NDArray[np.float64]
    normalized_without: NDArray[np.float64]
    normalized_with: NDArray[np.float64]
    gini_without: float
    gini_with: float
    status: str
    satisfied: Mapping[str, Any] | None = None
    chosen: Mapping[str, tuple[str, ...]] | None = None  # chance norms: the interpretations chosen

    @property
    def return_change(self) -> NDArray[np.float64]:
        return self.returns_with - self.returns_without

    @property
    def normalized_change(self) -> NDArray[np.float64]:
        return self.normalized_with - self.normalized_without

    @property
    def objective_change(self) -> float:
        return self.objective_with - self.objective_without

    @property
    def losers(self) -> int:
        """Agents whose normalised return drops by more than :data:`LOSS_TOL`."""
        return int(np.sum(self.normalized_change < -LOSS_TOL))


def norm_prices(
    rule: str | Callable[..., Result],
    problem: Problem,
    samples: ReturnSamples | None = None,
    *,
    norms: Norms | Iterable[Norm],
    select: str = "utilitarian",
    **options: Any,
) -> list[NormPrice]:
    """The price of each norm alone, then of all of them together (:data:`ALL_NORMS`), under
    ``rule`` (re-solved without and with the norm). A norm set that leaves no policy gets a
    row with status "infeasible" (and NaN figures) instead of an error."""
    _, function = _rule_function(rule)
    norms = as_norms(norms)
    problem = with_ranges(problem, backend=options.get("backend", "highs"))
    base = function(problem, samples, **options)
    what, before = rule_objective(base, problem)
    out = []
    trials = [(n.name, Norms([n])) for n in norms] + ([(ALL_NORMS, norms)] if len(norms) > 1 else [])
    for label, subset in trials:
        try:
            result = run_with_norms(function, problem, samples, norms=subset, select=select, **dict(options))
        except NormConflictError:
            nan = np.full(problem.n_agents, np.nan)
            out.append(
                NormPrice(
                    base.rule,
                    label,
                    what,
                    before,
                    np.nan,
                    base.returns,
                    nan,
                    base.normalized,
                    nan,
                    base.gini,
                    np.nan,
                    "infeasible",
                )
            )
            continue
        _, after = rule_objective(result, problem)
        out.append(
            NormPrice(
                base.rule,
                label,
                what,
                before,
                after,
                base.returns,
                result.returns,
                base.normalized,
                result.normalized,
                base.gini,
                result.gini,
                result.status,
                result.diagnostics["norms"]["satisfied"],
                {k: tuple(v) for k, v in result.diagnostics["norms"]["chosen"].items()},
            )
        )
    return out
