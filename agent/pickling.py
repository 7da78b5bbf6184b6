"""Serialize namespace values into pods, and learn what they share while doing it.

One pickling pass per variable does two jobs: it produces the bytes (pickle
protocol 5, buffers out of band, so array data is never copied) and, through
`persistent_id`, sees every object the pickler reaches. Ids of mutable objects
(and of the memory that numpy arrays view) reached from two variables make
them co-variables, stored together so aliasing survives. Library globals
(compiled functions, pandas' class-level `_metadata` lists) and immutable
pandas parts (indexes, offsets, dtypes) do not link variables: otherwise every
frame in a notebook would land in one pod.

Notebook-defined functions and classes ("definitions") are stored by value and
rebuilt bound to the live `__main__` namespace, so they keep seeing the
notebook's globals. Every other pod refers to a definition by its variable
name, so an instance restores with `type(obj) is Foo`.
"""

from __future__ import annotations

import array
import contextlib
import enum
import functools
import importlib
import io
import pickle
import sys
import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nbferry.agent.namespace import element_types

# Objects that can be shared without aliasing consequences: they never link groups.
_IMMUTABLE = (
    int,
    float,
    complex,
    str,
    bytes,
    bool,
    type(None),
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.BuiltinMethodType,
    range,
    slice,
    type(Ellipsis),
    frozenset,
    tuple,  # what a tuple holds that is mutable still links, by itself
    types.CodeType,  # code objects share constant tuples CPython merges at compile time
    enum.Enum,
)


def _shared_singletons() -> tuple[type, ...]:
    """Library types whose instances are shared process-wide (np.dtype('float64')),
    so reaching one says nothing about aliasing."""
    np = sys.modules.get("numpy")
    return (np.dtype, np.generic, np.ufunc) if np is not None else ()


# Compiled functions (Cython's, pandas' unpickle helpers among them) are globals, like
# Python functions: every frame's pickle reaches the same few, which must not link frames.
_FUNCTION_TYPE_NAMES = frozenset({"cython_function_or_method", "fused_cython_function"})


def immutable_leaves() -> tuple[type, ...]:
    """Library values that are immutable by contract but made of mutable parts.

    pandas indexes, offsets and dtypes are shared between the frames derived from
    one another (`rolling_mean.index is sensors.index`). Tracking the arrays
    inside them would put every such frame into one pod, so the planner could
    only store or recompute them all together. See `_Leaf` for how they are
    pickled and when they still link.
    """
    pd = sys.modules.get("pandas")
    if pd is None:
        return ()
    return (pd.Index, pd.api.extensions.ExtensionDtype, pd.offsets.BaseOffset)


def _library_globals() -> set[int]:
    """Ids of mutable library globals that every frame's pickle reaches: pandas
    puts the class-level `_metadata` list into each DataFrame's and Series' state."""
    pd = sys.modules.get("pandas")
    if pd is None:
        return set()
    return {id(pd.DataFrame._metadata), id(pd.Series._metadata)}


# Objects of the process rather than of the session: restored by reference to
# the target's own. A variable bound to sys.path or os.environ stays the live
# one, and `from random import randint` keeps drawing from the generator whose
# state the restore sets (a copy would repeat the source's draws on its own).
# pickle shows exact lists and dicts to no hook but persistent_id, so sys.path
# is kept by reference only as a variable's own value, not inside a container.
PROCESS_GLOBALS = (
    ("sys", "path"),
    ("sys", "argv"),
    ("sys", "modules"),
    ("sys", "meta_path"),
    ("sys", "path_hooks"),
    ("sys", "stdin"),
    ("sys", "stdout"),
    ("sys", "stderr"),
    ("os", "environ"),
    ("random", "_inst"),
    ("numpy.random.mtrand", "_rand"),
)


def process_global_objects() -> dict[tuple[str, str], Any]:
    """The PROCESS_GLOBALS loaded here, by where each lives."""
    found = {}
    for module, attr in PROCESS_GLOBALS:
        owner = sys.modules.get(module)
        if owner is not None and hasattr(owner, attr):
            found[module, attr] = getattr(owner, attr)
    return found


def process_globals() -> dict[int, tuple[str, str]]:
    """Ids of the PROCESS_GLOBALS loaded here, with where each lives."""
    return {id(obj): where for where, obj in process_global_objects().items()}


