"""Compact states for enumeration: one working copy of the environment, restored by what changed.

A :class:`StateStore` keeps ONE working copy ``W`` of an environment's modelled layers
(restored once from a :class:`~.snapshot.Snapshot`). A :class:`State` is what differs
from ``W``'s base: the attributes of the layers' ``__dict__`` that a step reassigned, with
immutable values kept as they are and mutable ones as owned deep copies. Restoring a state
sets those attributes (and puts back the base value of every attribute the last run
changed); nothing else is copied. :meth:`StateStore.scan` finds what a run changed in one
C-level pass (the attributes whose object is not the one restored), and restoring and
capturing look only at those and at the state's own. Every other object (maps, tables such
as Taxi's ``P``, spaces) is *shared*, and :meth:`StateStore.check` proves after every run
that it is unchanged:
containers of plain values with ``==``, arrays byte for byte, other objects attribute by
attribute (same objects), first as flat C-level passes.
A run that changes a shared object in place raises :class:`SharedMutated`; enumeration then
starts over with ``share=False``, where every attribute is owned (a deep copy per state and
per restore, as a full snapshot).

:attr:`State.key` is a hashable digest of the state's values (arrays by their bytes), so
two runs that end in the same internal state give the same key: the enumeration is over
internal states, and observations are checked to identify them (:mod:`.routes`).
The unwrapped environment's ``_np_random`` is not part of a state: every probe run sets it.
"""

from __future__ import annotations

import copy
import types
from collections import ChainMap
from collections.abc import Iterator, Sequence
from itertools import chain, compress
from operator import attrgetter, is_, is_not
from typing import Any

import numpy as np

from policyagg.envs.tabular.snapshot import RNG_TYPES, Snapshot, fingerprint, generator_state, is_rendering_resource

#: Attributes that no state records (the prober sets the generator before every run).
_UNTRACKED = frozenset({"_np_random"})
_DELETED = object()  # payload value of an attribute the run deleted
_ATOMS = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    range,
    type,
    np.dtype,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.ModuleType,
    type(Ellipsis),
)


class SharedMutated(Exception):
    """A run changed a shared object in place (the message names it); share nothing instead."""


class Unfreezable(Exception):
    """A value cannot be turned into a hashable key (the message names its type)."""


_ATOM_SET = frozenset({type(None), bool, int, float, complex, str, bytes, np.int64, np.int32, np.float64, np.bool_})


def is_immutable(value: Any) -> bool:
    """Whether ``value`` can never change: atoms, numpy scalars, and tuples/frozensets of such values;
    rendering resources count as constants (:func:`~.snapshot.is_rendering_resource`)."""
    kind = type(value)
    if kind in _ATOM_SET:
        return True
    if kind is tuple or kind is frozenset:
        if all(map(_ATOM_SET.__contains__, map(type, value))):  # flat: one C-level pass
            return True
        return all(map(is_immutable, value))
    return (
        isinstance(value, _ATOMS)
        or (isinstance(value, np.generic) and not isinstance(value, np.object_))
        or is_rendering_resource(value)
    )


