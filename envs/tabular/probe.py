"""Exact outcome distribution of a random step, by scripting the environment's generator.

:func:`probe` runs ``call(env)`` (a ``step`` or a ``reset``) on restored copies whose
``np_random`` is a :class:`ScriptedRNG`: every draw is a fixed number ``u`` in ``[0, 1)``.
The outcome as a function of the first draw ``u`` is mapped on the grid ``k / PROBE_GRID``
and each change point is located to the last bit by bisection over doubles (the bit
patterns of non-negative doubles are ordered like the doubles); later draws are handled
the same way, recursively. So

    P(outcome) = sum over the intervals I of u on which it occurs of |I|,

exactly, for code of the form ``u < p`` or a categorical draw. Caveat: a piece of ``u``
narrower than ``1 / PROBE_GRID`` between two grid points with the same outcome is not seen.

Every run is watched for randomness from elsewhere (:class:`HiddenRandomness`): the
generators held by the restored copy must keep their state, the run must create none at
the top level of a layer, and the process-wide generators (the ``random`` module, the
global ``numpy.random``, top-level generators of the environment's modules) must be
unchanged at the checks (every :data:`_GLOBAL_CHECK_EVERY` runs and at the end; they are
restored afterwards).
"""

from __future__ import annotations

import random as _pyrandom
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar, cast

import numpy as np

from policyagg.envs.tabular.snapshot import (
    RNG_TYPES,
    GlobalGenerators,
    Snapshot,
    find_generator,
    fingerprint,
    generator_type,
    layers_of,
    same_state,
)
from policyagg.envs.tabular.states import State, StateStore

#: Grid of draws ``u = k / PROBE_GRID`` on which a stochastic step is mapped before bisection.
PROBE_GRID = 32
#: Most restored steps spent on the exact distribution of one ``(state, action)``.
PROBE_BUDGET = 20_000
#: Probabilities of two outcome distributions closer than this are the same.
_SAME_PROB = 1e-12
#: Runs between two checks of the process-wide generators (each check costs about 0.1 ms).
_GLOBAL_CHECK_EVERY = 64
_ONE_MINUS = float(np.nextafter(1.0, 0.0))

#: What one run returns (a step's or a reset's outcome), hashable.
Outcome = TypeVar("Outcome", bound=Hashable)


class ProbeFailed(Exception):
    """The step's distribution cannot be found exactly (the message says why)."""


class HiddenRandomness(ProbeFailed):
    """The step draws from a generator other than ``env.np_random`` (the message names it)."""

    def __init__(self, source: str) -> None:
        super().__init__(f"the step draws from {source}, not from `env.unwrapped.np_random`")
        self.source = source


class _ProbeSignal(BaseException):
    """Raised through the environment's code (BaseException: a broad ``except Exception`` in it cannot swallow it)."""


class _NeedDraw(_ProbeSignal):
    """The run used every scripted draw and wants another."""


class _Unprobeable(_ProbeSignal):
    """The environment uses its generator in a way that has no scripted form."""


class ScriptedRNG:
    """Stands in for ``env.np_random``: every draw consumes one scripted ``u`` in ``[0, 1)``.

    ``random``/``uniform`` return ``u`` (scaled); ``integers`` and ``choice`` map ``u`` to
    the same distribution numpy samples from (uniform, or the ``p`` CDF as numpy inverts it).
    Any other use of the generator raises :class:`_Unprobeable`.
    """

    def __init__(self, draws: Sequence[float], filler: float | None = None) -> None:
        self._draws = draws
        self._filler = filler  # the value of draws past the script (None: ask for more)
        self.used = 0

    def _take(self, count: int) -> np.ndarray:
        if self.used + count > len(self._draws):
            if self._filler is None:
                raise _NeedDraw()
            self._draws = list(self._draws) + [self._filler] * (self.used + count - len(self._draws))
        out = np.asarray(self._draws[self.used : self.used + count], dtype=float)
        self.used += count
        return out

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        if out is not None:
            raise _Unprobeable("Generator.random(out=...)")
        if size is None:
            return float(self._take(1)[0])
        shape = (size,) if _is_scalar(size) else tuple(size)
        return self._take(int(np.prod(shape))).reshape(shape).astype(dtype)

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        if not (_is_scalar(low) and _is_scalar(high)):
            raise _Unprobeable("Generator.uniform with array bounds")
        return low + (high - low) * self.random(size)

    def integers(
        self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64, endpoint: bool = False
    ) -> Any:
        if size is not None or not (_is_scalar(low) and (high is None or _is_scalar(high))):
            raise _Unprobeable("Generator.integers with a size or array bounds")
        low, high = (0, low) if high is None else (low, high)
        n = int(high) - int(low) + (1 if endpoint else 0)
        return dtype(int(low) + min(int(self.random() * n), n - 1))

    def choice(
        self, a: Any, size: Any = None, replace: bool = True, p: Any = None, axis: int = 0, shuffle: bool = True
    ) -> Any:
        if size is not None:
            raise _Unprobeable("Generator.choice with a size")
        pool = np.arange(a) if _is_scalar(a) else np.asarray(a)
        n = len(pool)
        u = self.random()
        if p is None:
            return pool[min(int(u * n), n - 1)]
        cdf = np.cumsum(np.asarray(p, dtype=float))
        cdf /= cdf[-1]
        return pool[int(cdf.searchsorted(u, side="right"))]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise _Unprobeable(f"Generator.{name}")


