"""Capture a kernel's session into a checkpoint.

Runs on the kernel's main thread between cells (the magic runs as a cell), so
nothing mutates the namespace while it is read. Values nothing can serialize
are reported, never fatal.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import blake3

from nbferry.agent import autosave, pickling, planning
from nbferry.agent.covariables import group
from nbferry.agent.fingerprint import fingerprint
from nbferry.agent.namespace import (
    distribution_of,
    imported_modules,
    is_module,
    submodules_of,
    user_variables,
)
from nbferry.agent.pickling import STATE_POD
from nbferry.agent.rerun import module_state_notes
from nbferry.agent.session import kernel_id, notebook_path
from nbferry.storage import PodData, Store, StoreError
from nbferry.storage import chunks as ck
from nbferry.storage.speed import observe
from nbferry.v1 import manifest_pb2 as pb

# The slowest hashing speed a fingerprint estimate assumes; capture measures the real one
# (BLAKE3 on all cores: 4-8 GB/s on this project's 2-core VM) and uses it when faster.
HASH_BYTES_PER_SECOND = 1e9


def type_name(value: Any) -> str:
    cls = type(value)
    module = getattr(cls, "__module__", "")
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )


@dataclass
class Captured:
    """Everything a checkpoint needs, before it is written."""

    pods: list[PodData] = field(default_factory=list)
    variables: dict[str, pb.VariableRef] = field(default_factory=dict)
    skipped: list[pb.SkippedVariable] = field(default_factory=list)
    modules: list[pb.ModuleBinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. aliasing that could not be kept
    seconds: float = 0.0  # pickling everything
    values: dict[str, Any] = field(default_factory=dict, repr=False)  # name -> the live value
    has_sets: dict[str, bool] = field(default_factory=dict)  # see fingerprint(sets=...)


def capture_namespace(user_ns: dict[str, Any], hidden: dict[str, Any] | None = None) -> Captured:
    """Turn the user's variables into pods, module bindings and skip reasons."""
    started = time.perf_counter()
    out = Captured()
    names = user_variables(user_ns, hidden)
    data: dict[str, Any] = {}
    definitions: dict[int, str] = {}
    imported: set[str] | None = None
    for name, value in names.items():
        if is_module(value):
            if imported is None:  # the cells' sources, as IPython keeps them
                sources = user_ns.get("In")
                imported = imported_modules(sources if isinstance(sources, list) else [])
            dist, version = distribution_of(value.__name__)
            out.modules.append(
                pb.ModuleBinding(
                    name=name,
                    module=value.__name__,
                    distribution=dist,
                    version=version,
                    submodules=submodules_of(value.__name__, imported),
                )
            )
        elif pickling.is_definition(value) and (
            id(value) not in definitions or value.__name__ == name
        ):
            definitions[id(value)] = name  # the variable named like the object wins
        else:
            data[name] = value
    # Names bound to a definition under another name are aliases: data referring to it.
    for name, value in names.items():
        if pickling.is_definition(value) and definitions.get(id(value)) != name:
            data[name] = value

    # Definitions and data go through one grouping: a function whose default is
    # a notebook dict, a class attribute that is a notebook list, or two
    # closures over one cell share objects like any other co-variables.
    values: dict[str, Any] = {name: names[name] for name in sorted(definitions.values())}
    values.update(data)
    views = pickling.rebuildable_views(data.values())
    process = pickling.process_globals()
    single: dict[str, pickling.Encoded] = {}
    for name, value in values.items():
        try:
            single[name] = pickling.encode(
                {name: value},
                definitions,
                views,
                _defines({name: value}, definitions),
                process=process,
            )
        except Exception as exc:
            out.skipped.append(_skip(name, value, exc))
            out.values[name] = value  # if it is recomputed, its fingerprint verifies the rerun
            out.has_sets[name] = True
            if definitions.get(id(value)) == name:
                # Aliases must not refer to a definition no pod holds: the next
                # one becomes the definition (and is tried by value itself).
                aliases = [n for n in values if n != name and values[n] is value]
                if aliases:
                    definitions[id(value)] = aliases[0]
                else:
                    del definitions[id(value)]
    # A pandas index (dtype, offset) links the variables reaching it only through
    # a variable bound to it (`idx = df.index`), or through memory its arrays share
    # with a variable that reaches that memory directly (`pd.Index(arr)`).
    leaves = pickling.immutable_leaves()
    bound = {id(v) for v in values.values() if leaves and isinstance(v, leaves)}
    direct = set().union(*(e.reached.keys() for e in single.values()))
    links: dict[str, set[Any]] = {
        n: e.reached.keys() | (e.leaves.keys() & bound) | (e.leaf_arrays.keys() & direct)
        for n, e in single.items()
    }
    for n, cycle in _definition_cycles({n: e.refers for n, e in single.items()}).items():
        links[n].add(("definition cycle", cycle))
    out.notes += _copied_view_notes(single)
    groups = group(links)
    # Pods with definitions first: other pods refer to definitions by name.
    groups.sort(key=lambda members: not _defines({n: values[n] for n in members}, definitions))
    for members in groups:
        _store_group(out, members, values, single, links, (definitions, views, process))
    _hash_pods(out)
    out.pods.append(_state_pod())
    out.seconds = time.perf_counter() - started
    return out


