"""Record every cell execution: names read and written, in-place changes, side effects, runtime.

Hooks IPython's `pre_run_cell`/`post_run_cell` events, so users add nothing to
their cells. In-place changes are found by fingerprinting, before and after
the cell, only the existing mutable values the cell's code could touch (see
`cellscan`); user objects are only read, never flagged or wrapped. Side
effects come from a `sys.addaudithook` hook that does nothing unless a cell
is running. History ids are positions and execution counts, never `id()` or
clocks, so the history means the same on any host.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import os
import random
import re
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import blake3

from nbferry.agent.cellscan import NAMESPACE_CALLS, CellScan, Use, code_globals, scan
from nbferry.agent.fingerprint import fingerprint
from nbferry.agent.namespace import element_types, size_of
from nbferry.v1 import manifest_pb2 as pb

MAX_FILES = 1000  # files read by one cell that are listed (and checked on restore)
FINGERPRINT_LIMIT = 256 << 20  # bigger candidates are assumed changed, not hashed twice per cell
HASH_LIMIT = 64 << 20  # files read up to this size are hashed, so a copy elsewhere still matches
_NBFERRY_CELL = re.compile(
    r"%+(nbferry|load_ext\s+nbferry|reload_ext\s+nbferry|unload_ext\s+nbferry)"
)
# Values that cannot change in place: never worth a fingerprint.
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), frozenset, range)
_UNCHANGING = (
    types.ModuleType,
    types.FunctionType,
    type,
    types.BuiltinFunctionType,
    types.MethodType,  # get_ipython().run_line_magic: never fingerprint the shell
)
_SKIP = _IMMUTABLE + _UNCHANGING

_active: Recorder | None = None  # the recorder whose cell is running, for the audit hook
_hook_installed = False


@dataclass
class _Running:
    """What pre_run_cell learned, kept until post_run_cell."""

    source: str
    scan: CellScan
    reads: set[str]
    writes: set[str]
    before: dict[str, tuple[int, bytes | None]]  # candidate -> (id, fingerprint or None)
    rng: Any
    started: float
    cwd: str = ""
    effects: list[pb.SideEffect] = field(default_factory=list)
    files_read: dict[str, None] = field(default_factory=dict)  # ordered set
    too_many_files: bool = False


class Recorder:
    """Keeps the history of one shell; `history()` gives it in manifest form."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.cells: list[pb.CellExecution] = []
        self._running: _Running | None = None
        self._digests: dict[str, tuple[int, bytes]] = {}  # name -> (id, fingerprint) after a cell
        self._globals_of: dict[types.CodeType, tuple[set[str], set[str]]] = {}
        self.overhead = 0.0  # seconds spent in the hooks, for benchmarks
        self._ignored = _ignored_prefixes()

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        global _hook_installed
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        if not _hook_installed:  # audit hooks cannot be removed: install one, once
            sys.addaudithook(_audit)
            _hook_installed = True

    def stop(self) -> None:
        global _active
        for event, fn in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_run_cell", self.post_run_cell),
        ):
            with contextlib.suppress(ValueError):
                self.shell.events.unregister(event, fn)
        if _active is self:
            _active = None

    def adopt(self, history: pb.History, restored: list[str], checkpoint_id: str) -> bool:
        """Take over a restored session's history when this kernel has none of its own.

        Otherwise the restore itself becomes one unsafe cell that wrote every
        restored name, so no later plan reruns an older local cell for them.
        """
        if not self.cells:
            self.cells.extend(history.cells)
            return True
        self.cells.append(
            pb.CellExecution(
                index=len(self.cells),
                execution_count=getattr(self.shell, "execution_count", 0) or 0,
                source=f"%nbferry restore {checkpoint_id}",
                writes=sorted(set(restored)),
                side_effects=[pb.SideEffect(kind="nbferry", target="%nbferry restore")],
                unsafe=f"it restored checkpoint {checkpoint_id}",
            )
        )
        return False

    # -- hooks -----------------------------------------------------------------
    def pre_run_cell(self, info: Any) -> None:
        global _active
        t0 = time.perf_counter()
        self._running = None
        raw = getattr(info, "raw_cell", "") or ""
        if not raw.strip():
            return
        mixed = False
        if _NBFERRY_CELL.search(raw):
            rest = [ln for ln in raw.splitlines() if ln.strip() and not _NBFERRY_CELL.search(ln)]
            if not any(not ln.lstrip().startswith("#") for ln in rest):
                return  # the agent's own cells are not part of the session's history
            mixed = True  # code beside a checkpoint or restore: recorded, never rerun
        source = getattr(info, "transformed_cell", None)  # IPython >= 8.22 transforms first
        if source is None:
            try:
                source = self.shell.transform_cell(raw)
            except Exception:
                return  # IPython will report the error; nothing runs
        ns = self.shell.user_ns
        found = scan(source)
        reads = {n for n in found.reads if n in ns}
        output_history = sorted(n for n in reads if _is_output_history(n))
        writes = set(found.writes)
        via_reads, via_writes, unseen = self._through_definitions(reads, ns)
        reads |= via_reads
        writes |= via_writes
        found.unreplayable = found.unreplayable or unseen
        before = {}
        assume_changed: set[str] = set()
        for name in (found.candidates | via_reads) & ns.keys():
            value = ns[name]
            if isinstance(value, _SKIP):
                continue
            if name not in via_reads and not could_change(value, found.uses[name], ns):
                continue
            if size_of(value) > FINGERPRINT_LIMIT:
                assume_changed.add(name)  # hashing it before and after every cell costs too much
                continue
            cached = self._digests.get(name)
            if cached is not None and cached[0] == id(value):
                before[name] = cached
            else:
                before[name] = (id(value), _digest(value))
        self._running = _Running(
            source, found, reads, writes | assume_changed, before, _rng_state(), 0.0, _cwd()
        )
        if mixed:
            self._running.effects.append(pb.SideEffect(kind="nbferry", target="%nbferry"))
        if output_history:
            self._running.effects.append(
                pb.SideEffect(kind="output_history", target=", ".join(output_history))
            )
        _active = self
        self.overhead += time.perf_counter() - t0
        self._running.started = time.perf_counter()

    def post_run_cell(self, result: Any) -> None:
        global _active
        ended = time.perf_counter()
        run, self._running = self._running, None
        _active = None
        if run is None or getattr(result, "error_before_exec", None) is not None:
            return
        ns = self.shell.user_ns
        mutated = []
        for name, (ident, digest) in run.before.items():
            value = ns.get(name, _MISSING)
            if value is _MISSING or id(value) != ident:
                continue  # rebound or deleted: a write the scan already saw
            after = _digest(value)
            if after is None or after != digest:
                mutated.append(name)  # unfingerprintable (a generator...): assume changed
            if after is not None:
                self._digests[name] = (ident, after)
        # A function defined and called in this one cell was not in the namespace before.
        fresh = {n for n in run.scan.writes & run.scan.reads if _notebook_code(ns.get(n))}
        if fresh:
            via_reads, via_writes, unseen = self._through_definitions(fresh, ns)
            run.reads |= via_reads - run.scan.writes
            run.writes |= via_writes
            run.scan.unreplayable = run.scan.unreplayable or unseen
        effects = list(run.effects)
        for path in run.files_read:
            effect = _file_read(path)
            if effect is not None:
                effects.append(effect)
        if not run.scan.seeds:
            for name in _rng_drawn(run.rng, _rng_state()):
                effects.append(pb.SideEffect(kind="random", target=f"global {name} state"))
        effects += [pb.SideEffect(kind="random", target=c) for c in run.scan.random]
        effects += [pb.SideEffect(kind="clock", target=c) for c in run.scan.clock]
        effects += [pb.SideEffect(kind="external_read", target=c) for c in run.scan.external]
        effects += [
            pb.SideEffect(kind="module_state", target=f"{module.__name__}.{attr}")
            for name, attr in run.scan.attribute_sets
            if isinstance(module := ns.get(name), types.ModuleType)
        ]
        raised = getattr(result, "error_in_exec", None) is not None
        cell = pb.CellExecution(
            index=len(self.cells),
            execution_count=getattr(result, "execution_count", None) or 0,
            source=run.source,
            runtime_seconds=ended - run.started,
            raised=raised,
            reads=sorted(run.reads),
            writes=sorted(run.writes | set(mutated)),
            deletes=sorted(run.scan.deletes),
            mutated=sorted(mutated),
            side_effects=effects,
            unsafe=_unsafe_reason(effects, raised, run.scan.syntax_error, run.scan.unreplayable),
            cwd=run.cwd,
        )
        for name in run.writes | run.scan.deletes:
            self._digests.pop(name, None)
        self.cells.append(cell)
        self.overhead += time.perf_counter() - ended

    # -- helpers ---------------------------------------------------------------
    def _through_definitions(
        self, names: set[str], ns: dict[str, Any]
    ) -> tuple[set[str], set[str], str]:
        """Globals read and written by the notebook functions and classes `names`
        reach, and why a rerun could not replay them ('' when it can): such code
        calls exec, eval or globals(), reaching globals it does not name."""
        reads: set[str] = set()
        writes: set[str] = set()
        unseen = ""
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for code in _notebook_code(ns.get(name)):
                if code not in self._globals_of:
                    self._globals_of[code] = code_globals(code)
                r, w = self._globals_of[code]
                reads |= r & ns.keys()
                writes |= w
                todo.extend(r & ns.keys())
                called = sorted(r & NAMESPACE_CALLS)
                if called and not unseen:
                    unseen = (
                        f"it calls {name}, which uses {called[0]}, so its reads and edits "
                        "are more than the recorder can see"
                    )
        return reads, writes, unseen

    def record_effect(self, kind: str, target: str) -> None:
        run = self._running
        if run is None:
            return
        if kind == "file_read":
            if target.startswith(self._ignored) or target.endswith(_CODE_SUFFIXES):
                return
            if len(run.files_read) < MAX_FILES:
                run.files_read[target] = None
            elif not run.too_many_files:
                run.too_many_files = True  # beyond this, one marker: rerunning needs them all
                run.effects.append(pb.SideEffect(kind="external_read", target="over 1000 files"))
            return
        if kind == "file_write" and target.startswith(self._ignored):
            return
        if len(run.effects) < 100:
            run.effects.append(pb.SideEffect(kind=kind, target=target[:500]))

    def history(self) -> pb.History:
        """Recorded cells, plus the ones that ran before recording started (unsafe to rerun)."""
        hist = pb.History()
        seen = {c.execution_count for c in self.cells if c.execution_count}
        inputs = list(self.shell.user_ns.get("In", []))
        first = min(seen) if seen else len(inputs)
        for count, source in enumerate(inputs[:first]):
            if count == 0 or not source or count in seen or _NBFERRY_CELL.search(source):
                continue
            found = scan(source)
            hist.cells.add(
                index=len(hist.cells),
                execution_count=count,
                source=source,
                reads=sorted(found.reads),
                writes=sorted(found.writes),
                deletes=sorted(found.deletes),
                unsafe="ran before nbferry started recording, so its effects are unknown",
            )
        for cell in self.cells:
            copy = hist.cells.add()
            copy.CopyFrom(cell)
            copy.index = len(hist.cells) - 1
        return hist


