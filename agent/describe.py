"""A comparable description of a namespace: type, short repr and fingerprint per variable.

The fingerprint hashes exactly what capture would store, so equal fingerprints
in two kernels mean equal values (for definitions: equal code and defaults).
"""

from __future__ import annotations

import reprlib
from typing import Any

from nbferry.agent import pickling
from nbferry.agent.capture import capture_namespace, type_name
from nbferry.agent.fingerprint import fingerprint as _fingerprint
from nbferry.agent.namespace import is_module, user_variables

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40


def describe(
    user_ns: dict[str, Any], hidden: dict[str, Any] | None = None
) -> dict[str, dict[str, str]]:
    captured = capture_namespace(user_ns, hidden)
    out: dict[str, dict[str, str]] = {}
    skipped = {s.name: s.reason for s in captured.skipped}
    for name, value in user_variables(user_ns, hidden).items():
        if is_module(value):
            summary, fingerprint = f"module {value.__name__}", value.__name__
        elif name in captured.variables:
            summary = _short(value)
            try:
                fingerprint = _fingerprint(value, sets=True).hex()[:16]
            except Exception:  # matplotlib artists and the like: what was stored
                fingerprint = captured.variables[name].digest.hex()[:16]
        else:
            summary, fingerprint = _short(value), f"not stored: {skipped.get(name, '?')[:60]}"
        out[name] = {"type": type_name(value), "summary": summary, "fingerprint": fingerprint}
    return out


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return f"{type(value).__name__} shape={shape}"
    if pickling.is_definition(value):
        return f"{'class' if isinstance(value, type) else 'def'} {value.__qualname__}"
    text = _repr.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