def _definition_cycles(refers: dict[str, set[str]]) -> dict[str, str]:
    """Definitions that refer to each other by name, in a cycle (a base class
    whose registry holds its subclasses): name -> a name of its cycle.

    Each pod loads after the definitions it refers to, so a cycle must be one
    pod, where the pickler's memo resolves it.
    """
    reach: dict[str, set[str]] = {}
    for start in refers:
        seen, stack = set(), [start]
        while stack:
            for nxt in refers.get(stack.pop(), ()):
                if nxt not in seen and nxt in refers:
                    seen.add(nxt)
                    stack.append(nxt)
        reach[start] = seen
    return {
        n: min(m for m in reach[n] if n in reach[m])
        for n in refers
        if any(n in reach[m] for m in reach[n])
    }


def _store_group(
    out: Captured,
    members: list[str],
    values: dict[str, Any],
    single: dict[str, pickling.Encoded],
    links: dict[str, Any],
    context: tuple[dict[int, str], dict[int, Any], dict[int, tuple[str, str]]],
) -> None:
    """One pod for co-variables; when they cannot be pickled together, keep what
    sharing can be kept and say what was lost. `context`: (definitions, views,
    process globals), as pickling.encode takes them."""
    if len(members) == 1:
        name = members[0]
        _add_pod(out, f"p{len(out.pods)}", {name: values[name]}, single[name], single)
        return
    together = {n: values[n] for n in members}
    small = sum(len(single[n].header) for n in members) <= pickling.SMALL_FOR_DILL
    definitions, views, process = context
    try:
        enc = pickling.encode(
            together,
            definitions,
            views,
            _defines(together, definitions),
            leaves=False,
            dill=small,
            process=process,
        )
    except Exception as exc:  # keep the values, lose only the aliasing
        # Values only dill can store (they hold a lock...) go alone; the others
        # may still be stored together.
        alone = [n for n in members if single[n].serializer == "dill"]
        if not alone or len(alone) == len(members):
            alone = members
        others = ", ".join(n for n in members if n not in alone) or "each other"
        out.notes.append(
            f"{', '.join(alone)} share objects with {others} but could not be stored "
            f"together ({type(exc).__name__}: {exc}); each was stored alone, so they no "
            "longer share"
        )
        rest = [n for n in members if n not in alone]
        for n in alone:
            _add_pod(out, f"p{len(out.pods)}", {n: values[n]}, single[n], single)
        for sub in group({n: links[n] for n in rest}) if rest else []:
            _store_group(out, sub, values, single, links, context)
        return
    _add_pod(out, f"p{len(out.pods)}", together, enc, single)


def _hash_pods(out: Captured) -> None:
    """Hash every pod's chunks once, on all cores, for two uses: each pod's
    digest (what the planner compares with the parent checkpoint's) and the
    chunk addresses the store would otherwise compute in a second pass. Its
    speed prices the hashing half of fingerprinting a value the planner may
    recompute (a fixed guess made numeric arrays look 8x dearer to verify)."""
    started = time.perf_counter()
    cut = [ck.buffer_chunks([pod.header, *pod.buffers]) for pod in out.pods]
    everything = [c for parts in cut for chunks in parts for c in chunks]
    hashes = iter(ck.chunk_hashes(everything))
    total = sum(len(c) for c in everything)
    speed = max(HASH_BYTES_PER_SECOND, total / max(time.perf_counter() - started, 1e-9))
    for pod, parts in zip(out.pods, cut, strict=True):
        pod.chunk_hashes = [[next(hashes) for _ in chunks] for chunks in parts]
        h = blake3.blake3()
        for chunks, part_hashes in zip(parts, pod.chunk_hashes, strict=True):
            h.update(sum(len(c) for c in chunks).to_bytes(8, "little"))
            h.update(b"".join(part_hashes))
        for i, name in enumerate(pod.variables):
            out.variables[name].digest = h.digest()
            if not i:
                out.variables[name].fingerprint_seconds += out.variables[name].size / speed