# Methods that change an array or a frame in place; every other method returns a
# new object (pandas >= 3 is copy-on-write, so x[...].m() never changes x).
_NUMPY_MUTATORS = frozenset(
    {"fill", "sort", "partition", "put", "resize", "setfield", "setflags", "itemset", "byteswap"}
)
_PANDAS_MUTATORS = frozenset({"insert", "pop", "update", "__setitem__", "__delitem__"})
# numpy functions that write into an argument (besides out=...).
_NUMPY_WRITERS = frozenset({"copyto", "put", "place", "putmask", "fill_diagonal", "shuffle"})
_PURE_MODULES = ("numpy", "pandas", "matplotlib", "seaborn", "scipy", "math", "statistics")


def could_change(value: Any, uses: list[Use], ns: dict[str, Any]) -> bool:
    """Whether any of a cell's uses could change an array, frame or container in place.

    numpy arrays, pandas (>= 3) objects and the builtin containers (list, dict,
    set, and collections' dicts) are judged; anything else is fingerprinted
    whenever a cell uses it as a candidate. Fingerprinting a big list twice per
    cell costs more than the cell itself when it only asks len(docs).
    """
    kind = _container_kind(value)
    # Elements a loop could change: reached by iterating, or through a builtin that
    # hands them out (enumerate(xs), zip(a, b), sorted(xs), list(a)).
    mutable = functools.cache(lambda: _mutable_elements(value, kind))  # once for all uses
    if kind is None:
        mutators = _builtin_mutators(value)
        if mutators is None:
            return True
        plain = functools.cache(lambda: _plain_elements(value))
        for use in uses:
            if use.kind == "iter" and use.readonly and _the_builtins(use.name, ns) and plain():
                continue  # a comprehension that only reads the elements
            if use.kind in ("store", "chain", "iter"):
                return True  # a store, or an element reached and possibly changed
            if use.kind == "method" and (use.name in mutators or use.name.startswith("__")):
                return True
            if use.kind == "arg" and not _pure_on_data(use.name, ns):
                return True
            if use.kind == "arg" and _hands_out_elements(use.name, ns) and mutable():
                return True
        return False
    mutators = _NUMPY_MUTATORS if kind == "numpy" else _PANDAS_MUTATORS
    for use in uses:
        if use.kind == "store":
            return True
        if use.kind == "method" and (use.inplace or use.name in mutators):
            return True
        if use.kind == "chain" and kind == "numpy" and (use.inplace or use.name in mutators):
            return True  # a[0].fill(1): a[0] is a view
        if use.kind == "arg" and (use.inplace or not _pure_on_data(use.name, ns)):
            return True
        exposed = use.kind == "iter" or (use.kind == "arg" and _hands_out_elements(use.name, ns))
        if exposed and mutable():
            return True  # for row in a: row[0] = 1 (rows of a 2-D array are views)
    return False