class _GlobalRef:
    """Stands in for a variable bound to a process global (exact lists such as
    sys.path never reach reducer_override, so they are swapped before pickling)."""

    def __init__(self, module: str, attr: str) -> None:
        self.where = (module, attr)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return _process_global, self.where


class _NotALeaf(Exception):
    """The leaf holds objects that could be shared: pickle it the ordinary way."""


class _Leaf(pickle.Pickler):
    """Pickles one leaf (an index, a dtype) whole, its array data out of band.

    It has no persistent_id, so a million-label index costs no Python call per
    label; it only notes the memory its arrays use (`arrays`), which links the
    leaf's variable to another variable that reaches that memory directly
    (`pd.Index(arr)` keeps `arr` as its data). Object arrays must hold only
    atoms, and nothing may refer to the notebook's own objects; otherwise the
    leaf is pickled the ordinary, tracked way.
    """

    def __init__(self, file: io.BytesIO, buffers: list[pickle.PickleBuffer], np: Any) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self.np = np
        self.arrays: dict[int, Any] = {}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, self.np.ndarray):
            if obj.dtype.hasobject and not _only_atoms(obj, minimum=0):
                raise _NotALeaf
            root = _array_root(obj)
            self.arrays[id(root)] = root
            return _datetimes_out_of_band(obj, self.np)
        if getattr(type(obj), "__module__", "") == "__main__":
            raise _NotALeaf
        return NotImplemented


def _load_leaf(data: bytes, *buffers: Any) -> Any:
    return pickle.loads(data, buffers=buffers)


SMALL_FOR_DILL = 1 << 20  # dill is the last resort, and only for small objects
STATE_POD = "_state"  # the pod holding random-number states; it has no variables


def _main_dict() -> dict[str, Any]:
    return sys.modules["__main__"].__dict__


# -- load-time helpers (referenced by name from pickles: keep names stable) ----


def _main_attr(name: str) -> Any:
    """A definition restored earlier, looked up in the live namespace."""
    try:
        return _main_dict()[name]
    except KeyError:
        raise NameError(f"definition {name!r} is not restored yet") from None


def _process_global(module: str, attr: str) -> Any:
    """The target's own sys.path, os.environ, random generator... (see PROCESS_GLOBALS)."""
    return getattr(importlib.import_module(module), attr)


def _rebuild_main_function(
    code: types.CodeType,
    name: str,
    qualname: str,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
    closure: tuple[Any, ...] | None,
    attrs: dict[str, Any],
    doc: str | None,
) -> types.FunctionType:
    """A notebook function whose globals are the (new) kernel's namespace."""
    # Cells are pickled as cells (memoized), so closures that shared one still do.
    cells = closure
    fn = types.FunctionType(code, _main_dict(), name, defaults, cells)
    fn.__qualname__, fn.__kwdefaults__, fn.__doc__ = qualname, kwdefaults, doc
    fn.__module__ = "__main__"
    fn.__dict__.update(attrs)
    return fn


def _slotted_skeleton(
    metaclass: type, name: str, bases: tuple[type, ...], slots: Any, qualname: str
) -> type:
    """An empty notebook class that already has its __slots__ (they cannot be added later)."""
    with _quiet_init_subclass(bases):
        cls = metaclass(name, bases, {"__slots__": slots, "__module__": "__main__"})
    cls.__qualname__ = qualname
    return cls


def _quiet_skeleton_class(type_constructor: type, name: str, bases: tuple, *rest: Any) -> type:
    """cloudpickle's class rebuild (pickles name it; see decode), quietly."""
    from cloudpickle import cloudpickle

    with _quiet_init_subclass(bases):
        return cloudpickle._make_skeleton_class(type_constructor, name, bases, *rest)


@contextlib.contextmanager
def _quiet_init_subclass(bases: tuple[type, ...]) -> Iterator[None]:
    """Rebuild a class without running its notebook bases' __init_subclass__.

    What the hook did when the class was first made (a registry entry, an
    attribute) is in the stored state already; running it again would add
    the class twice, or fail on a global the restore has not bound yet.
    """
    hooks = {
        klass: vars(klass)["__init_subclass__"]
        for base in bases
        for klass in base.__mro__
        if klass.__module__ == "__main__" and "__init_subclass__" in vars(klass)
    }
    for klass in hooks:
        klass.__init_subclass__ = classmethod(_no_hook)  # type: ignore[assignment]
    try:
        yield
    finally:
        for klass, hook in hooks.items():
            klass.__init_subclass__ = hook