def _defines(values: dict[str, Any], definitions: dict[int, str]) -> bool:
    """Whether a pod stores notebook definitions (by value, with cloudpickle).

    Only under the definition's own name: an alias (`g` in `f = g = lambda x: x`)
    refers to it by name like any other value, so that `g is f` after restore.
    """
    return any(definitions.get(id(v)) == n for n, v in values.items())


def _copied_view_notes(single: dict[str, pickling.Encoded]) -> list[str]:
    """Memoryviews stored over a copy of their buffer (a part of it, a base that is
    not a plain buffer type, or a view dill stores: see pickling's
    _reduce_memoryview) that another variable reaches."""
    notes = []
    for name, enc in single.items():
        for base in enc.copied:
            sharing = sorted(n for n, e in single.items() if n != name and base in e.reached)
            if sharing:
                notes.append(
                    f"{name} holds a memoryview over a buffer that {', '.join(sharing)} "
                    "also holds; the view was stored over a copy, so they no longer share"
                )
    return notes


def _add_pod(
    out: Captured,
    pod_id: str,
    values: dict[str, Any],
    enc: pickling.Encoded,
    single: dict[str, pickling.Encoded],
) -> None:
    out.pods.append(PodData(pod_id, enc.header, enc.buffers, list(values), enc.serializer))
    size = len(enc.header) + sum(memoryview(b).nbytes for b in enc.buffers)
    for i, (name, value) in enumerate(values.items()):
        out.values[name] = value
        out.has_sets[name] = single[name].has_sets
        out.variables[name] = pb.VariableRef(
            pod_id=pod_id,
            type_name=type_name(value),
            size=0 if i else size,
            encode_seconds=0.0 if i else enc.seconds,
            # Fingerprinting walks the value like pickling did; _hash_pods adds the hashing.
            fingerprint_seconds=0.0 if i else enc.seconds,
        )  # digest: set by _hash_pods


def fingerprint_recomputed(captured: Captured, names: Iterable[str]) -> None:
    """Canonical fingerprints for the values a restore will recompute and verify."""
    for name in names:
        ref = captured.variables.get(name)
        if ref is not None and name in captured.values:
            ref.fingerprint = _fingerprint_or_empty(captured, name)


def _fingerprint_or_empty(captured: Captured, name: str) -> bytes:
    try:
        return fingerprint(captured.values[name], sets=captured.has_sets[name])
    except Exception:  # Unstable (matplotlib) or unpicklable: restore cannot verify it
        return b""


def _skip(name: str, value: Any, exc: Exception) -> pb.SkippedVariable:
    reason = f"cannot be serialized: {type(exc).__name__}: {exc}"
    return pb.SkippedVariable(name=name, type_name=type_name(value), reason=reason[:500])


def _state_pod() -> PodData:
    state: dict[str, Any] = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state()
    enc = pickling.encode(state, {}, {})
    return PodData(STATE_POD, enc.header, enc.buffers, [], enc.serializer)


def environment(captured: Captured, user_ns: dict[str, Any]) -> pb.Environment:
    env = pb.Environment(cwd=os.getcwd(), python_executable=sys.executable)
    env.sys_path.extend(p for p in sys.path if p)
    tops = {m.module.split(".")[0] for m in captured.modules}
    tops |= {
        ref.type_name.split(".")[0] for ref in captured.variables.values() if "." in ref.type_name
    }
    for top in sorted(tops):
        dist, version = distribution_of(top)
        if dist:
            env.packages[dist] = version
    return env


def _labels(user_ns: dict[str, Any]) -> dict[str, str]:
    """The notebook's path as Jupyter gave it to the kernel, and the kernel's id, when known."""
    labels = {"notebook": notebook_path(user_ns), "kernel": kernel_id()}
    return {k: v for k, v in labels.items() if v}


class PlanError(ValueError):
    """Some variables can be neither stored nor safely recomputed; nothing was uploaded."""


def plan_checkpoint(
    shell: Any,
    store: Store,
    session_id: str,
    captured: Captured,
    *,
    restore_weight: float = 1.0,
    inputs_on_target: bool = False,
    store_all: bool = False,
) -> planning.Planned:
    """Plan what to store and what to recompute, with this store's measured speed."""
    from nbferry.agent.recorder import recorder_of
    from nbferry.storage.speed import cached_speed, store_speed

    parent = store.latest(session_id)
    already: dict[str, bytes] = {}
    if parent is not None:
        try:
            manifest = store.read_manifest(parent)
        except StoreError:
            manifest = None  # a damaged parent only costs deduplication
        if manifest is not None:
            already = planning.stored_digests(manifest)
    return planning.plan_session(
        captured.variables,
        [s.name for s in captured.skipped],
        recorder_of(shell).history(),
        # Storing everything needs no measurement: any figure will do for predictions.
        (cached_speed(store) or planning.DEFAULT_SPEED) if store_all else store_speed(store),
        restore_weight=restore_weight,
        inputs_on_target=inputs_on_target,
        store_all=store_all,
        already_stored=already,
        # A file changed since a cell read it makes that cell's rerun read something else.
        file_problem=planning.file_checker() if inputs_on_target else None,
        capture_seconds=captured.seconds,
    )