# Builtins whose result holds or yields the argument's own elements.
_HANDS_OUT = frozenset(
    {"enumerate", "zip", "reversed", "iter", "next", "list", "tuple", "sorted", "filter",
     "map", "min", "max", "sum", "set", "frozenset", "dict"}
)  # fmt: skip


def _hands_out_elements(called: str, ns: dict[str, Any]) -> bool:
    return called in _HANDS_OUT and called not in ns  # the builtin, not the user's own


def _mutable_elements(value: Any, kind: str | None) -> bool:
    """Whether changing an element a loop gets could change the value itself.

    Flat containers hand out strings and numbers; 1-D numeric arrays hand out
    scalar copies; pandas (>= 3) hands out labels and scalars, except from
    object columns.
    """
    if kind == "numpy":
        return value.ndim > 1 or value.dtype.hasobject
    if kind == "pandas":
        dtypes = value.dtypes if hasattr(value, "columns") else [getattr(value, "dtype", None)]
        return any(str(d) == "object" for d in dtypes)
    kinds = element_types(value)
    return kinds is None or not kinds <= _FLAT_TYPES


_LIST_MUTATORS = frozenset(
    {"append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse"}
)
_DICT_MUTATORS = frozenset(
    {"update", "pop", "popitem", "clear", "setdefault", "subtract", "move_to_end"}
)
_SET_MUTATORS = frozenset(
    {"add", "discard", "remove", "pop", "clear", "update", "difference_update",
     "intersection_update", "symmetric_difference_update"}
)  # fmt: skip


