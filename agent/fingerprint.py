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


class _Canonical(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if is_definition(obj):
            return _definition_marker, (_definition_digest(obj),)
        np = sys.modules.get("numpy")
        if np is not None and type(obj) is np.ndarray and not obj.dtype.hasobject:
            # Layout (strides, order, views) is not content: hash C-ordered bytes.
            data = np.ascontiguousarray(obj).reshape(-1).view(np.uint8)  # datetimes too
            return _array_marker, (obj.dtype.str, obj.shape, pickle.PickleBuffer(data))
        return NotImplemented


def fingerprint(value: Any) -> bytes:
    """32-byte BLAKE3 fingerprint of a value; raises if it cannot be pickled at all."""
    buffers: list[pickle.PickleBuffer] = []
    sink = io.BytesIO()
    pickler = _Canonical(sink, protocol=5, buffer_callback=buffers.append)
    pickler.fast = True  # no memo: sharing does not change the bytes
    try:
        pickler.dump(value)
    except (RecursionError, ValueError):
        buffers.clear()
        sink = io.BytesIO()
        _Canonical(sink, protocol=5, buffer_callback=buffers.append).dump(value)
    h = blake3.blake3(sink.getvalue(), max_threads=blake3.blake3.AUTO)  # big arrays: all cores
    for buf in buffers:
        h.update(buf.raw())
    return h.digest()