def _is_scalar(x: Any) -> bool:
    """``np.isscalar`` as a plain bool (its type guard would narrow the numpy-style ``Any`` arguments)."""
    return bool(np.isscalar(x))


def _bits(u: float) -> int:
    return int(np.float64(u).view(np.int64))


def _from_bits(i: int) -> float:
    return float(np.int64(i).view(np.float64))


def _same(d1: dict[Outcome, float], d2: dict[Outcome, float]) -> bool:
    return d1.keys() == d2.keys() and all(abs(d1[k] - d2[k]) <= _SAME_PROB for k in d1)


def probe(
    snapshot: Snapshot, call: Callable[[Any], Outcome], rng: np.random.Generator, *, budget: int = PROBE_BUDGET
) -> tuple[dict[Outcome, float], dict[Outcome, Any]]:
    """Exact distribution ``{outcome: probability}`` of ``call(env)`` on restored copies, and one
    resulting environment per outcome (with a real generator again).

    Raises :class:`HiddenRandomness` when a run draws from any generator other than
    ``env.np_random`` (or the scripted functions of the ``random`` module, see
    :func:`scripted_random_module`): one held anywhere in the environment or its wrappers
    (its state changes), a new one the run creates, the ``random`` module, the global
    ``numpy.random`` or one at the top level of the environment's modules; or when two
    identical runs differ (randomness from elsewhere, e.g. fresh entropy). Raises
    :class:`ProbeFailed` when the generator is used in an unsupported way, or past
    ``budget`` runs. The process-wide generators are left as they were.
    """
    session = ProbeSession(snapshot.classes)
    runner = _SnapshotRunner(snapshot, rng)
    try:
        dist = _Prober(runner, call, budget, session).probe()
        session.check()
    finally:
        session.close()
    return dist, runner.envs


class ProbeSession:
    """The process-wide generators watched over many probes (saved once, checked by :meth:`check`).

    While the session is open, the ``random`` module's functions ``random``, ``uniform``,
    ``randint``, ``randrange`` and ``choice`` draw from the current run's script
    (:func:`scripted_random_module`); every other use of the module draws from its real
    generator, which :meth:`check` then reports.
    """

    def __init__(self, classes: Sequence[type]) -> None:
        self.globals = GlobalGenerators(classes)
        self.saved = self.globals.save()
        self.script: ScriptedRNG | None = None
        self._unpatch = scripted_random_module(self)

    def check(self) -> None:
        """:class:`HiddenRandomness` if a process-wide generator was drawn from since the session began."""
        drawn = self.globals.drawn(self.saved)
        if drawn is not None:
            raise HiddenRandomness(drawn)

    def close(self) -> None:
        """Restore the ``random`` module's functions and every process-wide generator's state."""
        self._unpatch()
        self.globals.restore(self.saved)


#: Functions of the ``random`` module answered from the script while a session is open.
SCRIPTED_RANDOM = ("random", "uniform", "randint", "randrange", "choice")


def scripted_random_module(session: ProbeSession) -> Callable[[], None]:
    """Point :data:`SCRIPTED_RANDOM` of the ``random`` module at ``session.script``; returns the undo.

    Each maps one scripted ``u`` to the distribution the real function samples from
    (uniform over the range or sequence), so probabilities stay exact. A module that bound
    the real function earlier (``from random import choice``) still draws from the real
    generator, which the session's check reports.
    """
    saved = {name: getattr(_pyrandom, name) for name in SCRIPTED_RANDOM}

    def script() -> ScriptedRNG:
        if session.script is None:  # outside a probe run (e.g. a snapshot check): the real module
            raise _OutsideRun()
        return session.script

    def _random() -> float:
        try:
            return script().random()
        except _OutsideRun:
            return saved["random"]()

    def _uniform(a: float, b: float) -> float:
        try:
            return a + (b - a) * script().random()
        except _OutsideRun:
            return saved["uniform"](a, b)

    def _randrange(start: int, stop: int | None = None, step: int = 1) -> int:
        try:
            s = script()
        except _OutsideRun:
            return saved["randrange"](start, stop, step)
        r = range(start) if stop is None else range(start, stop, step)
        if len(r) == 0:
            raise ValueError(f"empty range in randrange({start}, {stop}, {step})")
        return r[min(int(s.random() * len(r)), len(r) - 1)]

    def _randint(a: int, b: int) -> int:
        return _randrange(a, b + 1)

    def _choice(seq: Any) -> Any:
        try:
            s = script()
        except _OutsideRun:
            return saved["choice"](seq)
        if not len(seq):
            raise IndexError("Cannot choose from an empty sequence")
        return seq[min(int(s.random() * len(seq)), len(seq) - 1)]

    patched = {"random": _random, "uniform": _uniform, "randint": _randint, "randrange": _randrange, "choice": _choice}
    for name, fn in patched.items():
        setattr(_pyrandom, name, fn)

    def undo() -> None:
        for name, fn in saved.items():
            setattr(_pyrandom, name, fn)

    return undo