def _builtin_mutators(value: Any) -> frozenset[str] | None:
    """The in-place methods of a builtin container's exact type; None for anything else
    (a subclass may override any method, except collections' own dicts)."""
    t = type(value)
    if t is list:
        return _LIST_MUTATORS
    if t is set:
        return _SET_MUTATORS
    if t is dict or (issubclass(t, dict) and t.__module__ == "collections"):
        return _DICT_MUTATORS
    return None


def _container_kind(value: Any) -> str | None:
    module = type(value).__module__
    if module.startswith("numpy") and hasattr(value, "__array_interface__"):
        return "numpy"
    if module.startswith("pandas") and _pandas_copy_on_write():
        return "pandas"
    return None


@functools.cache
def _pandas_copy_on_write() -> bool:
    pd = sys.modules.get("pandas")
    try:
        return int(pd.__version__.split(".")[0]) >= 3  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return False


def _pure_on_data(called: str, ns: dict[str, Any]) -> bool:
    """len(a), print(df), np.mean(a), plt.plot(a): calls that only read arrays and frames."""
    if not called:
        return False
    root, _, rest = called.partition(".")
    if called.rsplit(".", 1)[-1] in _NUMPY_WRITERS:
        return False
    target = ns.get(root, _MISSING)
    if target is _MISSING:  # a builtin; but dict.update(d, ...) and the like write
        return (root in vars(builtins) and not rest) or called == "display"
    if isinstance(target, types.ModuleType):
        return target.__name__.split(".")[0] in _PURE_MODULES
    return not rest and isinstance(target, type) and target.__module__.startswith(_PURE_MODULES)


