"""Snapshots of an environment's state, and the random generators it can draw from.

A :class:`Snapshot` is a deep copy of the ``__dict__`` of every modelled layer of an
environment: its non-transparent wrappers and ``env.unwrapped`` (see :mod:`.chain`); every
:meth:`Snapshot.restore` gives an independent copy of that chain, stepped through its
wrappers. The snapshot also lists the random generators (``numpy.random.Generator``,
``RandomState``, ``random.Random``) held anywhere in that state, so that a restored copy's
generators can be reseeded (:func:`seed_all`) or watched for draws (:mod:`.probe`).
:class:`GlobalGenerators` does the same for the process-wide generators (the ``random``
module, the legacy global ``numpy.random``, generators at the top level of the
environment's modules). :func:`verify_snapshot` checks that restored copies step exactly
like the original; routes that need snapshots fall back when it fails (:class:`SnapshotError`).
"""

from __future__ import annotations

import copy
import random as _pyrandom
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from policyagg.envs.tabular.chain import is_transparent, modelled_layers, wrappers
from policyagg.envs.tabular.spaces import step_outcome

#: The generator types found on environments and watched during probes.
RNG_TYPES = (np.random.Generator, np.random.RandomState, _pyrandom.Random)
#: Top-level packages whose objects are rendering resources (fonts, windows, clocks, images). A
#: snapshot shares one held directly in a layer's attribute instead of copying it (they often
#: cannot be copied), and the routes take them as constants: they are assumed not to change what
#: ``step`` returns (``Snapshot.rendering`` lists them).
RENDERING_PACKAGES = frozenset({"pygame"})


def is_rendering_resource(value: Any) -> bool:
    """Whether ``value`` is an object of one of :data:`RENDERING_PACKAGES`."""
    return type(value).__module__.partition(".")[0] in RENDERING_PACKAGES


class SnapshotError(Exception):
    """The environment cannot be snapshotted and restored (the message says why).

    ``mismatch``: a restored copy stepped differently from the original under the same
    seeds, i.e. the step depends on something the copy does not carry (fresh entropy, the
    clock, state outside ``__dict__``).
    """

    def __init__(self, message: str, *, mismatch: bool = False) -> None:
        super().__init__(message)
        self.mismatch = mismatch


# --------------------------------------------------------------------------- generator states
def generator_state(gen: Any) -> Any:
    """The restorable state of a generator, or ``None`` if it has none (``random.SystemRandom``)."""
    if isinstance(gen, np.random.Generator):
        return gen.bit_generator.state
    if isinstance(gen, np.random.RandomState):
        return gen.get_state(legacy=False)
    try:
        return gen.getstate()
    except NotImplementedError:  # SystemRandom: draws from the operating system
        return None


def set_generator_state(gen: Any, state: Any) -> None:
    if state is None:
        return
    if isinstance(gen, np.random.Generator):
        gen.bit_generator.state = state
    elif isinstance(gen, np.random.RandomState):
        gen.set_state(state)
    else:
        gen.setstate(state)


def fingerprint(gen: Any) -> Any:
    """The generator's state, to compare with :func:`same_state` (it changes iff the generator is drawn from)."""
    return generator_state(gen)


def same_state(a: Any, b: Any) -> bool:
    """Whether two generator states are equal (``None``, a state that cannot be read, equals nothing)."""
    if a is None or b is None:
        return False
    try:
        return bool(a == b)
    except ValueError:  # numpy arrays inside (MT19937): compare them as bytes
        return bool(_freeze(a) == _freeze(b))


def _freeze(value: Any) -> Any:
    """Numpy's state dicts (with arrays) as comparable tuples; ``random``'s state tuples are comparable already."""
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    return value


def reseed(gen: Any, seed: int) -> None:
    """Reseed ``gen`` in place (so every reference to it sees the new stream)."""
    if isinstance(gen, np.random.Generator):
        gen.bit_generator.state = type(gen.bit_generator)(seed).state
    elif isinstance(gen, np.random.RandomState):
        gen.seed([seed & 0xFFFFFFFF, seed >> 32])  # its integer seeds stop at 2**32
    else:
        gen.seed(seed)


def _child_seed(seed: int, i: int) -> int:
    """A seed of its own for generator ``i`` (the generators hash their seeds, so neighbours are unrelated)."""
    return (int(seed) * 1_000_003 + i) % 2**63


