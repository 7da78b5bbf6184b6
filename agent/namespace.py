"""What in a kernel's namespace is the user's session, and what it needs to import."""

from __future__ import annotations

import re
import sys
import types
from functools import cache
from typing import Any

# IPython's own names; _i12, _12 and friends are matched by pattern.
IPYTHON_NAMES = frozenset(
    {"In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_dh", "_ih"}
    | {"exit", "quit", "get_ipython"}
)
_HISTORY_RE = re.compile(r"^_i{1,3}$|^_i\d+$|^_\d+$")


def user_variables(user_ns: dict[str, Any], hidden: dict[str, Any] | None = None) -> dict[str, Any]:
    """The names a user made, in namespace order.

    Leaves out IPython's history and helpers, dunder names, and anything the
    shell put there at start-up (unless the user rebound it).
    """
    hidden = hidden or {}
    out = {}
    for name, value in user_ns.items():
        if name.startswith("__") and name.endswith("__"):
            continue
        if name in IPYTHON_NAMES or _HISTORY_RE.match(name):
            continue
        if name in hidden and hidden[name] is value:
            continue
        if getattr(type(value), "__module__", "").startswith("nbferry.agent"):
            continue
        out[name] = value
    return out


@cache
def _distributions() -> dict[str, list[str]]:
    from importlib import metadata

    return metadata.packages_distributions()  # scans every installed package: 0.1-0.3 s


@cache
def distribution_of(module_name: str) -> tuple[str, str]:
    """(distribution, version) that provides a module, or ('', '') for the stdlib."""
    from importlib import metadata

    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "__main__":
        return "", ""
    try:  # most packages are named like their module (numpy, pandas): one lookup
        return top, metadata.version(top)
    except metadata.PackageNotFoundError:
        pass
    for dist in _distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "", ""


def is_module(value: Any) -> bool:
    return isinstance(value, types.ModuleType)


def size_of(value: Any) -> int:
    """A cheap in-memory size: array and frame buffers, else the object itself."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    usage = getattr(value, "memory_usage", None)
    if callable(usage) and type(value).__module__.startswith("pandas"):
        try:
            total = usage(deep=False)
            return int(total.sum()) if hasattr(total, "sum") else int(total)
        except Exception:
            pass
    try:
        return sys.getsizeof(value)
    except Exception:
        return 0


def element_types(items: Any) -> frozenset[type] | None:
    """The exact types of a container's elements, found in C; None when one of
    them cannot be hashed (a class whose metaclass defines __eq__ without
    __hash__), so callers take their general, per-element path instead."""
    try:
        return frozenset(map(type, items))
    except TypeError:
        return None