_PLAIN = frozenset(
    {str, bytes, int, float, complex, bool, type(None), tuple, list, dict, set, frozenset}
)


def _plain_elements(value: Any) -> bool:
    """Whether a container's elements are plain data (exact builtin types: no
    iterators, which a read-only loop would still use up). Every element is
    checked, and of each element that is itself a container its first and
    last items; in comprehensions and map(), so 25,000 lists of tokens take
    about a millisecond."""
    types = element_types(value)
    if types is None or not types <= _PLAIN:
        return False
    ends: list[Any] = []
    if list in types or tuple in types:
        seqs = value if types <= {list, tuple} else [x for x in value if type(x) in (list, tuple)]
        ends += [x[0] for x in seqs if x]
        ends += [x[-1] for x in seqs if x]
    if types & {dict, set, frozenset}:
        ends += [next(iter(x)) for x in value if type(x) in (dict, set, frozenset) and x]
    end_types = element_types(ends)
    return end_types is not None and end_types <= _PLAIN


def _the_builtins(calls: str, ns: dict[str, Any]) -> bool:
    """Whether the calls a read-only loop relies on (`len,Counter`) are the real
    ones, not the user's functions of the same names."""
    import collections

    for called in filter(None, calls.split(",")):
        root, _, rest = called.partition(".")
        target = ns.get(root, _MISSING)
        if root == "Counter":
            if target is not collections.Counter:
                return False
        elif rest:  # collections.Counter
            if target is not collections or rest != "Counter":
                return False
        elif target is not _MISSING or root not in vars(builtins):
            return False
    return True


_MISSING = object()
_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")


_FLAT = (str, int, float, bool, bytes, type(None))
_FLAT_TYPES = frozenset(_FLAT)


def _digest(value: Any) -> bytes | None:
    """A change detector for one process (not a fingerprint: never leaves the kernel).

    Flat lists and dicts of plain scalars hash in C (strings cache their hash),
    about 4x faster than pickling them; anything else is fingerprinted.
    """
    cls = type(value)
    try:
        if (cls is list or cls is tuple) and all(type(v) in _FLAT for v in value):
            return b"L" + hash(tuple(value)).to_bytes(8, "little", signed=True)
        if cls is dict and all(type(k) in _FLAT and type(v) in _FLAT for k, v in value.items()):
            return b"D" + hash(tuple(value.items())).to_bytes(8, "little", signed=True)
        return fingerprint(value)
    except Exception:
        return None


_SMALL_CONTAINER = 32  # a dict of callbacks (`ops["add"](3)`): look at its values
_MAX_VISITS = 64  # objects looked at per name: the hook runs before every cell