def _no_hook(cls: type, **kwargs: Any) -> None:
    pass


def _fill_class(cls: type, state: dict[str, Any]) -> None:
    """Second phase: the class body, set once the class itself is memoized."""
    for key, value in state.items():
        setattr(cls, key, value)


def _rebuild_view(
    base: Any,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: Any,
    writeable: bool = True,
) -> Any:
    """A numpy view onto a restored base array, as it was before."""
    import numpy as np

    # A Fortran-ordered base exports no flat buffer; its transpose is C-ordered
    # over the same memory, starting at the same address.
    flat = base if base.flags.c_contiguous else base.T
    view = np.ndarray(shape, dtype=dtype, buffer=flat, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def _rebuild_memoryview(base: Any, fmt: str, shape: tuple[int, ...], readonly: bool) -> memoryview:
    """A memoryview over a restored base (or a bytearray copy), with its format and shape."""
    view = memoryview(base)
    if (view.format, view.shape) != (fmt, shape):
        flat = view.cast("B")
        view = flat.cast(fmt) if len(shape) == 1 else flat.cast(fmt, shape)
    return view.toreadonly() if readonly and not view.readonly else view


def _view_as(data: Any, dtype: Any) -> Any:
    """A datetime64/timedelta64 array from its int64 view (see `_datetimes_out_of_band`)."""
    return data.view(dtype)


# -- capture-time analysis -------------------------------------------------------


def _datetimes_out_of_band(obj: Any, np: Any) -> Any:
    """numpy pickles datetime64 and timedelta64 arrays in band (a copy inside the
    pickle header); their int64 view goes out of band like any number array."""
    if type(obj) is np.ndarray and obj.dtype.kind in "mM" and obj.flags.c_contiguous:
        return _view_as, (obj.view(np.int64), obj.dtype)
    return NotImplemented


def is_definition(value: Any) -> bool:
    """A function or class defined in the notebook itself."""
    return (
        isinstance(value, (types.FunctionType, type))
        and getattr(value, "__module__", None) == "__main__"
    )


def _array_root(arr: Any) -> Any:
    """The object that owns an array's memory (follows .base)."""
    root = arr
    while getattr(root, "base", None) is not None:
        root = root.base
    return root


def _not_atoms(items: Any) -> Any:
    """The elements worth walking into; one type check in C when all are atoms."""
    kinds = element_types(items)
    if kinds is None:
        return list(items)
    if kinds <= _ATOMS:
        return ()
    return [x for x in items if type(x) not in _ATOMS]


def rebuildable_views(values: Iterable[Any]) -> dict[int, tuple[Any, Any]]:
    """numpy views reachable through plain containers, with the captured array they view.

    By id: (view, anchor). The anchor is the largest C-contiguous reachable
    array over the same memory that contains the view's bytes (numpy collapses
    .base to the memory owner, so the owner itself may be unreachable).

    These are rebuilt as views of their restored base. Arrays inside other
    objects (a pandas frame's blocks, say) are left to their owner's pickling:
    under copy-on-write they are logically independent anyway.
    """
    np = sys.modules.get("numpy")
    if np is None:
        return {}
    found: dict[int, Any] = {}
    seen: set[int] = set()
    stack = list(values)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            # Subclasses (masked arrays, matrix, recarray, the notebook's own)
            # carry state a bare view would drop: they use their own pickling.
            if type(obj) is np.ndarray:
                found[id(obj)] = obj
            if obj.dtype.hasobject:
                stack.extend(_not_atoms(obj.ravel().tolist()))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(_not_atoms(obj))
        elif isinstance(obj, dict):
            stack.extend(_not_atoms(obj.values()))
    bounds = getattr(getattr(np.lib, "array_utils", np), "byte_bounds", None)
    by_root: dict[int, list[Any]] = {}
    for arr in found.values():
        if not arr.dtype.hasobject:
            by_root.setdefault(id(_array_root(arr)), []).append(arr)
    views = {}
    for group in by_root.values():
        if len(group) < 2:
            continue
        span = {id(a): bounds(a) for a in group}
        # By the memory spanned (a broadcast view spans less than its size says),
        # then contiguous before strided (`a[::-1]` spans what `a` does), then
        # the memory's owner, then id: a strict order, so anchors never cycle.
        rank = {
            id(a): (
                span[id(a)][1] - span[id(a)][0],
                _contiguous(a),
                a.base is None,
                id(a),
            )
            for a in group
        }
        for arr in group:
            lo, hi = span[id(arr)]
            anchors = [
                a
                for a in group
                if rank[id(a)] > rank[id(arr)]
                and _contiguous(a)
                and span[id(a)][0] <= lo
                and hi <= span[id(a)][1]
            ]
            if anchors:
                views[id(arr)] = (arr, max(anchors, key=lambda a: rank[id(a)]))
    return views


def _contiguous(arr: Any) -> bool:
    """Pickled as one flat buffer in memory order, so views rebuild on it by offset."""
    return bool(arr.flags.c_contiguous or arr.flags.f_contiguous)


@dataclass
class Encoded:
    """One pickled object: header bytes, out-of-band buffers, and what it reached."""

    header: bytes
    buffers: list[pickle.PickleBuffer]
    serializer: str
    # Mutable objects (and array memory owners) the pickler reached, by id. The
    # objects are held so that the ids of temporaries made while pickling stay
    # unique for the whole capture; a reused id would link unrelated variables.
    reached: dict[int, Any] = field(default_factory=dict)
    # Immutable leaves (pandas indexes...) reached: they link only to a variable bound to one.
    leaves: dict[int, Any] = field(default_factory=dict)
    # Memory the leaves' arrays use: links only to a variable that reaches it directly.
    leaf_arrays: dict[int, Any] = field(default_factory=dict)
    has_sets: bool = False  # reached a set or frozenset (see fingerprint(sets=...))
    # Bases of memoryviews stored as copies, by id: another variable reaching one no
    # longer shares it with the view after restore.
    copied: dict[int, Any] = field(default_factory=dict)
    seconds: float = 0.0  # time spent pickling
    refers: set[str] = field(default_factory=set)  # definitions referred to by name


class _Tracking:
    """Mixin: record reached objects; map definitions and views to rebuild helpers."""

    def _setup(
        self,
        definitions: dict[int, str],
        views: dict[int, Any],
        own: set[int],
        use_leaves: bool,
        process: dict[int, tuple[str, str]],
    ) -> None:
        self.reached: dict[int, Any] = {}
        self.definitions = definitions  # id -> variable name of notebook definitions
        self.views = views  # id -> (view, anchor): views rebuilt on an array pickled too
        self.own = own  # ids of definitions this pod stores by value
        self.np = sys.modules.get("numpy")
        self.immutable = _IMMUTABLE + _shared_singletons()
        self.leaves = immutable_leaves() if use_leaves and self.np is not None else ()
        self.leaves_reached: dict[int, Any] = {}
        self.leaf_arrays: dict[int, Any] = {}
        self.globals = process  # see process_globals()
        self.ignored = _library_globals() | self.globals.keys()
        self.actions: dict[type, int] = {}  # per type: what persistent_id does with it
        self.has_sets = False
        self.refers: set[str] = set()
        self.copied: dict[int, Any] = {}
        self.memoryview_bases = True  # dill, the last resort, copies views instead

    def _action(self, cls: type) -> int:
        if cls is set:
            return _SET
        if cls is frozenset:
            return _FROZENSET
        if issubclass(cls, self.immutable) or cls.__name__ in _FUNCTION_TYPE_NAMES:
            return _SKIP
        if self.leaves and issubclass(cls, self.leaves):
            return _LEAF
        if self.np is not None and issubclass(cls, self.np.ndarray):
            return _ARRAY
        return _TRACK

    def persistent_id(self, obj: Any) -> None:
        cls = type(obj)
        action = self.actions.get(cls)
        if action is None:
            action = self.actions[cls] = self._action(cls)
        if action == _SKIP:
            return None
        key = id(obj)
        if action == _LEAF:
            self.leaves_reached[key] = obj
        elif action == _FROZENSET:
            self.has_sets = True
        elif key not in self.ignored:
            self.reached[key] = obj
            if action == _ARRAY:
                root = _array_root(obj)
                self.reached[id(root)] = root
            elif action == _SET:
                self.has_sets = True
        return None

    def _override(self, obj: Any) -> Any:
        key = id(obj)
        if key in self.globals:
            return _process_global, self.globals[key]
        if key in self.definitions and key not in self.own:
            self.refers.add(self.definitions[key])
            return _main_attr, (self.definitions[key],)
        if key in self.views:
            anchor = self.views[key][1]
            offset = obj.__array_interface__["data"][0] - anchor.__array_interface__["data"][0]
            args = (anchor, offset, obj.shape, obj.strides, obj.dtype)
            # The flag only when it is off, so most pickles still load in older versions.
            return _rebuild_view, args if obj.flags.writeable else (*args, False)
        if type(obj) is memoryview:
            return self._reduce_memoryview(obj)
        if self.np is None:
            return NotImplemented
        if type(obj) is self.np.ndarray:
            if obj.dtype.kind in "mM":
                return _datetimes_out_of_band(obj, self.np)
            if _only_atoms(obj):
                # Nothing below can alias: pickle the elements in C, without a
                # persistent_id call per string (pandas text columns: ~3x faster).
                return pickle.loads, (pickle.dumps(obj, protocol=5),)
            return NotImplemented
        if self.leaves and isinstance(obj, self.leaves):
            buffers: list[pickle.PickleBuffer] = []
            sink = io.BytesIO()
            leaf = _Leaf(sink, buffers, self.np)
            try:
                leaf.dump(obj)
            except Exception:  # _NotALeaf, or only cloudpickle can store it
                return NotImplemented
            self.leaf_arrays.update(leaf.arrays)
            return _load_leaf, (sink.getvalue(), *buffers)
        return NotImplemented

    def _reduce_memoryview(self, view: memoryview) -> Any:
        """Plain pickle has no memoryview; dill's and cloudpickle's come back as bytes.

        A view of its whole base is rebuilt over the base, pickled with it (so a
        base that is another variable stays shared when they are stored together).
        A part of a base, or a strided view, is rebuilt over a bytearray copy of
        its bytes: pure Python sees no address to find the part in the base by.
        Either way with the view's format, shape and readonly flag."""
        try:
            base = view.obj
        except ValueError:  # released
            return NotImplemented
        fmt, shape = view.format, view.shape
        if self.memoryview_bases and view.c_contiguous and self._plain_buffer(base):
            with memoryview(base) as whole:
                if (
                    whole.c_contiguous
                    and whole.nbytes == view.nbytes
                    and ((whole.format, whole.shape) == (fmt, shape) or _castable(view))
                ):
                    return _rebuild_memoryview, (base, fmt, shape, view.readonly)
        if not _castable(view):
            return NotImplemented  # cloudpickle's reducer: bytes
        self.copied[id(base)] = base
        return _rebuild_memoryview, (bytearray(view), fmt, shape, view.readonly)

    def _plain_buffer(self, base: Any) -> bool:
        """Bases every serializer rebuilds as themselves; others (an mmap, a
        ctypes array) would fail or come back as another type: copy the view."""
        if type(base) in (bytes, bytearray, array.array):
            return True
        return self.np is not None and type(base) is self.np.ndarray


def _castable(view: memoryview) -> bool:
    """Whether memoryview.cast can give a byte view this format and shape
    (native single-character formats; no zero in a shape of more than one dimension)."""
    if 0 in view.shape and view.ndim != 1:
        return False
    try:
        memoryview(bytearray(view.itemsize)).cast(view.format)
    except (ValueError, TypeError):
        return False
    return True


# What persistent_id does with an object of a type (decided once per type and pickler).
_SKIP, _LEAF, _TRACK, _ARRAY, _SET, _FROZENSET = range(6)


# Element types that hold no references: an object array of only these reaches nothing mutable.
_ATOMS = frozenset({str, int, float, bool, type(None), bytes, complex})
_MANY_ELEMENTS = 1024  # below this, per-element tracking costs less than the check


def _only_atoms(arr: Any, minimum: int = _MANY_ELEMENTS) -> bool:
    """An object-dtype array (a pandas text column, say) whose elements are all atoms."""
    if not arr.dtype.hasobject or arr.dtype.names is not None or arr.size < minimum:
        return False
    kinds = element_types(arr.ravel(order="K").tolist())
    return kinds is not None and kinds <= _ATOMS


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})


