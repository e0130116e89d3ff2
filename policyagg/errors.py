"""Typed errors of policyagg. Every message says what to change."""

import numpy as np


class PolicyAggError(Exception):
    """Base class of every error raised by policyagg."""


class InvalidMDPError(PolicyAggError, ValueError):
    """The transition model, initial distribution or discount is not a valid MDP."""


class InvalidProblemError(PolicyAggError, ValueError):
    """Rewards, weights, names, constraints or options do not fit the MDP."""


class InvalidSamplesError(PolicyAggError, ValueError):
    """A matrix of sampled returns is malformed or does not fit the problem."""


class CorruptFileError(PolicyAggError, ValueError):
    """A file written by policyagg (a result, samples, a checkpoint) is missing, damaged,
    mismatched or not one of ours; the message names the file and what to do."""


class OutputError(PolicyAggError, OSError):
    """A result or checkpoint cannot be written (disk full, no permission, a file where a folder
    should be); nothing half-written is left behind. The message names the path and what to do."""


class OutputLockedError(PolicyAggError, RuntimeError):
    """Another run is writing into the same output folder."""


class SolverError(PolicyAggError, RuntimeError):
    """The LP/MILP solver failed; the message carries the solver's status text."""

    def __init__(self, message: str, status: str = "error") -> None:
        super().__init__(message)
        self.status = status


class InfeasibleError(SolverError):
    """The feasible set is empty (the message names the constraint families involved)."""

    def __init__(self, message: str, status: str = "infeasible") -> None:
        super().__init__(message, status)


class NormConflictError(InfeasibleError):
    """A set of norms leaves no feasible policy. ``norms`` names an irreducible conflicting
    subset: together they are infeasible, and dropping any one of them makes the rest feasible."""

    def __init__(self, message: str, norms: tuple[str, ...] = (), status: str = "infeasible") -> None:
        super().__init__(message, status)
        self.norms = tuple(norms)


class UnboundedError(SolverError):
    """The objective is unbounded on the feasible set."""

    def __init__(self, message: str, status: str = "unbounded") -> None:
        super().__init__(message, status)


class SolverTimeLimitError(SolverError):
    """The time limit was reached before optimality was proven.

    ``solution`` holds the best solution found so far, or ``None``.
    """

    def __init__(self, message: str, status: str = "time-limit", solution: object | None = None) -> None:
        super().__init__(message, status)
        self.solution = solution


class PolicyEvaluationError(PolicyAggError, ArithmeticError):
    """A policy could not be evaluated (singular system, an iterative solver that did not
    converge, or an average-reward policy that could not be made unichain)."""


class CheckpointWarning(UserWarning):
    """A saved sample or result was damaged or did not match; it is being computed again."""


class SolverWarning(UserWarning):
    """A solver returned an answer it could not prove optimal (see the message and the
    result's ``status``)."""


class GapWarning(SolverWarning):
    """Column generation stopped with its optimality gap still open (time limit or stall):
    the answer is feasible but only within the reported gap of the optimum."""


class ApprovalGapWarning(GapWarning):
    """alpha-approval's search for the heaviest approving set stopped at its time limit: the
    returned set is approved by the returned policy, but a heavier one may exist, by at most
    ``diagnostics["approval_gap"]``."""


def check_count(name: str, value: object, minimum: int = 1, why: str | None = None) -> int:
    """``value`` as an ``int >= minimum`` (bools refused); else an :class:`InvalidProblemError`
    naming the argument ``name`` (and ``why`` the bound, if given)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        wanted = "a positive integer" if minimum == 1 and why is None else f"an integer >= {minimum}"
        raise InvalidProblemError(f"`{name}` must be {wanted}{f' ({why})' if why else ''}; got {value!r}")
    return int(value)


def check_real(name: str, value: object, error: type[PolicyAggError] = InvalidProblemError) -> float:
    """``value`` as a float if it is a real number (Python or numpy int/float; not a bool or a
    string, which would otherwise convert silently); else ``error`` naming the argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise error(f"`{name}` must be a real number; got {value!r} ({type(value).__name__})")
    return float(value)


def float_array(name: str, value: object, error: type[PolicyAggError] = InvalidProblemError) -> np.ndarray:
    """``value`` as a float array (a copy); a complex, ragged or non-numeric input is ``error``
    naming the argument, not a silent cast or numpy's ``ValueError``."""
    try:
        array = np.asarray(value)
        real = not np.iscomplexobj(array)
        if real:
            array = np.array(array, dtype=float)  # one copy, converted on the way
    except (TypeError, ValueError) as exc:
        raise error(f"`{name}` must be an array of numbers of one shape ({exc})") from None
    if not real:
        raise error(f"`{name}` must be real; got a complex array")
    return array
