"""What in a kernel's namespace is the user's session, and what it needs to import."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterable
from functools import cache
from typing import Any

# IPython's own names; _i12, _12 and friends are matched by pattern.
IPYTHON_NAMES = frozenset({"In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_dh", "_ih"})
# IPython's helpers: left out while they hold IPython's objects; `exit = 3` is the user's.
SHELL_HELPERS = frozenset({"exit", "quit", "get_ipython"})
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
        if name in SHELL_HELPERS and _from_ipython(value):
            continue
        if getattr(type(value), "__module__", "").startswith("nbferry.agent"):
            continue
        out[name] = value
    return out


# `import a.b.c [as x], d.e` and `from a.b import c`: each loads the dotted module
# and makes it an attribute of its parent, which later cells may rely on.
_IMPORT_RE = re.compile(
    r"\bimport\s+([\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*)"
    r"|\bfrom\s+([\w.]+)\s+import\b"
)


def imported_modules(sources: Iterable[str]) -> set[str]:
    """Dotted module names that import statements in `sources` name (a text scan:
    a false hit in a string only means importing a module the source had loaded)."""
    found: set[str] = set()
    for match in _IMPORT_RE.finditer("\n".join(sources)):
        if match[2]:
            found.add(match[2])
            continue
        for part in match[1].split(","):
            found.add(part.split()[0])
    return found


def submodules_of(module: str, imported: set[str]) -> list[str]:
    """The imported submodules of `module` loaded in this process, parents first."""
    prefix = module + "."
    return sorted(n for n in imported if n.startswith(prefix) and n in sys.modules)


def _from_ipython(value: Any) -> bool:
    module = getattr(value, "__module__", None) or getattr(type(value), "__module__", "")
    return isinstance(module, str) and module.startswith(("IPython.", "ipykernel."))


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