def generator_type(gen: Any) -> str:
    kind = type(gen)
    return f"{kind.__module__}.{kind.__qualname__}".replace("numpy.random._generator.", "numpy.random.").replace(
        "numpy.random.mtrand.", "numpy.random."
    )


# --------------------------------------------------------------------------- snapshots
class Snapshot:
    """The modelled layers of an environment, frozen once; :meth:`restore` gives an independent copy.

    Each layer's ``__dict__`` is copied rather than the object so that ``__getstate__`` hooks
    (``EzPickle`` rebuilds a *fresh* environment from its constructor arguments) are
    bypassed. All layers share one copy memo, so a reference from one layer to another (a
    wrapper's ``env``) points into the copy; transparent wrappers are left out (a reference
    to one points to the next modelled layer below it).
    """

    def __init__(
        self,
        classes: list[type],
        payload: list[dict[str, Any]],
        templates: list[Any],
        generators: list[Any],
        rendering: dict[str, Any] | None = None,
    ) -> None:
        self.classes, self.payload, self.templates = classes, payload, templates
        #: The generators held anywhere in the copied state (objects of ``payload``).
        self.generators = generators
        self.fingerprints = [fingerprint(g) for g in generators]
        #: The rendering resources shared, not copied: ``"Layer.attribute (type)"`` -> the object.
        self.rendering = rendering or {}
        self._shared = {id(v): v for v in self.rendering.values()}

    @classmethod
    def take(cls, env: Any) -> Snapshot:
        layers = modelled_layers(env)
        for layer in layers:
            if getattr(layer, "__dict__", None) is None:
                raise SnapshotError(f"{type(layer).__name__} has no __dict__ to copy")
        try:
            templates = [object.__new__(type(layer)) for layer in layers]
        except TypeError as exc:
            raise SnapshotError(f"its layers cannot be recreated ({exc})") from exc
        memo: dict[int, Any] = {id(env.unwrapped): templates[-1]}
        below = templates[-1]
        template_of = {id(layer): t for layer, t in zip(layers, templates)}
        for wrapper in reversed(wrappers(env)):
            if is_transparent(wrapper):
                memo[id(wrapper)] = below
            else:
                below = memo[id(wrapper)] = template_of[id(wrapper)]
        rendering = {}
        for layer in layers:
            for name, value in vars(layer).items():
                if is_rendering_resource(value):
                    memo[id(value)] = value
                    rendering[f"{type(layer).__name__}.{name} ({generator_type(value)})"] = value
        try:
            payload = [copy.deepcopy(vars(layer), memo) for layer in layers]
        except Exception as exc:
            raise SnapshotError(f"its state cannot be copied ({type(exc).__name__}: {exc})") from exc
        found = {id(v): v for v in memo.values() if isinstance(v, RNG_TYPES)}
        return cls([type(layer) for layer in layers], payload, templates, list(found.values()), rendering)

    def restore(self) -> Any:
        """An independent copy of the environment (its outermost modelled layer)."""
        return self.restore_with_generators()[0]

    def restore_with_generators(self) -> tuple[Any, list[Any]]:
        """A restored copy and its generators (the copies of :attr:`generators`, in that order)."""
        shells: list[Any] = [object.__new__(c) for c in self.classes]
        memo: dict[int, Any] = {id(t): s for t, s in zip(self.templates, shells)}
        memo.update(self._shared)
        for shell, state in zip(shells, self.payload):
            shell.__dict__.update(copy.deepcopy(state, memo))
        return shells[0], [memo[id(g)] for g in self.generators]


def layers_of(env: Any) -> list[Any]:
    """Every layer of ``env``, outermost first, ending with ``env.unwrapped``."""
    return [*wrappers(env), env.unwrapped]


def seed_all(env: Any, seed: int, generators: Sequence[Any], np_random: Any = None) -> None:
    """Give ``env`` the generator ``np_random`` (or one seeded with ``seed``) and reseed ``generators`` in place."""
    env.np_random = np.random.default_rng(seed) if np_random is None else np_random
    for i, gen in enumerate(generators):
        reseed(gen, _child_seed(seed, i))