class _Owned:
    """A mutable value owned by one state (copied on every restore)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def freeze(value: Any) -> Any:
    """A hashable form of ``value`` that is equal for equal values (arrays by dtype, shape and bytes)."""
    if is_immutable(value):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return ("ndarray", value.shape, tuple(freeze(v) for v in value.ravel().tolist()))
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(freeze(v) for v in value))
    if isinstance(value, RNG_TYPES):
        return ("rng", type(value).__name__, freeze(_plain_state(generator_state(value))))
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict) and not callable(value):
        return ("object", type(value), tuple((k, freeze(v)) for k, v in state.items()))
    raise Unfreezable(type(value).__name__)


def _plain_state(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _plain_state(v) for k, v in state.items()}
    return state


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Builtin containers of immutable values (their ``==`` is a faithful deep comparison)."""
    if depth > 50:
        return False
    if is_immutable(value):
        return True
    if type(value) in (list, set, bytearray):
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(is_immutable(k) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


class _SharedWatch:
    """Proof that the shared objects reachable from some roots are unchanged after a run."""

    def __init__(self, roots: Sequence[Any], skip: set[int]) -> None:
        self.plain: list[Any] = []
        self.plain_ref: list[Any] = []
        self.arrays: list[np.ndarray] = []
        self.array_ref: list[tuple[Any, tuple[int, ...], bytes]] = []
        self.spaces: list[tuple[Any, tuple[Any, ...], tuple[int, ...]]] = []  # (container, keys, ids)
        self.generators: list[Any] = []
        self.objects: dict[int, Any] = {}  # every shared object, kept alive, by id
        self.opaque: str | None = None
        seen = set(skip)
        for root in roots:
            self._add(root, seen)
        self.plain_ref_tuple = tuple(self.plain_ref)
        # the same proof flattened for :meth:`unchanged` (C-level loops: it runs after every run)
        self._dicts = [c for c, _, _ in self.spaces if type(c) is dict]
        self._seqs = [c for c, _, _ in self.spaces if type(c) is not dict]
        self._lens = list(map(len, self._dicts + self._seqs))
        self._refs = list(self._members())
        self._array_bytes = [ref[2] for ref in self.array_ref]
        self._array_dtypes = [ref[0] for ref in self.array_ref]
        self._array_shapes = [ref[1] for ref in self.array_ref]

    def _members(self) -> Iterator[Any]:
        """The keys and values of the watched dicts and the items of the watched lists and tuples, flat."""
        dicts = self._dicts
        return chain(
            chain.from_iterable(dicts), chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(self._seqs)
        )

    def _add(self, value: Any, seen: set[int]) -> None:
        if id(value) in seen or is_immutable(value):
            return
        seen.add(id(value))
        self.objects[id(value)] = value
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            self.arrays.append(value)
            self.array_ref.append((value.dtype, value.shape, value.tobytes()))
        elif isinstance(value, RNG_TYPES):
            self.generators.append(value)
        elif _is_plain(value):
            self.plain.append(value)
            self.plain_ref.append(copy.deepcopy(value))
        elif type(value) in (list, tuple):
            self._container(value, tuple(range(len(value))), list(value), seen)
        elif type(value) is dict:
            self._container(value, tuple(value), list(value.values()), seen)
        elif isinstance(value, types.MethodType):
            self._add(value.__self__, seen)
        elif isinstance(getattr(value, "__dict__", None), dict) and not _has_slots(type(value)):
            state = vars(value)
            self._container(state, tuple(state), list(state.values()), seen)
        elif self.opaque is None:
            self.opaque = type(value).__name__

    def _container(self, container: Any, keys: tuple[Any, ...], values: list[Any], seen: set[int]) -> None:
        self.spaces.append((container, keys, tuple(map(id, values))))
        for v in values:
            self._add(v, seen)

    def unchanged(self) -> bool:
        """A fast ``True`` when nothing changed since the watch was built, in flat C-level loops: the
        comparisons of :meth:`changed`, except that container keys must be the same objects (so a
        ``False`` can be a false alarm, which :meth:`changed` settles)."""
        return (
            self.plain == self.plain_ref
            and list(map(_tobytes, self.arrays)) == self._array_bytes
            and all(map(is_, map(_dtype, self.arrays), self._array_dtypes))
            and list(map(_shape, self.arrays)) == self._array_shapes
            and list(map(len, self._dicts + self._seqs)) == self._lens
            and all(map(is_, self._members(), self._refs))
        )

    def changed(self) -> str | None:
        """What changed since the watch was built (a description), or ``None``."""
        if tuple(self.plain) != self.plain_ref_tuple:
            for obj, ref in zip(self.plain, self.plain_ref):
                if obj != ref:
                    return f"a {type(obj).__name__} was changed in place"
        for arr, (dtype, shape, data) in zip(self.arrays, self.array_ref):
            if arr.tobytes() != data or arr.dtype is not dtype or arr.shape != shape:
                return "an array was changed in place"
        for container, keys, ids in self.spaces:
            if type(container) is list or type(container) is tuple:
                now_keys: tuple[Any, ...] = tuple(range(len(container)))
                values = container
            else:
                now_keys, values = tuple(container), container.values()
            if now_keys != keys or tuple(map(id, values)) != ids:
                return f"a {type(container).__name__} was changed in place"
        return None


class State:
    """One internal state: per layer ``{attribute: value}`` of what differs from the base.

    ``key`` is the hashable digest; ``plain[i]`` says that layer ``i``'s values are all
    immutable (restored by one ``dict.update``).
    """

    __slots__ = ("key", "payload", "plain")

    def __init__(self, key: Any, payload: tuple[dict[str, Any], ...], plain: tuple[bool, ...]) -> None:
        self.key, self.payload, self.plain = key, payload, plain


class StateStore:
    """One working copy of the environment, set to any :class:`State` by restoring what changed.

    ``share=True``: attributes a step never reassigns are shared and checked after each run;
    ``share=False``: every attribute is owned (copied per state and per restore).
    ``keyed=False``: states get no :attr:`State.key` (``None``), for callers that never compare
    states (so values that cannot be frozen into a key are fine).
    """

    def __init__(self, snapshot: Snapshot, *, share: bool = True, keyed: bool = True) -> None:
        self.snapshot, self.share, self.keyed = snapshot, share, keyed
        env, generators = snapshot.restore_with_generators()
        self.env, self.generators = env, generators
        self.fingerprints = [fingerprint(g) for g in generators]
        self.layers = _layers(env, len(snapshot.classes))
        self.base = [dict(vars(layer)) for layer in self.layers]
        for base in self.base:
            base.pop("_np_random", None)
        skip = {id(layer) for layer in self.layers}
        roots = [v for base in self.base for v in base.values()] if share else []
        self.watch = _SharedWatch(roots, skip)
        if self.watch.opaque is not None:  # cannot be proved unchanged: own everything
            self.share = False
            self.watch = _SharedWatch([], skip)
        if not self.share:
            self.base = [{} for _ in self.layers]
        # deep copies of owned values keep pointing at shared objects and at the working layers
        self.memo: dict[int, Any] = {id(layer): layer for layer in self.layers}
        self.memo.update(self.watch.objects)
        for gen in generators:
            self.memo[id(gen)] = gen
        self.current: tuple[dict[str, Any], ...] = tuple({} for _ in self.layers)
        self.current_plain: tuple[bool, ...] = tuple(True for _ in self.layers)
        self._expect()
        empty: tuple[dict[str, Any], ...] = tuple({} for _ in self.layers)
        self.root = self._capture_all() if not self.share else State((), empty, tuple(True for _ in empty))

    # ------------------------------------------------------------- restoring and capturing
    def _expect(self) -> None:
        """Remember the layers' attributes (names and objects) as the next run starts from them."""
        if len(self.layers) == 1:  # the usual case, without the loops
            d = self.layers[0].__dict__
            self._expected_names, self._expected_values = [list(d)], [list(d.values())]
        else:
            self._expected_names = [list(layer.__dict__) for layer in self.layers]
            self._expected_values = [list(layer.__dict__.values()) for layer in self.layers]
        self._touched: list[list[str]] | None = None

    def scan(self) -> list[list[str]]:
        """Per layer, the attributes the last run reassigned, added or deleted (not the untracked ones)."""
        if self._touched is not None:
            return self._touched
        touched = []
        for layer, names, values in zip(self.layers, self._expected_names, self._expected_values):
            d = layer.__dict__
            if list(d) == names:  # the usual case: compare the objects in one C-level pass
                changed = list(compress(names, map(is_not, d.values(), values)))
            else:
                expected = dict(zip(names, values))
                changed = [n for n, v in d.items() if expected.get(n, _DELETED) is not v]
                changed += [n for n in names if n not in d]
            touched.append([n for n in changed if n not in _UNTRACKED])
        self._touched = touched
        return touched

    def restore(self, state: State) -> tuple[Any, list[Any]]:
        """The working copy set to ``state`` (its outermost layer) and its generators."""
        touched = self._touched if self._touched is not None else self.scan()
        for layer, base, payload, plain, now, changed in zip(
            self.layers, self.base, state.payload, state.plain, self.current, touched
        ):
            d = layer.__dict__
            # what the last run changed, and the last state's own values: back to base
            for name in changed if now is payload else changed + [n for n in now if n not in payload]:
                if name in base:
                    d[name] = base[name]
                else:
                    d.pop(name, None)
            if plain:
                d.update(payload)
            else:
                for name, value in payload.items():
                    if value is _DELETED:
                        d.pop(name, None)
                    else:
                        d[name] = self._copy(value.value) if type(value) is _Owned else value
            if not self.share:
                for name in [n for n in d if n not in payload and n not in _UNTRACKED]:
                    del d[name]
        self.current, self.current_plain = state.payload, state.plain
        self._expect()
        return self.env, self.generators

    def check(self) -> None:
        """:class:`SharedMutated` if the last run changed a shared object in place."""
        if self.share and not self.watch.unchanged():
            what = self.watch.changed()
            if what is not None:
                raise SharedMutated(what)

    def capture(self) -> State:
        """The working copy's state after a run (call :meth:`check` first)."""
        if not self.share:
            return self._capture_all()
        payload, plain = [], []
        for layer, base, now, now_plain, changed in zip(
            self.layers, self.base, self.current, self.current_plain, self.scan()
        ):
            d = layer.__dict__
            flat = True
            # the state's own values that the run left alone ...
            if now_plain:  # immutable: the objects restored
                out = now.copy()
                for name in changed:
                    out.pop(name, None)
            else:
                out = {}
                for name, value in now.items():
                    if name in changed:
                        continue
                    if type(value) is _Owned:  # it may have been changed in place: copied again
                        out[name], flat = _Owned(self._copy(d[name])), False
                    else:  # immutable, or deleted and still absent
                        out[name] = value
                        flat = flat and value is not _DELETED
            for name in changed:  # ... and what the run changed, compared with the base
                if name not in d:
                    if name in base:
                        out[name], flat = _DELETED, False
                    continue
                value = d[name]
                if is_immutable(value):
                    if name not in base or not (value is base[name] or _same_immutable(value, base[name])):
                        out[name] = value
                elif name not in base or value is not base[name]:
                    out[name], flat = _Owned(self._copy(value)), False
            payload.append(out)
            plain.append(flat)
        return self._state(tuple(payload), tuple(plain))

    def _capture_all(self) -> State:
        payload = []
        for layer in self.layers:
            d = {k: v for k, v in vars(layer).items() if k not in _UNTRACKED}
            payload.append({k: (v if is_immutable(v) else _Owned(self._copy(v))) for k, v in d.items()})
        return self._state(tuple(payload))

    def _state(self, payload: tuple[dict[str, Any], ...], plain: tuple[bool, ...] | None = None) -> State:
        """The :class:`State` of ``payload``; its key is per layer the ``(name, frozen value)`` pairs sorted
        by name. ``plain[i]``: layer ``i`` holds neither owned values nor deletions (computed if not given)."""
        if plain is None:
            plain = tuple(not any(map(_is_special, p.values())) for p in payload)
        if not self.keyed:
            return State(None, payload, plain)
        if len(payload) == 1 and plain[0]:  # the usual case, without the loops
            return State((tuple(sorted(payload[0].items())),), payload, plain)
        freeze_ = self._freeze
        key = tuple(
            tuple(sorted(p.items())) if flat else tuple(sorted([(k, freeze_(v)) for k, v in p.items()], key=_first))
            for p, flat in zip(payload, plain)
        )  # a plain layer's values are their own frozen form (and names are unique: values are never compared)
        return State(key, payload, plain)

    def _freeze(self, value: Any) -> Any:
        if value is _DELETED:
            return _DELETED_KEY
        if type(value) is not _Owned:
            return value
        value = value.value
        if isinstance(value, types.MethodType) or any(value is layer for layer in self.layers):
            return ("layer-bound", id(getattr(value, "__self__", value)))
        try:
            return freeze(value)
        except RecursionError:
            raise Unfreezable(f"{type(value).__name__} (too deeply nested)") from None

    def _copy(self, value: Any) -> Any:
        """A deep copy whose references to shared objects, the layers and the generators stay references."""
        if type(value) is np.ndarray and not value.dtype.hasobject and id(value) not in self.memo:
            return value.copy(order="K")  # what deepcopy does for such an array, without its machinery
        return copy.deepcopy(value, ChainMap({}, self.memo))  # type: ignore[arg-type]

    def describe(self, state: State) -> str:
        """The attributes that make up ``state`` (for messages)."""
        names = sorted({f"{type(layer).__name__}.{k}" for layer, p in zip(self.layers, state.payload) for k in p})
        return ", ".join(names) or "(the base state)"


_DELETED_KEY = ("<deleted>",)
_tobytes = np.ndarray.tobytes
_dtype = attrgetter("dtype")
_shape = attrgetter("shape")


def _has_slots(cls: type) -> bool:
    """Whether instances of ``cls`` keep state in slots (outside ``__dict__``)."""
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        slots = (slots,) if isinstance(slots, str) else slots
        if any(name not in ("__dict__", "__weakref__") for name in slots):
            return True
    return False


def _is_special(value: Any) -> bool:
    """A payload value that ``dict.update`` cannot restore: an owned copy or a deletion."""
    return type(value) is _Owned or value is _DELETED


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _same_immutable(a: Any, b: Any) -> bool:
    """Equal and of the same type (``0 == 0.0 == False`` are different states here)."""
    try:
        return type(a) is type(b) and bool(a == b) and freeze(a) == freeze(b)
    except Exception:
        return False


def _layers(env: Any, count: int) -> list[Any]:
    """The working copy's modelled layers, outermost first (``count`` of them)."""
    layers = [env]
    while len(layers) < count:
        layers.append(layers[-1].env)
    return layers
