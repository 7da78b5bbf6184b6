"""Recompute on restore: rerun the planned cells in order, then check what they made.

The plan is made again here from what actually loaded: a variable whose pod
loaded costs nothing, one that was recomputed at checkpoint time or whose pod
failed to load must come from its cells, and a cell is safe only when every
file it read is on this host, unchanged. So a damaged pod falls back to
recomputation whenever its cells are safe to rerun.

Rerun cells never touch a loaded value: they read deep copies of the loaded
values they were recorded reading (a cell may change its inputs in ways the
recorder missed, or through an alias its rerun made again), and the other
loaded values are out of the namespace until the replay ends. Loaded classes
and functions stay themselves, with copies of their attributes and defaults
lent for the replay, and the statements that made them are left out. A rerun cell
that wrote a loaded name (an older version) is followed by the loaded value
once the replay passes the cell that made the final version. Afterwards
every recomputed variable's fingerprint is compared with the one recorded
at checkpoint time.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbferry.agent.fingerprint import fingerprint
from nbferry.v1 import manifest_pb2 as pb

if TYPE_CHECKING:
    from nbferry.agent import planner


@dataclass
class Outcome:
    recomputed: list[str] = field(default_factory=list)  # rerun and verified equal
    differs: list[str] = field(default_factory=list)  # rerun, but not what the source had
    lost: list[dict[str, str]] = field(default_factory=list)  # {"name", "reason"}
    rerun_cells: list[int] = field(default_factory=list)  # execution counts, as In[n]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def module_state_notes(cells: Iterable[pb.CellExecution], rerun: Iterable[int] = ()) -> list[str]:
    """What a restore leaves out: module attributes set by cells it does not rerun
    (`rerun`: execution counts). Modules are imported afresh on the target."""
    again = set(rerun)
    notes = []
    for cell in cells:
        targets = [e.target for e in cell.side_effects if e.kind == "module_state"]
        if targets and cell.execution_count not in again:
            notes.append(
                f"In[{cell.execution_count}] changed {', '.join(targets)}: modules are imported "
                "afresh on restore, so run that cell again if later code relies on it"
            )
    return notes


def plan_here(manifest: pb.Manifest, loaded: set[str]) -> planner.Plan:
    """Which cells to rerun on this host for the variables that did not load."""
    from nbferry.agent import planner, planning  # only when something must be recomputed

    skipped = {s.name for s in manifest.skipped}
    variables = [
        planner.Variable(name, 0.0 if name in loaded else planner.INF)
        for name in manifest.variables
        if name not in skipped
    ]
    cells = planning.cells_for_plan(
        manifest.history, inputs_on_target=True, file_problem=planning.file_checker()
    )
    return planning.plan_restorable(cells, variables, speed=1.0)


def recompute(
    shell: Any, manifest: pb.Manifest, values: dict[str, Any], modules: dict[str, Any]
) -> Outcome:
    """Rerun what the values loaded into `shell` do not cover; verify and report.

    `values` are the loaded variables, `modules` the re-imported module
    bindings: both are put back after any rerun cell rebinds them.
    """
    out = Outcome()
    missing = [n for n in manifest.variables if n not in values]
    if not missing:
        return out
    started = time.perf_counter()
    plan = plan_here(manifest, set(values))
    for name, why in sorted(plan.infeasible.items()):
        out.lost.append({"name": name, "reason": why})
    errors, broken = _replay(shell, manifest.history, plan.rerun_cells, values, modules,
                             set(plan.recompute))  # fmt: skip
    out.rerun_cells = [manifest.history.cells[i].execution_count for i in plan.rerun_cells]
    ns = shell.user_ns
    for name in plan.recompute:
        if name in broken or name not in ns:
            ns.pop(name, None)  # never leave a half-made value under the name
            why = "; ".join(errors) or "the cells that made it no longer do"
            out.lost.append({"name": name, "reason": f"rerunning its cells failed: {why}"})
            continue
        expected = manifest.variables[name].fingerprint
        try:
            same = not expected or fingerprint(ns[name], sets=True) == expected
        except Exception:
            same = False
        if not expected:
            out.warnings.append(f"{name} was recomputed but cannot be fingerprinted to verify it")
        (out.recomputed if same else out.differs).append(name)
    if out.differs:
        out.warnings.append(
            f"recomputed but different from the checkpoint: {', '.join(out.differs)} "
            "(their cells are not deterministic in a way the recorder could not see)"
        )
    out.warnings += errors
    out.seconds = time.perf_counter() - started
    return out


def _without_definitions(source: str, names: set[str]) -> str | ast.Module:
    """The cell minus the statements that made loaded definitions: `def`,
    `class` and `Name = ...` (a namedtuple, an Enum, a `type(...)` call, also
    unpacked from a tuple), also inside `if`/`try`/`with`/`match` blocks.

    Objects the rerun makes must be instances of the loaded classes (the ones
    stored pods refer to), not of a second copy of each class.
    """
    if not names:
        return source
    tree = ast.parse(source)
    _drop_definitions(tree.body, names)
    return ast.fix_missing_locations(tree)


def _drop_definitions(body: list[ast.stmt], names: set[str]) -> None:
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    kept = []
    for stmt in body:
        if isinstance(stmt, kinds) and stmt.name in names:
            continue
        targets = (
            stmt.targets
            if isinstance(stmt, ast.Assign)
            else [stmt.target]
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None
            else []
        )
        if targets and all(_only_defines(t, stmt.value, names) for t in targets):
            continue
        # Blocks that run once. A loop's body may make a new definition per
        # iteration that the loop itself uses, so loops are rerun as they are.
        for block in ("body", "orelse", "finalbody"):
            if isinstance(stmt, (ast.If, ast.Try, ast.With)) and getattr(stmt, block, None):
                _drop_definitions(getattr(stmt, block), names)
        for handler in getattr(stmt, "handlers", []) if isinstance(stmt, ast.Try) else []:
            _drop_definitions(handler.body, names)
        for case in stmt.cases if isinstance(stmt, ast.Match) else []:
            _drop_definitions(case.body, names)
        kept.append(stmt)
    body[:] = kept or [ast.Pass()]


# Calls that make a class (or a function) and do nothing else.
_FACTORIES = frozenset(
    {"namedtuple", "NamedTuple", "TypedDict", "Enum", "IntEnum", "StrEnum", "Flag", "IntFlag",
     "type", "new_class", "make_dataclass", "NewType"}
)  # fmt: skip


def _only_defines(target: ast.expr, value: ast.expr | None, names: set[str]) -> bool:
    """Whether `target = value` only binds loaded names to new definitions:
    `Point = namedtuple(...)`, also unpacked (`P, C = namedtuple(...), Enum(...)`)."""
    if isinstance(target, ast.Name):
        return target.id in names and _makes_definition(value)
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
        return len(target.elts) == len(value.elts) and all(
            _only_defines(t, v, names) for t, v in zip(target.elts, value.elts, strict=True)
        )
    return False


def _makes_definition(value: ast.expr | None) -> bool:
    """Whether an assignment's value only makes or names a definition, so that
    leaving the statement out loses nothing else (`h = register(lambda: 1)`
    also appends to a registry: it stays)."""
    if isinstance(value, (ast.Lambda, ast.Name, ast.Attribute)):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in _FACTORIES
    return False


def _replay(
    shell: Any,
    history: pb.History,
    indexes: list[int],
    values: dict[str, Any],
    modules: dict[str, Any],
    recompute: set[str],
) -> tuple[list[str], set[str]]:
    """Run the cells at `indexes` in order with output hidden.

    Returns one line per cell that raised, and the names those cells (and
    cells that read what they wrote) may have left wrong. Whatever happens,
    every name a rerun touched ends as it must: the loaded value, the
    recomputed one, or what it was before the restore began.
    """
    from IPython.utils.capture import capture_output

    from nbferry.agent.pickling import is_definition

    ns = shell.user_ns
    cells = [history.cells[i] for i in indexes]
    last: dict[str, int] = {}  # name -> index of the history's last writer (the final version)
    first: dict[str, int] = {}  # name -> index of its first writer
    for cell in history.cells:
        for name in [*cell.writes, *cell.deletes]:
            last[name] = cell.index
            first.setdefault(name, cell.index)
    # Names that shadow a builtin only from a later cell on (`def len(...)`):
    # an earlier cell ran with the builtin, and so must its rerun.
    shadowing = {n for n in first if n in vars(builtins)}
    final = {**values, **modules}
    touched = {n for c in cells for n in [*c.writes, *c.deletes]}
    missing = object()
    before = {n: ns.get(n, missing) for n in touched}  # the target's own bindings
    loaded_defs = {n for n, v in values.items() if is_definition(v)}
    # A rerun cell reads copies of the loaded values it was recorded reading: it
    # may change its inputs in place in ways the recorder did not see (np.add.at,
    # a positional out=), or through an alias its rerun made again (`b = a`, then
    # `b.append(2)`). Loaded values no cell is recorded reading stay in place
    # (a function reached through an object may still read them).
    reads = [set(c.reads) for c in cells]
    read = set().union(*reads)
    data = {n: v for n, v in values.items() if n not in loaded_defs and n in read}
    # Loaded classes and functions the cells read stay themselves (pods refer to
    # them), but their mutable data is lent as copies: `C.items.append(x)`,
    # `f.calls += 1`, a mutable default or a closure's counter must not change twice.
    # A method reaches its class's data through `self` (`self.items.append(v)`,
    # where items is a class attribute): the classes of read instances count as read.
    by_id = {id(values[n]): n for n in loaded_defs}
    of_instances = {by_id[id(c)] for v in data.values() for c in type(v).__mro__ if id(c) in by_id}
    defs = {n: values[n] for n in loaded_defs if n in read or n in of_instances}
    owned = {n: _definition_state(v) for n, v in defs.items()}
    figures = _figures()
    cwd = os.getcwd()
    clobbered: set[str] = set()
    broken: set[str] = set()  # written by a cell that raised, or read from one
    errors: list[str] = []
    try:
        ns.update(_isolated(data))
        lent = _isolated({(n, k): v for n in defs for k, v in _lendable(defs[n], owned[n]).items()})
        for (n, k), copy in lent.items():
            _set_definition_state(defs[n], {k: copy}, exact=False)
        with capture_output(display=True):
            for pos, cell in enumerate(cells):
                for name in [n for n in clobbered if last.get(n, -1) < cell.index]:
                    # The loaded final version, now that it is due (data: a copy, if read).
                    clobbered.discard(name)
                    later = name in data and any(name in r for r in reads[pos:])
                    ns[name] = _isolated({name: data[name]})[name] if later else final[name]
                writes = {*cell.writes, *cell.deletes}
                label = f"In[{cell.execution_count}]"
                if broken & set(cell.reads):
                    broken |= writes  # its inputs are wrong: do not run it on them
                    errors.append(
                        f"{label} skipped: it reads {', '.join(sorted(broken & set(cell.reads)))}"
                    )
                else:
                    # Relative paths mean what they meant then. A directory missing
                    # here matters only to files the cell read, and those were
                    # checked here by their absolute paths.
                    if cell.cwd and os.path.isdir(cell.cwd):
                        os.chdir(cell.cwd)
                    skip_defs = {n for n in loaded_defs if last.get(n) == cell.index}
                    hidden = {
                        n: ns.pop(n)
                        for n in shadowing
                        if first[n] > cell.index and n not in cell.reads and n in ns
                    }
                    try:
                        code = compile(
                            _without_definitions(cell.source, skip_defs),
                            f"<nbferry rerun {label}>",
                            "exec",
                            dont_inherit=True,
                        )
                        exec(code, ns)
                    except Exception as exc:
                        errors.append(f"{label} raised {type(exc).__name__}: {exc}")
                        broken |= writes
                    finally:
                        ns.update(hidden)
                clobbered |= writes & final.keys()
    finally:
        os.chdir(cwd)
        for name, obj in defs.items():
            _set_definition_state(obj, owned[name])
        for name in touched | data.keys():
            if name in final:
                ns[name] = final[name]
            elif name in recompute and name not in broken:
                continue
            elif before[name] is missing:
                ns.pop(name, None)  # a temporary the session no longer had
            else:
                ns[name] = before[name]
        _close_new_figures(figures)
    return errors, broken & recompute


# Class attributes that are the class's own machinery, never data.
_CLASS_FIXED = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__"})


def _definition_state(obj: Any) -> dict[Any, Any]:
    """What code can change on a function or a class (by reference): a class's
    attributes; a function's attributes, defaults and closure cells (("cell", i))."""
    if isinstance(obj, type):
        return {k: v for k, v in vars(obj).items() if k not in _CLASS_FIXED}
    state: dict[Any, Any] = {
        "__dict__": obj.__dict__,
        "__defaults__": obj.__defaults__,
        "__kwdefaults__": obj.__kwdefaults__,
    }
    for i, cell in enumerate(obj.__closure__ or ()):
        with contextlib.suppress(ValueError):  # an empty cell
            state[("cell", i)] = cell.cell_contents
    return state