def verify_snapshot(snapshot: Snapshot, actions: Sequence[Any]) -> None:
    """A snapshot taken mid-episode must step exactly like the environment it was taken from."""
    globals_ = GlobalGenerators(snapshot.classes)
    saved = globals_.save()
    try:
        env, gens = snapshot.restore_with_generators()
        seed_all(env, 0, gens)
        env.reset(seed=0)
        for t in range(2):
            _, _, terminated, _, _ = env.step(actions[t % len(actions)])
            if terminated:
                seed_all(env, 1, gens)
                env.reset()
        copy_, copy_gens = Snapshot.take(env).restore_with_generators()
        for t in range(3):
            action = actions[(t + 1) % len(actions)]
            seed_all(env, 10 + t, gens)
            globals_.seed(10 + t)
            a = step_outcome(env.step(action))
            seed_all(copy_, 10 + t, copy_gens)
            globals_.seed(10 + t)
            b = step_outcome(copy_.step(action))
            if a != b:
                raise SnapshotError(
                    f"a restored copy steps differently from the original under the same seeds ({a} vs {b})",
                    mismatch=True,
                )
            if a[2]:
                break
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"a restored copy fails ({type(exc).__name__}: {exc})") from exc
    finally:
        globals_.restore(saved)


def find_generator(env: Any, target: Any, depth: int = 6) -> str | None:
    """Where ``target`` sits in ``env``'s layers, as ``"Layer.attr[...]..."``, or ``None``."""
    seen: set[int] = set()
    frontier: list[tuple[Any, str]] = [(layer, type(layer).__name__) for layer in layers_of(env)]
    for _ in range(depth):
        nxt: list[tuple[Any, str]] = []
        for obj, path in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj is target:
                return path
            if isinstance(obj, dict):
                items = [(v, f"{path}[{k!r}]") for k, v in obj.items()]
            elif isinstance(obj, (list, tuple)):
                items = [(v, f"{path}[{i}]") for i, v in enumerate(obj)]
            elif hasattr(obj, "__dict__") and not isinstance(obj, type) and not callable(obj):
                items = [(v, f"{path}.{k}") for k, v in vars(obj).items() if k != "env"]
            else:
                continue
            nxt += [(v, p) for v, p in items if not isinstance(v, (str, bytes, int, float, np.ndarray))]
        frontier = nxt
    return None


# --------------------------------------------------------------------------- process-wide generators
class GlobalGenerators:
    """The process-wide generators an environment of ``classes`` could draw from.

    The ``random`` module's hidden instance, the legacy global ``numpy.random``, and every
    generator at the top level of the modules that define ``classes``.
    """

    def __init__(self, classes: Sequence[type]) -> None:
        sources: dict[int, tuple[str, Any]] = {
            id(_pyrandom._inst): ("the `random` module", _pyrandom._inst),  # type: ignore[attr-defined]
            id(np.random.mtrand._rand): ("the global `numpy.random`", np.random.mtrand._rand),
        }
        for cls in classes:
            for name, value in _module_generators(cls.__module__):
                sources.setdefault(id(value), (name, value))
        self.sources = list(sources.values())

    def save(self) -> list[Any]:
        return [generator_state(gen) for _, gen in self.sources]

    def restore(self, saved: Sequence[Any]) -> None:
        for (_, gen), state in zip(self.sources, saved):
            set_generator_state(gen, state)

    def drawn(self, saved: Sequence[Any]) -> str | None:
        """The first source drawn from since ``saved`` was taken (or that cannot be watched), else ``None``."""
        for (name, gen), state in zip(self.sources, saved):
            if state is None:
                return f"{name}, a random.SystemRandom whose draws cannot be watched"
            if not same_state(generator_state(gen), state):
                return name
        return None

    def seed(self, seed: int) -> None:
        """Reseed every source in place (callers restore them afterwards)."""
        for i, (_, gen) in enumerate(self.sources):
            reseed(gen, _child_seed(seed, 1000 + i))


#: module name -> (size of its namespace when scanned, its top-level generators)
_MODULE_SCANS: dict[str, tuple[int, list[tuple[str, Any]]]] = {}


def _module_generators(module_name: str) -> list[tuple[str, Any]]:
    """``(description, generator)`` of the generators at the top level of a module (rescanned when it grows)."""
    module = sys.modules.get(module_name)
    if module is None:
        return []
    namespace = vars(module)
    cached = _MODULE_SCANS.get(module_name)
    if cached is None or cached[0] != len(namespace):
        found = [
            (f"`{module_name}.{name}` ({generator_type(value)})", value)
            for name, value in list(namespace.items())
            if isinstance(value, RNG_TYPES)
        ]
        cached = _MODULE_SCANS[module_name] = (len(namespace), found)
    return cached[1]