def _notebook_code(value: Any) -> list[types.CodeType]:
    """Code objects that calling or using `value` may run: a notebook function
    (through functools wrappers and partials, bound, or in small dicts, lists
    and tuples bound to the name, nested up to _CONTAINER_DEPTH deep:
    `cfg["hooks"]["log"]`), the methods of a notebook class, or of an
    instance's notebook classes. Never raises: it runs in IPython's hooks."""
    out: list[types.CodeType] = []
    todo: list[tuple[Any, int]] = [(value, 0)]
    seen: dict[int, int] = {}  # id -> the shallowest depth it was looked at
    deep = _CONTAINER_DEPTH  # below a function or class: containers are not followed
    try:
        while todo and len(seen) < _MAX_VISITS:
            obj, depth = todo.pop()
            if seen.get(id(obj), deep + 1) <= depth:
                continue
            seen[id(obj)] = depth
            cls = type(obj)  # not obj.__class__: proxies may raise on it
            if cls is types.FunctionType:
                if obj.__module__ == "__main__":
                    out.append(obj.__code__)
                if "__wrapped__" in obj.__dict__:  # functools.wraps
                    todo.append((obj.__dict__["__wrapped__"], deep))
            elif cls is types.MethodType:
                todo.append((obj.__func__, deep))
            elif cls is functools.partial:
                todo.append((obj.func, deep))
            elif cls is _LRU_WRAPPER:
                todo.append((obj.__wrapped__, deep))
            elif issubclass(cls, type):
                if obj.__module__ == "__main__":
                    for member in vars(obj).values():
                        if type(member) is property:
                            todo.extend((f, deep) for f in (member.fget, member.fset) if f)
                        else:
                            todo.append((getattr(member, "__func__", member), deep))
            elif cls in (dict, list, tuple):
                if depth < _CONTAINER_DEPTH and len(obj) <= _SMALL_CONTAINER:
                    items = obj.values() if cls is dict else obj
                    todo.extend((v, depth + 1) for v in items)
            elif getattr(cls, "__module__", None) == "__main__":
                todo.extend((c, deep) for c in cls.__mro__ if c.__module__ == "__main__")
    except Exception:  # an odd object: what was found so far
        pass
    return out


_LRU_WRAPPER = type(functools.lru_cache(lambda: None))
_CONTAINER_DEPTH = 3


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed under the kernel
        return ""


def _is_output_history(name: str) -> bool:
    """_, __, ___, _12, Out: values IPython keeps of earlier outputs (never restored)."""
    return name in ("_", "__", "___", "Out", "_oh") or (name.startswith("_") and name[1:].isdigit())


def _rng_state() -> dict[str, Any]:
    """Fingerprints of the global RNG states, to see whether a cell drew from them."""
    states: dict[str, Any] = {"random": hash(random.getstate())}
    np = sys.modules.get("numpy")
    if np is not None:
        key, pos = np.random.get_state()[1:3]
        states["numpy.random"] = (blake3.blake3(key.tobytes()).digest(), pos)
    return states


def _rng_drawn(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Generators that changed (one that appeared, as numpy does on import, did not draw)."""
    return [name for name, state in before.items() if after.get(name, state) != state]


def _file_read(path: str) -> pb.SideEffect | None:
    """The file as the cell read it; None for paths that are not files (import probes)."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # never existed (a failed open) or a temporary file, gone already
    if not os.path.isfile(path):
        return None
    effect = pb.SideEffect(kind="file_read", target=path)
    effect.size = st.st_size
    effect.mtime.FromNanoseconds(st.st_mtime_ns)
    if st.st_size <= HASH_LIMIT:
        effect.blake3 = file_digest(path)
    return effect


def file_digest(path: str) -> bytes:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _unsafe_reason(
    effects: list[pb.SideEffect], raised: bool, syntax_error: str, unreplayable: str = ""
) -> str:
    if syntax_error:
        return f"its code does not parse ({syntax_error})"
    if unreplayable:
        return unreplayable
    if raised:
        return "it raised an exception, so it had only part of its effect"
    for effect in effects:
        if effect.kind == "file_write":
            return f"it writes {effect.target}"
        if effect.kind == "network":
            return f"it opens a network connection ({effect.target})"
        if effect.kind == "subprocess":
            return f"it runs a subprocess ({effect.target})"
        if effect.kind == "random":
            return f"it uses unseeded randomness ({effect.target})"
        if effect.kind == "clock":
            return f"it reads the clock ({effect.target})"
        if effect.kind == "nbferry":
            return "it also runs %nbferry (checkpoint or restore)"
        if effect.kind == "external_read":
            return f"it reads data outside Python's open() ({effect.target})"
        if effect.kind == "output_history":
            return f"it reads IPython's output history ({effect.target}), which is not restored"
    return ""


def _ignored_prefixes() -> tuple[str, ...]:
    """Files that say nothing about the session: the Python install, caches, kernel plumbing."""
    home = os.path.expanduser("~")
    prefixes = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        "/proc",
        "/sys",
        "/dev",
        "/usr",
        "/etc",
    }
    prefixes |= {
        os.path.join(home, d) for d in (".cache", ".ipython", ".local", ".config", ".jupyter")
    }
    for var in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "MPLCONFIGDIR"):
        if os.environ.get(var):
            prefixes.add(os.environ[var])
    # Both spellings: paths are checked as given first, to skip realpath() on
    # the hundreds of files an import opens.
    return tuple(
        {os.path.realpath(p) + os.sep for p in prefixes if p}
        | {os.path.abspath(p) + os.sep for p in prefixes if p}
    )


