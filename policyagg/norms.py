"""Norms: role-specific rules of conduct compiled to linear constraints on the occupancy ``d``.

A *role* is a set of states (given by index, or by a predicate over the states' labels: an
environment's decoded observations, the attention model's phase tuples). A norm is a frozen
dataclass with a ``name`` and ``compile(problem) -> LinearConstraints`` whose rows are all
labelled with that name, so an infeasible set of norms can be reported by name
(:func:`policyagg.solvers.norms.conflicting_norms`). Every row acts on the normalised occupancy
(``d >= 0``, ``sum d = 1``), so "share of the time" is a sum of entries of ``d``:

* :class:`Prohibition`: never take ``actions`` in the role:  ``sum_{s in role, a in actions} d(s, a) <= 0``;
* :class:`Obligation`: take only ``actions`` in the role: the prohibition of every other action;
* :class:`Rate`: ``sum_{s in role, a in actions} d(s, a) <= c`` (``at_most``) and/or ``>= c``
  (``at_least``): the long-run (average reward) or discounted frequency of those state-actions;
* :class:`Guarantee`: agent ``i``'s normalised return at least ``f``:
  ``<r_i, d> >= min_O J_i + f (max_O J_i - min_O J_i)`` (needs ``problem.ranges``);
* :class:`AllOf`: several norms under one name (e.g. one rate norm per site);
* :class:`AmbiguousNorm`: interpretations (each a norm) with weights, all of which must hold
  (``mode="robust"``, compiled here) or a subset of total weight at least ``level``
  (``mode="chance"``, a MILP solved by :func:`policyagg.solvers.norms.resolve_norms`).

Where a rule takes extra constraints (``Problem(..., constraints=...)``, a rule's
``constraints=`` option) a compiled norm set plugs in unchanged:
``rule(problem, constraints=Norms([...]).compile(problem))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidProblemError, check_real
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem

#: A norm counts as satisfied by an occupancy when its rows are violated by at most this
#: (occupancies are normalised to sum 1; a policy derived from a solver's point meets the rows
#: to the solver's tolerance, about 1e-9, and average-reward policies that mix closed classes
#: with a little of the uniform policy's occupancy, 1e-6, see ``solvers.completion``).
SATISFIED_TOL = 1e-5
#: The modes of an :class:`AmbiguousNorm`.
AMBIGUITY_MODES = ("robust", "chance")


def _name(value: object, what: str = "norm") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidProblemError(f"a {what}'s `name` must be a non-empty string; got {value!r}")
    return value


def _actions(value: object, name: str) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of distinct non-negative action indices."""
    items = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (
        isinstance(items, (str, bytes))
        or not isinstance(items, Iterable)
        or not (items := list(items))
        or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 0 for a in items)
    ):
        raise InvalidProblemError(
            f"norm {name!r}: `actions` must be an action index or a non-empty list of them; got {value!r}"
        )
    return tuple(sorted({int(a) for a in items}))


# --------------------------------------------------------------------------- roles
@dataclass(frozen=True)
class Role:
    """A set of states: ``states`` (indices; ``None`` = every state) and a ``description`` for
    messages. ``n_states``: the number of states the labels described, checked when compiled."""

    states: tuple[int, ...] | None = None
    description: str = "every state"
    n_states: int | None = None

    def __post_init__(self) -> None:
        if self.states is not None:
            states = self.states
            if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in states):
                raise InvalidProblemError(f"role {self.description!r}: states must be non-negative integers")
            object.__setattr__(self, "states", tuple(sorted({int(s) for s in states})))

    @classmethod
    def every(cls) -> Role:
        """Every state."""
        return cls()

    @classmethod
    def of(cls, states: Iterable[int], description: str | None = None) -> Role:
        """The states with the given indices."""
        states = tuple(states)
        return cls(states, description or f"states {list(states)}")

    @classmethod
    def where(cls, predicate: Callable[[Any], bool], labels: Sequence[Any], description: str) -> Role:
        """The states ``s`` with ``predicate(labels[s])``; ``labels`` has one entry per state, e.g.
        ``EnvModel.observations`` of a converted Gymnasium environment (the absorbing state's
        label is ``None``) or ``tuple(AttentionModel.phases()[s])``."""
        states = tuple(s for s, label in enumerate(labels) if bool(predicate(label)))
        return cls(states, description, len(labels))

    def indices(self, n_states: int) -> NDArray[np.int64]:
        """The role's state indices, checked against an MDP with ``n_states`` states."""
        if self.n_states is not None and self.n_states != n_states:
            raise InvalidProblemError(
                f"role {self.description!r} was built from labels of {self.n_states} states; the MDP has {n_states}"
            )
        if self.states is None:
            return np.arange(n_states)
        states = np.asarray(self.states, dtype=np.int64)
        if states.size and states.max() >= n_states:
            raise InvalidProblemError(
                f"role {self.description!r} names state {int(states.max())}; the MDP has states 0..{n_states - 1}"
            )
        return states