def _lendable(obj: Any, state: dict[Any, Any]) -> dict[Any, Any]:
    """The data in a definition's state: what a rerun may change in place.

    A class's methods, properties, classmethods and its own machinery (dunder
    and abc names) are code, not data, and some of them cannot be copied.
    """
    if not isinstance(obj, type):
        return state
    return {
        k: v
        for k, v in state.items()
        if not k.startswith(("__", "_abc_")) and not callable(v) and not hasattr(type(v), "__get__")
    }


def _set_definition_state(obj: Any, state: dict[Any, Any], exact: bool = True) -> None:
    """Set `obj`'s state to `state`; `exact`: also remove class attributes added since."""
    if isinstance(obj, type) and exact:
        for name in [k for k in vars(obj) if k not in state and k not in _CLASS_FIXED]:
            delattr(obj, name)
    for name, value in state.items():
        if isinstance(name, tuple):  # ("cell", i)
            obj.__closure__[name[1]].cell_contents = value
        elif vars(obj).get(name, state) is not value:
            setattr(obj, name, value)


def _isolated(values: dict[Any, Any]) -> dict[Any, Any]:
    """Deep copies that share among themselves what the originals share; the
    process's own objects (`random`'s generator behind `randint`) are kept."""
    import copy

    from nbferry.agent.pickling import process_global_objects

    keep = {id(obj): obj for obj in process_global_objects().values()}
    try:
        return copy.deepcopy(values, dict(keep))
    except Exception:
        out = {}
        for name, value in values.items():
            try:
                out[name] = copy.deepcopy(value, dict(keep))
            except Exception:  # cannot be copied (holds a lock...): the loaded value itself
                out[name] = value
        return out


def _figures() -> set[int]:
    plt = sys.modules.get("matplotlib.pyplot")
    return set(plt.get_fignums()) if plt is not None else set()


def _close_new_figures(before: set[int]) -> None:
    """Figures a rerun drew would otherwise show up under the restoring cell."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