_WRITE_MODES = frozenset("wax+")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MUTATING_OS = {
    "os.remove": "file_write",
    "os.rename": "file_write",
    "os.rmdir": "file_write",
    "os.mkdir": "file_write",
    "os.truncate": "file_write",
    "shutil.rmtree": "file_write",
    "os.system": "subprocess",
    "subprocess.Popen": "subprocess",
    "os.posix_spawn": "subprocess",
    "os.spawn": "subprocess",
    "os.exec": "subprocess",
    "os.fork": "subprocess",
    "socket.connect": "network",
    "socket.sendto": "network",
}


def _audit(event: str, args: tuple) -> None:
    """The audit hook: cheap unless a recorded cell is running."""
    recorder = _active
    if recorder is None:
        return
    if threading.current_thread().name.startswith("nbferry"):
        return  # the agent's own threads (its gRPC server, its start-up)
    if event == "open":
        path, mode, flags = args
        if not isinstance(path, str | bytes | os.PathLike):
            return  # a file descriptor
        writes = (mode is not None and not _WRITE_MODES.isdisjoint(mode)) or (
            mode is None and flags & _WRITE_FLAGS
        )
        try:
            given = os.fsdecode(path)
        except (TypeError, ValueError):
            return
        if given.endswith(_CODE_SUFFIXES) or given.startswith(recorder._ignored):
            return  # imports and the Python install: the common case, kept cheap
        full = os.path.realpath(given)
        if full.startswith(("/dev/null",)):
            return
        recorder.record_effect("file_write" if writes else "file_read", full)
        return
    kind = _MUTATING_OS.get(event)
    if kind is None:
        return
    recorder.record_effect(kind, _describe(event, args))


def _describe(event: str, args: tuple) -> str:
    if event == "subprocess.Popen":
        return f"{event}: {args[1]!r}"[:200]
    if event in ("socket.connect", "socket.sendto"):
        return f"{args[-1]!r}"[:200]
    if args and isinstance(args[0], str | bytes | os.PathLike):
        return f"{event}: {os.fsdecode(args[0])}"[:200]
    return event


def attach(shell: Any) -> Recorder:
    """Start recording `shell` (once; loading the extension twice keeps one recorder)."""
    recorder = getattr(shell, "_nbferry_recorder", None)
    if recorder is None:
        recorder = Recorder(shell)
        recorder.start()
        shell._nbferry_recorder = recorder
    return recorder


def detach(shell: Any) -> None:
    recorder = getattr(shell, "_nbferry_recorder", None)
    if recorder is not None:
        recorder.stop()
        del shell._nbferry_recorder


def recorder_of(shell: Any) -> Recorder:
    """The shell's recorder; one that saw nothing (all cells unsafe) when none runs."""
    return getattr(shell, "_nbferry_recorder", None) or Recorder(shell)