def _plain_containers(value: Any, ignored: set[int]) -> tuple[dict[int, Any], bool] | None:
    """What the tracking pickler would record for a value made only of lists, tuples,
    dicts, sets and atoms (token lists, JSON-like records); None for anything else.

    Such a value needs no tracking pickler: nothing in it is a definition, a view
    or a leaf, and its mutable containers are all it can share with another
    variable. Checking each container's element types in C (set(map(type, ...)))
    replaces a persistent_id call per element: 3M token strings pickle ~4x faster.
    Returns (mutable containers by id, whether a set or frozenset was reached).
    """
    reached: dict[int, Any] = {}
    seen: set[int] = set()
    has_sets = False
    plain = _ATOMS | _CONTAINERS
    stack = [value]
    while stack:
        obj = stack.pop()
        key = id(obj)
        if key in seen:
            continue
        seen.add(key)
        cls = type(obj)
        if cls is set or cls is frozenset:
            has_sets = True
        if cls is not tuple and cls is not frozenset and key not in ignored:
            reached[key] = obj
        parts = (obj, obj.values()) if cls is dict else (obj,)
        for items in parts:
            kinds = element_types(items)
            if kinds is None or not kinds <= plain:
                return None  # the tracking pickler judges it
            if kinds <= _ATOMS:
                continue
            stack.extend(x for x in items if type(x) in _CONTAINERS)
    return reached, has_sets