def _indicator(problem: Problem, role: Role, actions: Sequence[int] | None, name: str) -> sp.csr_array:
    """The row ``1`` on ``(s, a)`` for ``s`` in ``role`` and ``a`` in ``actions`` (``None``: all)."""
    S, A = problem.mdp.n_states, problem.mdp.n_actions
    acts = np.arange(A) if actions is None else np.asarray(actions, dtype=np.int64)
    if acts.size and acts.max() >= A:
        raise InvalidProblemError(f"norm {name!r} names action {int(acts.max())}; the MDP has actions 0..{A - 1}")
    cols = (role.indices(S)[:, None] * A + acts[None, :]).ravel()
    return sp.csr_array((np.ones(cols.size), (np.zeros(cols.size, dtype=np.int64), cols)), shape=(1, S * A))


# --------------------------------------------------------------------------- norms
class Norm:
    """Base of the norms: a ``name`` and :meth:`compile`."""

    name: str

    def compile(self, problem: Problem) -> LinearConstraints:
        """The norm's rows on ``problem``'s occupancy, every one labelled ``self.name``."""
        raise NotImplementedError

    def violation(self, problem: Problem, d: ArrayLike) -> float:
        """The largest violation of the norm's rows at occupancy ``d`` (0 when it holds)."""
        return self.compile(problem).violation(d)

    def satisfied(self, problem: Problem, d: ArrayLike, tol: float = SATISFIED_TOL) -> bool:
        """Whether ``d`` meets the norm within ``tol``."""
        return self.violation(problem, d) <= tol


@dataclass(frozen=True)
class Prohibition(Norm):
    """Never take any of ``actions`` in ``role``.

    .. math:: \\sum_{s \\in \\text{role}, a \\in \\text{actions}} d(s, a) \\le 0
    """

    name: str
    role: Role
    actions: tuple[int, ...]

    def __post_init__(self) -> None:
        _name(self.name)
        object.__setattr__(self, "actions", _actions(self.actions, self.name))

    def compile(self, problem: Problem) -> LinearConstraints:
        row = _indicator(problem, self.role, self.actions, self.name)
        return LinearConstraints.build(row.shape[1], A_ub=row, b_ub=[0.0], label=self.name)


@dataclass(frozen=True)
class Obligation(Norm):
    """In ``role`` take only ``actions``: every other action is prohibited there."""

    name: str
    role: Role
    actions: tuple[int, ...]

    def __post_init__(self) -> None:
        _name(self.name)
        object.__setattr__(self, "actions", _actions(self.actions, self.name))

    def compile(self, problem: Problem) -> LinearConstraints:
        A = problem.mdp.n_actions
        if max(self.actions) >= A:
            raise InvalidProblemError(f"norm {self.name!r} names action {max(self.actions)}; the MDP has 0..{A - 1}")
        others = [a for a in range(A) if a not in self.actions]
        SA = problem.mdp.n_state_actions
        if not others:  # every action allowed: nothing to forbid
            return LinearConstraints.empty(SA)
        return Prohibition(self.name, self.role, tuple(others)).compile(problem)