class _OutsideRun(Exception):
    pass


def check_generators(env: Any, generators: Sequence[Any], fingerprints: Sequence[Any], watched: set[int]) -> None:
    """:class:`HiddenRandomness` if the run drew from a generator of the copy (``generators``, whose
    states were ``fingerprints``) or created one at the top level of a layer (one not in ``watched``)."""
    check_held_generators(env, generators, fingerprints)
    for layer in layers_of(env):
        for name, value in vars(layer).items():
            if isinstance(value, RNG_TYPES) and name != "_np_random" and id(value) not in watched:
                raise created_generator(layer, name, value)


def check_held_generators(env: Any, generators: Sequence[Any], fingerprints: Sequence[Any]) -> None:
    """:class:`HiddenRandomness` if the run drew from one of ``generators`` (whose states were ``fingerprints``)."""
    for gen, before in zip(generators, fingerprints):
        if not same_state(fingerprint(gen), before):
            where = find_generator(env, gen) or "an object inside the environment"
            why = "whose draws cannot be watched" if before is None else "drawn from during the run"
            raise HiddenRandomness(f"`{where}` ({generator_type(gen)}), {why}")


def created_generator(layer: Any, name: str, value: Any) -> HiddenRandomness:
    return HiddenRandomness(
        f"`{type(layer).__name__}.{name}` ({generator_type(value)}), a generator created during the run"
    )


class _SnapshotRunner:
    """Runs on full restored copies of a snapshot; keeps one environment per outcome."""

    def __init__(self, snapshot: Snapshot, rng: np.random.Generator) -> None:
        self.snapshot, self.rng = snapshot, rng
        self.fingerprints = snapshot.fingerprints
        self.watched = {id(g) for g in snapshot.generators}
        self.envs: dict[Any, Any] = {}

    def start(self) -> tuple[Any, list[Any]]:
        return self.snapshot.restore_with_generators()

    def check_generators(self, env: Any, generators: Sequence[Any]) -> None:
        check_generators(env, generators, self.fingerprints, self.watched)

    def finish(self, env: Any, outcome: Any) -> Any:
        if outcome is not None and outcome not in self.envs:
            env.np_random = np.random.default_rng(int(self.rng.integers(2**62)))
            self.envs[outcome] = env
        return outcome