class _StdPickler(_Tracking, pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        return self._override(obj)


@functools.cache
def _cloud_pickler_class() -> type:
    """Built once per process (cloudpickle is imported only when first needed)."""
    import cloudpickle

    class _CloudPickler(_Tracking, cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            result = self._override(obj)
            if result is not NotImplemented:
                return result
            if (
                isinstance(obj, types.FunctionType)
                and obj.__module__ == "__main__"
                and obj.__globals__ is _main_dict()
            ):
                return _rebuild_main_function, (
                    obj.__code__,
                    obj.__name__,
                    obj.__qualname__,
                    obj.__defaults__,
                    obj.__kwdefaults__,
                    obj.__closure__,
                    dict(obj.__dict__),
                    obj.__doc__,
                )
            if isinstance(obj, type) and obj.__module__ == "__main__" and "__slots__" in vars(obj):
                return _reduce_slotted_class(obj)
            return super().reducer_override(obj)

    return _CloudPickler


def _reduce_slotted_class(cls: type) -> tuple[Any, ...]:
    """cloudpickle 3.1 builds a class before applying its body, so __slots__ arrive too
    late and instances gain a __dict__. Build the skeleton with its slots, then fill it."""
    slots = cls.__slots__
    names = {slots} if isinstance(slots, str) else set(slots)
    skip = names | {"__slots__", "__dict__", "__weakref__", "__module__", "__qualname__"}
    state = {k: v for k, v in vars(cls).items() if k not in skip}
    args = (type(cls), cls.__name__, cls.__bases__, slots, cls.__qualname__)
    return _slotted_skeleton, args, state, None, None, _fill_class


def _dump(
    pickler_cls: type,
    value: Any,
    definitions: dict[int, str],
    views: dict[int, Any],
    own: set[int],
    leaves: bool,
    process: dict[int, tuple[str, str]],
) -> Encoded:
    buffers: list[pickle.PickleBuffer] = []
    sink = io.BytesIO()
    pickler = pickler_cls(sink, protocol=5, buffer_callback=buffers.append)
    pickler._setup(definitions, views, own, leaves, process)
    pickler.dump(value)
    if pickler.leaf_arrays.keys() & pickler.reached.keys():
        # A leaf shares memory with another part of this value: one ordinary
        # pickle keeps them sharing (its memo sees both).
        return _dump(pickler_cls, value, definitions, views, own, False, process)
    name = "pickle" if pickler_cls is _StdPickler else "cloudpickle"
    return Encoded(
        sink.getvalue(),
        buffers,
        name,
        pickler.reached,
        pickler.leaves_reached,
        pickler.leaf_arrays,
        pickler.has_sets,
        refers=pickler.refers,
        copied=pickler.copied,
    )


def encode(
    value: dict[str, Any],
    definitions: dict[int, str],
    views: dict[int, Any],
    by_value: bool = False,
    leaves: bool = True,
    dill: bool = True,
    process: dict[int, tuple[str, str]] | None = None,
) -> Encoded:
    """Serialize {name: value} with the first serializer that works.

    pickle (protocol 5, out-of-band buffers), then cloudpickle (same), then
    dill for small objects (unless `dill=False`: dill's pure-Python pickler
    would spend seconds on a value too big for it). `by_value` stores this
    pod's own definitions by value (cloudpickle). `leaves=False` pickles pandas
    indexes and dtypes the ordinary way, so that variables stored together keep
    sharing them. `process`: process_globals(), when the caller encodes many
    values (it costs ~10 us). Raises the first serializer's error when all fail.
    """
    started = time.perf_counter()
    here = process_globals() if process is None else process
    encoded = _encode(value, definitions, views, by_value, leaves, dill, here)
    encoded.seconds = time.perf_counter() - started
    return encoded


def _encode(
    value: dict[str, Any],
    definitions: dict[int, str],
    views: dict[int, Any],
    by_value: bool,
    leaves: bool,
    dill: bool,
    here: dict[int, tuple[str, str]],
) -> Encoded:
    if any(id(v) in here for v in value.values()):
        value = {n: _GlobalRef(*here[id(v)]) if id(v) in here else v for n, v in value.items()}
    plain = None if by_value else _plain_containers(value, _library_globals())
    if plain is not None:
        reached, has_sets = plain
        return Encoded(pickle.dumps(value, protocol=5), [], "pickle", reached, has_sets=has_sets)
    # By value only under its own name: an alias (`g = f`) refers to the definition.
    own = {id(v) for n, v in value.items() if definitions.get(id(v)) == n} if by_value else set()
    first_error: Exception | None = None
    attempts = [_cloud_pickler_class()] if by_value else [_StdPickler, _cloud_pickler_class()]
    for cls in attempts:
        try:
            return _dump(cls, value, definitions, views, own, leaves, here)
        except Exception as exc:
            first_error = first_error or exc
    if dill:
        try:
            encoded = _dill_dump(value, definitions, views, own, here)
            if len(encoded.header) <= SMALL_FOR_DILL:
                return encoded
        except Exception:
            pass
    assert first_error is not None
    raise first_error


@functools.cache
def _dill_pickler_class() -> type:
    """dill with the same tracking as the others (so what it stores still links
    co-variables, and notebook classes are referred to by name), refusing open
    files: dill reopens them on load, and mode 'w' empties them."""
    import dill

    class _DillPickler(_Tracking, dill.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, io.IOBase):
                raise TypeError("open files are not stored; reopen them after restore")
            return self._override(obj)

    return _DillPickler


def _dill_dump(
    value: Any,
    definitions: dict[int, str],
    views: dict[int, Any],
    own: set[int],
    process: dict[int, tuple[str, str]],
) -> Encoded:
    # In band (no buffer_callback): dill pods are small, and older versions load them
    # without buffers.
    sink = io.BytesIO()
    pickler = _dill_pickler_class()(sink, protocol=5)
    pickler._setup(definitions, views, own, False, process)
    pickler.memoryview_bases = False  # dill is the last resort: views are copied
    pickler.dump(value)
    return Encoded(
        sink.getvalue(),
        [],
        "dill",
        pickler.reached,
        has_sets=pickler.has_sets,
        refers=pickler.refers,
        copied=pickler.copied,
    )


def decode(header: bytes | bytearray, buffers: list[Any], serializer: str) -> dict[str, Any]:
    if serializer == "dill":
        import dill

        return dill.loads(bytes(header))
    if serializer == "cloudpickle":
        return _CloudUnpickler(io.BytesIO(header), buffers=buffers).load()
    return pickle.loads(header, buffers=buffers)


class _CloudUnpickler(pickle.Unpickler):
    """Loads cloudpickle pods, with notebook classes rebuilt quietly."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "cloudpickle.cloudpickle" and name == "_make_skeleton_class":
            return _quiet_skeleton_class
        return super().find_class(module, name)