@dataclass(frozen=True)
class Rate(Norm):
    """The frequency of ``actions`` (``None``: any action) in ``role`` is at most ``at_most``
    and/or at least ``at_least`` (shares of the time in [0, 1]).

    .. math:: \\text{at\\_least} \\le \\sum_{s \\in \\text{role}, a \\in \\text{actions}} d(s, a) \\le \\text{at\\_most}
    """

    name: str
    role: Role
    actions: tuple[int, ...] | None = None
    at_most: float | None = None
    at_least: float | None = None

    def __post_init__(self) -> None:
        _name(self.name)
        if self.actions is not None:
            object.__setattr__(self, "actions", _actions(self.actions, self.name))
        if self.at_most is None and self.at_least is None:
            raise InvalidProblemError(f"rate norm {self.name!r}: give `at_most` or `at_least` (a share in [0, 1])")
        for key in ("at_most", "at_least"):
            value = getattr(self, key)
            if value is not None:
                value = check_real(f"{key}", value)
                if not 0.0 <= value <= 1.0:
                    raise InvalidProblemError(
                        f"rate norm {self.name!r}: `{key}` is a share of the time, in [0, 1]; got {value!r}"
                    )
                object.__setattr__(self, key, value)

    def compile(self, problem: Problem) -> LinearConstraints:
        row = _indicator(problem, self.role, self.actions, self.name)
        rows, rhs = [], []
        if self.at_most is not None:
            rows.append(row)
            rhs.append(self.at_most)
        if self.at_least is not None:
            rows.append(-row)
            rhs.append(-self.at_least)
        return LinearConstraints.build(row.shape[1], A_ub=sp.vstack(rows, format="csr"), b_ub=rhs, label=self.name)


@dataclass(frozen=True)
class Guarantee(Norm):
    """Agent ``agent`` (an index or a name) gets a normalised return of at least ``floor``.

    .. math:: \\langle r_i, d \\rangle \\ge \\min_O J_i + f (\\max_O J_i - \\min_O J_i)

    The range is over the whole polytope ``O`` (``problem.ranges``, from
    ``solvers.with_ranges``), as everywhere in policyagg. An indifferent agent (a flat range)
    has normalised return 1: the norm holds trivially.
    """

    name: str
    agent: int | str
    floor: float

    def __post_init__(self) -> None:
        _name(self.name)
        if isinstance(self.agent, bool) or not isinstance(self.agent, (int, np.integer, str)):
            raise InvalidProblemError(
                f"guarantee {self.name!r}: `agent` must be an index or a name; got {self.agent!r}"
            )
        floor = check_real("floor", self.floor)
        if not 0.0 <= floor <= 1.0:
            raise InvalidProblemError(
                f"guarantee {self.name!r}: `floor` is a normalised return, in [0, 1]; got {self.floor!r}"
            )
        object.__setattr__(self, "floor", floor)

    def agent_index(self, problem: Problem) -> int:
        if isinstance(self.agent, str):
            if self.agent not in problem.names:
                raise InvalidProblemError(
                    f"guarantee {self.name!r}: no agent named {self.agent!r}; the agents are {list(problem.names)}"
                )
            return problem.names.index(self.agent)
        if not 0 <= self.agent < problem.n_agents:
            raise InvalidProblemError(
                f"guarantee {self.name!r}: `agent` = {self.agent} is not in 0..{problem.n_agents - 1}"
            )
        return int(self.agent)

    def compile(self, problem: Problem) -> LinearConstraints:
        i = self.agent_index(problem)
        ranges = problem.require_ranges()
        SA = problem.mdp.n_state_actions
        if ranges.flat[i]:
            return LinearConstraints.build(SA, A_ub=sp.csr_array((1, SA)), b_ub=[0.0], label=self.name)
        value = ranges.lower[i] + self.floor * ranges.width[i]
        return LinearConstraints.build(SA, A_ub=-problem.reward_matrix[i : i + 1], b_ub=[-value], label=self.name)


@dataclass(frozen=True)
class AllOf(Norm):
    """Several norms held together under one ``name`` (their rows relabelled with it)."""

    name: str
    parts: tuple[Norm, ...]

    def __post_init__(self) -> None:
        _name(self.name)
        object.__setattr__(self, "parts", tuple(self.parts))
        if not self.parts or not all(isinstance(p, Norm) for p in self.parts):
            raise InvalidProblemError(f"norm {self.name!r}: `parts` must be a non-empty sequence of norms")

    def compile(self, problem: Problem) -> LinearConstraints:
        return relabel(_conjunction([p.compile(problem) for p in self.parts], problem), self.name)