class StoreRunner:
    """Probe runs on the working copy of ``store`` set to ``state``; outcomes carry the next state's key.

    One runner serves the whole search (:meth:`at` points it at the next state)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.state = store.root
        self.fingerprints = store.fingerprints
        self.watched = {id(g) for g in store.generators}
        self.states: dict[Any, State] = {}

    def at(self, state: State) -> StoreRunner:
        self.state, self.states = state, {}
        return self

    def start(self) -> tuple[Any, list[Any]]:
        return self.store.restore(self.state)

    def check_generators(self, env: Any, generators: Sequence[Any]) -> None:
        """As :func:`~.probe.check_generators`; a generator created at the top level of a layer must be
        in an attribute the run reassigned, so only those are looked at."""
        if generators:
            check_held_generators(env, generators, self.fingerprints)
        for layer, names in zip(self.store.layers, self.store.scan()):
            d = layer.__dict__
            for name in names:
                value = d.get(name)
                if isinstance(value, RNG_TYPES) and id(value) not in self.watched:
                    raise created_generator(layer, name, value)

    def finish(self, env: Any, outcome: Any) -> Any:
        """The outcome with the next state's key, after proving the shared objects unchanged
        (after every run, the hidden-randomness check's repeat included: skipping it there would
        save about 12% of an enumeration, but a change only the repeat makes could then be undone
        by the next run unseen)."""
        self.store.check()
        if outcome is None:
            return None
        after = self.store.capture()
        full = (outcome, after.key)
        self.states.setdefault(full, after)
        return full


class _Prober(Generic[Outcome]):
    """One exact distribution: the runs spent so far, through a runner that restores and keeps states."""

    def __init__(self, runner: Any, call: Callable[[Any], Outcome], budget: int, session: ProbeSession) -> None:
        self.runner, self.call, self.budget, self.session = runner, call, budget, session
        self.runs = 0

    def probe(self) -> dict[Outcome, float]:
        outcome, used = self.hidden_check()
        if used == 0:  # deterministic: the check's run was the whole story
            return {cast(Outcome, outcome): 1.0}
        return self.distribution([])

    def run(self, prefix: Sequence[float], filler: float | None = None) -> tuple[Outcome | None, int]:
        """``(outcome or None if more draws are needed, number of draws used)``."""
        self.runs += 1
        if self.runs > self.budget:
            self.session.check()
            raise ProbeFailed(f"more than {self.budget} restored steps for one exact distribution")
        if self.runs % _GLOBAL_CHECK_EVERY == 0:
            self.session.check()
        env, generators = self.runner.start()
        scripted = ScriptedRNG(prefix, filler)
        env.np_random = scripted
        self.session.script = scripted
        outcome: Outcome | None
        try:
            outcome = self.call(env)
        except _NeedDraw:
            outcome = None
        except _Unprobeable as exc:
            raise ProbeFailed(f"the step draws with {exc}, which cannot be enumerated exactly") from None
        finally:
            self.session.script = None
        self.runner.check_generators(env, generators)
        return self.runner.finish(env, outcome), scripted.used

    def hidden_check(self) -> tuple[Outcome | None, int]:
        """Two complete runs (every draw 1/2) must agree, and neither may draw from another generator.

        With a filler every draw is answered, so the outcome is never None here.
        """
        results = [self.run([], filler=0.5), self.run([], filler=0.5)]
        if results[0] != results[1]:
            self.session.check()
            raise HiddenRandomness(
                "a source that cannot be watched (two identical restored runs differ: fresh entropy, the clock, ...)"
            )
        return results[0]

    def distribution(self, prefix: list[float]) -> dict[Outcome, float]:
        """Distribution of the outcome after the scripted draws ``prefix`` (the rest drawn uniformly)."""
        outcome, _ = self.run(prefix)
        if outcome is not None:
            return {outcome: 1.0}
        return _NextDraw(self, prefix).distribution()


def probe_states(
    runner: Any, call: Callable[[Any], Outcome], session: ProbeSession, *, budget: int = PROBE_BUDGET
) -> dict[Outcome, float]:
    """Exact distribution of ``call`` through ``runner`` (e.g. the working copy of a
    :class:`~.states.StateStore` set to one state); the process-wide generators are checked
    by the caller's ``session``."""
    return _Prober(runner, call, budget, session).probe()


class _NextDraw(Generic[Outcome]):
    """The outcome distribution as a function of the draw after ``prefix``, memoised by the draw's bits."""

    def __init__(self, prober: _Prober[Outcome], prefix: list[float]) -> None:
        self.prober, self.prefix = prober, prefix
        self.memo: dict[int, dict[Outcome, float]] = {}

    def at(self, i: int) -> dict[Outcome, float]:
        """Distribution when the next draw is the double with bits ``i``."""
        if i not in self.memo:
            self.memo[i] = self.prober.distribution(self.prefix + [_from_bits(i)])
        return self.memo[i]

    def change_points(self, lo: int, hi: int) -> list[int]:
        """Where the distribution changes in ``(lo, hi]``, in order (given ``at(lo) != at(hi)``), by bisection."""
        if hi - lo == 1:
            return [hi]
        mid = (lo + hi) // 2
        out = []
        if not _same(self.at(lo), self.at(mid)):
            out += self.change_points(lo, mid)
        if not _same(self.at(mid), self.at(hi)):
            out += self.change_points(mid, hi)
        return out

    def distribution(self) -> dict[Outcome, float]:
        """``P(outcome) = sum_I |I| P(outcome | next draw in I)`` over the intervals ``I`` of constant distribution."""
        grid = [_bits(k / PROBE_GRID) for k in range(PROBE_GRID)] + [_bits(_ONE_MINUS)]
        starts = [grid[0]]
        for lo, hi in zip(grid, grid[1:]):
            if not _same(self.at(lo), self.at(hi)):
                starts += self.change_points(lo, hi)
        ends = [_from_bits(i) for i in starts[1:]] + [1.0]
        total: defaultdict[Outcome, float] = defaultdict(float)
        for start, end in zip(starts, ends):
            width = end - _from_bits(start)
            for outcome, p in self.at(start).items():
                total[outcome] += width * p
        return dict(total)