def checkpoint(
    shell: Any,
    store: Store,
    session_id: str,
    message: str = "",
    progress: Any = None,
    *,
    restore_weight: float = 1.0,
    inputs_on_target: bool = False,
    store_all: bool = False,
    allow_loss: bool = False,
) -> dict[str, Any]:
    """Capture, plan, upload what the plan stores, commit; returns the report.

    When some variable can be neither stored nor recomputed, raises PlanError
    before anything is uploaded, unless `allow_loss`.
    """
    started = time.perf_counter()
    user_ns = shell.user_ns
    captured = capture_namespace(user_ns, getattr(shell, "user_ns_hidden", None))
    planned = plan_checkpoint(
        shell,
        store,
        session_id,
        captured,
        restore_weight=restore_weight,
        inputs_on_target=inputs_on_target,
        store_all=store_all,
    )
    infeasible = planned.plan.infeasible
    if infeasible and not allow_loss:
        raise PlanError(
            "these variables can be neither stored nor safely recomputed; nothing was "
            "uploaded:\n  "
            + "\n  ".join(f"{n}: {why}" for n, why in sorted(infeasible.items()))
            + "\nDelete them, make them picklable, or pass --allow-loss to checkpoint without them."
        )
    recomputed = set(planned.plan.recompute)
    fingerprint_recomputed(captured, recomputed)
    skipped = [s for s in captured.skipped if s.name not in recomputed]
    for s in skipped:
        if s.name in infeasible:
            s.reason = infeasible[s.name][:500]
    variables = dict(captured.variables)
    for s in captured.skipped:
        if s.name in recomputed:  # unpicklable, rebuilt by its cells
            variables[s.name] = pb.VariableRef(
                pod_id=f"~{s.name}",
                type_name=s.type_name,
                unserializable=True,
                fingerprint=_fingerprint_or_empty(captured, s.name),
            )
    pods = [p for p in captured.pods if p.pod_id in planned.stored_groups or p.pod_id == STATE_POD]
    blocked = time.perf_counter() - started
    result = store.write_checkpoint(
        session_id,
        pods,
        variables=variables,
        skipped=skipped,
        modules=captured.modules,
        plan=planned.to_pb(),
        history=pb.History(cells=planned.cells),
        environment=environment(captured, user_ns),
        message=message,
        labels=_labels(user_ns),
        progress=progress,
    )
    observe(store, written=result.raw_bytes, seconds=result.seconds)
    autosave.checkpoint_written(store.url, session_id)
    sizes = {}
    for pod in result.manifest.pods:
        buffers = [pod.header, *pod.buffers]
        sizes[pod.id] = (
            pod,
            sum(b.size for b in buffers),
            sum(c.stored_size for b in buffers for c in b.chunks),
        )
    stored = []
    for name, ref in variables.items():
        if ref.pod_id not in sizes:
            continue
        pod, raw, stored_bytes = sizes[ref.pod_id]
        stored.append(
            {
                "name": name,
                "type": ref.type_name,
                "pod": ref.pod_id,
                "serializer": pod.serializer,
                "raw_bytes": raw,
                "stored_bytes": stored_bytes,
                "shared_with": [n for n in pod.variables if n != name],
            }
        )
    report = planned.report()
    return {
        "checkpoint_id": result.checkpoint_id,
        "session_id": session_id,
        "store": store.url,
        "parent_checkpoint_id": result.parent_checkpoint_id or None,
        "stored": stored,
        "recomputed": sorted(recomputed),
        "rerun_cells": report["rerun_cells"],
        "skipped": [{"name": s.name, "type": s.type_name, "reason": s.reason} for s in skipped],
        "modules": [
            {"name": m.name, "module": m.module, "version": m.version} for m in captured.modules
        ],
        "notes": captured.notes + module_state_notes(planned.cells, report["rerun_cells"]),
        "plan": report,
        "raw_bytes": result.raw_bytes,
        "stored_bytes": result.stored_bytes,
        "bytes_uploaded": result.uploaded_bytes,
        "seconds": round(time.perf_counter() - started, 4),
        "capture_seconds": round(blocked, 4),
    }
