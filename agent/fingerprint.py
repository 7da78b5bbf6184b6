"""Content fingerprints that are equal when values are equal, in any kernel.

Plain pickle bytes are not canonical: their memo records *sharing* (two
references to one dtype object vs two equal dtype objects), and a round trip
through pickle changes sharing. So the header is pickled with the memo off
("fast" mode: equal structure gives equal bytes), array buffers are hashed out
of band, and notebook functions and classes are hashed by their code, not by
cloudpickle's per-process class ids. Self-referencing values cannot be pickled
without a memo; they fall back to ordinary pickle bytes.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
import weakref
from typing import Any

import blake3

from nbferry.agent.pickling import is_definition


def _code_digest(code: types.CodeType) -> bytes:
    """Hash of what a code object does; independent of file name and line numbers."""
    h = blake3.blake3(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode())
    for const in code.co_consts:
        h.update(_code_digest(const) if isinstance(const, types.CodeType) else repr(const).encode())
    return h.digest()


def _definition_digest(obj: Any) -> bytes:
    h = blake3.blake3(obj.__qualname__.encode())
    if isinstance(obj, types.FunctionType):
        h.update(_code_digest(obj.__code__))
        h.update(repr((obj.__defaults__, obj.__kwdefaults__)).encode())
        return h.digest()
    h.update(repr([b.__qualname__ for b in obj.__mro__]).encode())
    for name in sorted(set(vars(obj)) - _CLASS_CACHES):
        member = vars(obj)[name]
        h.update(name.encode())
        fn = getattr(member, "__func__", member)  # staticmethod/classmethod
        if isinstance(fn, types.FunctionType):
            h.update(_code_digest(fn.__code__))
    return h.digest()


# Caches that pickling or abc add to a class; they say nothing about its content.
_CLASS_CACHES = frozenset({"__slotnames__", "_abc_impl"})


def _definition_marker(digest: bytes) -> bytes:  # pragma: no cover - never called
    return digest


def _array_marker(*args: Any) -> Any:  # pragma: no cover - never called
    return args


class Unstable(ValueError):
    """The value holds objects whose pickles differ per process (matplotlib artists)."""


# Pickles of these carry object ids and callback registries: no stable fingerprint.
_UNSTABLE_MODULES = ("matplotlib.",)


def _set_marker(*items: Any) -> Any:  # pragma: no cover - never called
    return items


def _weak_marker(*items: Any) -> Any:  # pragma: no cover - never called
    return items


class _Canonical(pickle.Pickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self.arrays: list[Any] = []  # hashed after the stream, never pickled

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if is_definition(obj):
            return _definition_marker, (_definition_digest(obj),)
        np = sys.modules.get("numpy")
        if np is not None and cls is np.ndarray and not obj.dtype.hasobject:
            # Layout (strides, order, views, read-only flag) is not content: hash C-ordered bytes.
            data = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)  # datetimes too
            self.arrays.append(data)
            return _array_marker, (obj.dtype.str, obj.shape, len(self.arrays))
        if cls in (weakref.WeakValueDictionary, weakref.WeakKeyDictionary, weakref.WeakSet):
            # Not picklable, but their content is what they hold right now: a
            # rerun that left them empty (their referents gone) must not verify.
            items = list(obj.items()) if cls is not weakref.WeakSet else _sorted(list(obj))
            return _weak_marker, (cls.__name__, items)
        if cls.__module__.startswith(_UNSTABLE_MODULES):
            raise Unstable(f"{cls.__module__}.{cls.__qualname__} has no stable fingerprint")
        return NotImplemented


class _CanonicalSets(_Canonical):
    """Also sorts sets, whose iteration order follows per-process string hashing.

    pickle never shows sets to reducer_override, only to persistent_id, which
    it calls for every object: 3-4x slower on object graphs, so it is used only
    for values known to hold sets. Without sets both give the same bytes.
    """

    def persistent_id(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is set or cls is frozenset:
            return (_set_marker, cls.__name__, *_sorted(obj))
        return None


def _sorted(items: Any) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:  # mixed types: order by each element's own canonical bytes
        return sorted(items, key=lambda item: fingerprint(item, sets=True))


def fingerprint(value: Any, sets: bool = False) -> bytes:
    """32-byte BLAKE3 fingerprint of a value.

    `sets=True` makes values holding sets fingerprint alike in every process
    (pass it whenever the value may hold sets). Raises Unstable for values no
    fingerprint can verify across processes, and the pickling error for
    values that cannot be pickled at all.
    """
    cls = _CanonicalSets if sets else _Canonical
    sink = io.BytesIO()
    pickler = cls(sink)
    pickler.fast = True  # no memo: sharing does not change the bytes
    try:
        pickler.dump(value)
    except (RecursionError, ValueError) as exc:
        if isinstance(exc, Unstable):
            raise
        sink = io.BytesIO()
        pickler = cls(sink)
        pickler.dump(value)
    h = blake3.blake3(sink.getvalue(), max_threads=blake3.blake3.AUTO)  # big arrays: all cores
    for data in pickler.arrays:
        h.update(data)
    return h.digest()