@dataclass(frozen=True)
class AmbiguousNorm(Norm):
    """A norm with several ``interpretations`` (norms with distinct names) and ``weights``
    (positive; scaled to sum 1). ``mode="robust"``: every interpretation holds (compiled here).
    ``mode="chance"``: interpretations of total weight at least ``level`` hold,

    .. math:: \\sum_k w_k z_k \\ge p, \\quad z_k = 1 \\Rightarrow A_k d \\le b_k, \\quad z_k \\in \\{0, 1\\},

    a MILP with one binary per interpretation, solved by
    :func:`policyagg.solvers.norms.resolve_norms` (not by :meth:`compile`).
    """

    name: str
    interpretations: tuple[Norm, ...]
    weights: tuple[float, ...] | None = None
    mode: str = "robust"
    level: float = 1.0

    def __post_init__(self) -> None:
        _name(self.name)
        interpretations = tuple(self.interpretations)
        if not interpretations or not all(isinstance(n, Norm) for n in interpretations):
            raise InvalidProblemError(f"norm {self.name!r}: `interpretations` must be a non-empty sequence of norms")
        names = [n.name for n in interpretations]
        if len(set(names)) != len(names):
            raise InvalidProblemError(f"norm {self.name!r}: interpretation names must be distinct; got {names}")
        raw = np.ones(len(interpretations)) if self.weights is None else np.asarray(self.weights, dtype=float)
        if raw.shape != (len(interpretations),) or not np.all(np.isfinite(raw) & (raw > 0)):
            raise InvalidProblemError(
                f"norm {self.name!r}: `weights` must be {len(interpretations)} positive numbers, one per "
                f"interpretation; got {self.weights!r}"
            )
        if self.mode not in AMBIGUITY_MODES:
            raise InvalidProblemError(f"norm {self.name!r}: `mode` must be 'robust' or 'chance'; got {self.mode!r}")
        level = check_real("level", self.level)
        if not 0.0 < level <= 1.0:
            raise InvalidProblemError(
                f"norm {self.name!r}: `level` is a total weight of interpretations, in (0, 1]; got {self.level!r}"
            )
        object.__setattr__(self, "interpretations", interpretations)
        object.__setattr__(self, "weights", tuple(float(w) for w in raw / raw.sum()))
        object.__setattr__(self, "level", level)

    @property
    def chance(self) -> bool:
        """Whether only a subset of the interpretations must hold (``mode="chance"`` and ``level < 1``)."""
        return self.mode == "chance" and not self.level >= 1.0 - 1e-12

    def compile(self, problem: Problem) -> LinearConstraints:
        if self.chance:
            raise InvalidProblemError(
                f"norm {self.name!r} is chance-constrained (level {self.level:g}): which interpretations hold is "
                "chosen by a MILP; use `policyagg.solvers.norms.resolve_norms(problem, norms)` (or "
                "`run_with_norms`), or mode='robust'"
            )
        return relabel(self.compile_interpretations(problem, range(len(self.interpretations))), self.name)

    def compile_interpretations(self, problem: Problem, chosen: Iterable[int]) -> LinearConstraints:
        """The rows of the interpretations with indices ``chosen``, labelled ``name[interpretation]``."""
        parts = [relabel(self.interpretations[k].compile(problem), self.label(k)) for k in chosen]
        return _conjunction(parts, problem)

    def label(self, k: int) -> str:
        return f"{self.name}[{self.interpretations[k].name}]"


# --------------------------------------------------------------------------- sets of norms
@dataclass(frozen=True, init=False)
class Norms:
    """A list of norms with distinct names; :meth:`compile` joins their rows with ``&``."""

    items: tuple[Norm, ...] = field(default=())

    def __init__(self, norms: Iterable[Norm] = ()) -> None:
        items = tuple(norms)
        if not all(isinstance(n, Norm) for n in items):
            bad = next(n for n in items if not isinstance(n, Norm))
            raise InvalidProblemError(f"`norms` must hold norms (Prohibition, Rate, ...); got {type(bad).__name__}")
        names = [n.name for n in items]
        if len(set(names)) != len(names):
            raise InvalidProblemError(f"norm names must be distinct; got {names}")
        object.__setattr__(self, "items", items)

    def __iter__(self) -> Iterator[Norm]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, name: str) -> Norm:
        for norm in self.items:
            if norm.name == name:
                return norm
        raise InvalidProblemError(f"no norm named {name!r}; the norms are {self.names}")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.items]

    def without(self, name: str) -> Norms:
        self[name]
        return Norms(n for n in self.items if n.name != name)

    def compile(self, problem: Problem) -> LinearConstraints:
        """Every norm's rows (each labelled with its norm's name), stacked."""
        return _conjunction([n.compile(problem) for n in self.items], problem)

    def report(self, problem: Problem, d: ArrayLike, tol: float = SATISFIED_TOL) -> dict[str, Any]:
        """Per norm: whether ``d`` satisfies it (an ambiguous norm: per interpretation too)."""
        return {norm.name: satisfaction(norm, problem, d, tol) for norm in self.items}


def satisfaction(norm: Norm, problem: Problem, d: ArrayLike, tol: float = SATISFIED_TOL) -> dict[str, Any]:
    """``{"satisfied": bool, "violation": float}``; an :class:`AmbiguousNorm` adds
    ``"interpretations"`` (name -> satisfied) and ``"weight_satisfied"``."""
    if isinstance(norm, AmbiguousNorm):
        held = {i.name: i.satisfied(problem, d, tol) for i in norm.interpretations}
        weight = float(sum(w for w, ok in zip(norm.weights or (), held.values()) if ok))
        need = norm.level if norm.chance else 1.0
        return {
            "satisfied": weight >= need - 1e-9,
            "interpretations": held,
            "weight_satisfied": weight,
            "mode": norm.mode,
            "level": norm.level,
        }
    violation = norm.violation(problem, d)
    return {"satisfied": violation <= tol, "violation": violation}


def relabel(constraints: LinearConstraints, label: str) -> LinearConstraints:
    """``constraints`` with every row labelled ``label``."""
    return LinearConstraints(
        constraints.A_ub,
        constraints.b_ub,
        constraints.A_eq,
        constraints.b_eq,
        (label,) * constraints.A_ub.shape[0],
        (label,) * constraints.A_eq.shape[0],
    )


def _conjunction(parts: list[LinearConstraints], problem: Problem) -> LinearConstraints:
    out = LinearConstraints.empty(problem.mdp.n_state_actions)
    for part in parts:
        out = out & part
    return out


def upper_rows(constraints: LinearConstraints) -> tuple[sp.csr_array, NDArray[np.float64]]:
    """The constraints as ``A d <= b`` only (each equality ``a d = b`` as ``a d <= b``, ``-a d <= -b``)."""
    A = sp.vstack([constraints.A_ub, constraints.A_eq, -constraints.A_eq], format="csr")
    b = np.concatenate([constraints.b_ub, constraints.b_eq, -constraints.b_eq])
    return sp.csr_array(A), b


def big_m(A: sp.csr_array, b: ArrayLike) -> NDArray[np.float64]:
    """A valid big-M per row of ``A d <= b`` over the occupancy polytope: ``O`` lies in the
    simplex ``{d >= 0, sum d = 1}`` (SPEC section 2), where ``max a d = max_j a_j`` (zeros
    included), so ``a d - b <= M = max(max_j a_j - b, 0)`` for every ``d`` in ``O``."""
    A = sp.csr_array(A)
    b = np.asarray(b, dtype=float)
    if A.shape[0] == 0:
        return np.zeros(0)
    top = A.max(axis=1)  # scipy's sparse max counts the implicit zeros
    top = np.asarray(top.toarray() if sp.issparse(top) else top, dtype=float).ravel()
    return np.asarray(np.maximum(top - b, 0.0), dtype=float)
