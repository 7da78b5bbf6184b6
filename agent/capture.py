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
from dataclasses import dataclass, field
from typing import Any

from nbferry.agent import pickling
from nbferry.agent.covariables import group
from nbferry.agent.fingerprint import fingerprint
from nbferry.agent.namespace import distribution_of, is_module, user_variables
from nbferry.agent.pickling import STATE_POD
from nbferry.storage import PodData, Store
from nbferry.v1 import manifest_pb2 as pb


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


def capture_namespace(user_ns: dict[str, Any], hidden: dict[str, Any] | None = None) -> Captured:
    """Turn the user's variables into pods, module bindings and skip reasons."""
    out = Captured()
    names = user_variables(user_ns, hidden)
    data: dict[str, Any] = {}
    definitions: dict[int, str] = {}
    for name, value in names.items():
        if is_module(value):
            dist, version = distribution_of(value.__name__)
            out.modules.append(
                pb.ModuleBinding(
                    name=name, module=value.__name__, distribution=dist, version=version
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
    single: dict[str, pickling.Encoded] = {}
    for name, value in values.items():
        try:
            single[name] = pickling.encode({name: value}, definitions, views, _has_def([value]))
        except Exception as exc:
            out.skipped.append(_skip(name, value, exc))
    groups = group({n: e.reached.keys() for n, e in single.items()})
    # Pods with definitions first: other pods refer to definitions by name.
    groups.sort(key=lambda members: not _has_def([values[n] for n in members]))
    for members in groups:
        if len(members) == 1:
            _add_pod(
                out,
                f"p{len(out.pods)}",
                {members[0]: values[members[0]]},
                single[members[0]],
                single,
            )
            continue
        together = {n: values[n] for n in members}
        try:
            enc = pickling.encode(together, definitions, views, _has_def(together.values()))
        except Exception as exc:  # keep the values, lose only the aliasing
            out.notes.append(
                f"{', '.join(members)} share objects but could not be stored together "
                f"({type(exc).__name__}: {exc}); each was stored alone, so they no longer share"
            )
            for n in members:
                _add_pod(out, f"p{len(out.pods)}", {n: values[n]}, single[n], single)
            continue
        _add_pod(out, f"p{len(out.pods)}", together, enc, single)
    out.pods.append(_state_pod())
    return out


def _has_def(values: Any) -> bool:
    """Whether a pod stores notebook definitions (by value, with cloudpickle)."""
    return any(pickling.is_definition(v) for v in values)


def _add_pod(
    out: Captured,
    pod_id: str,
    values: dict[str, Any],
    enc: pickling.Encoded,
    single: dict[str, pickling.Encoded],
) -> None:
    out.pods.append(PodData(pod_id, enc.header, enc.buffers, list(values), enc.serializer))
    for name, value in values.items():
        try:
            digest = fingerprint(value)
        except Exception:  # stored by cloudpickle/dill: hash what was stored instead
            digest = single[name].digest()
        out.variables[name] = pb.VariableRef(
            pod_id=pod_id, type_name=type_name(value), fingerprint=digest
        )


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


def history(shell: Any) -> pb.History:
    """The cells run so far, as IPython recorded them (after transformation)."""
    hist = pb.History()
    inputs = list(getattr(shell, "user_ns", {}).get("In", []))
    for index, source in enumerate(inputs):
        if index == 0 or not source:
            continue
        hist.cells.add(index=len(hist.cells), execution_count=index, source=source)
    return hist


def checkpoint(
    shell: Any,
    store: Store,
    session_id: str,
    message: str = "",
    progress: Any = None,
) -> dict[str, Any]:
    """Capture the shell's namespace and write a checkpoint; returns the report."""
    started = time.perf_counter()
    user_ns = shell.user_ns
    captured = capture_namespace(user_ns, getattr(shell, "user_ns_hidden", None))
    blocked = time.perf_counter() - started
    result = store.write_checkpoint(
        session_id,
        captured.pods,
        variables=captured.variables,
        skipped=captured.skipped,
        modules=captured.modules,
        history=history(shell),
        environment=environment(captured, user_ns),
        message=message,
        progress=progress,
    )
    sizes = {}
    for pod in result.manifest.pods:
        buffers = [pod.header, *pod.buffers]
        sizes[pod.id] = (
            pod,
            sum(b.size for b in buffers),
            sum(c.stored_size for b in buffers for c in b.chunks),
        )
    stored = []
    for name, ref in captured.variables.items():
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
    return {
        "checkpoint_id": result.checkpoint_id,
        "session_id": session_id,
        "store": store.url,
        "parent_checkpoint_id": result.parent_checkpoint_id or None,
        "stored": stored,
        "skipped": [
            {"name": s.name, "type": s.type_name, "reason": s.reason} for s in captured.skipped
        ],
        "modules": [
            {"name": m.name, "module": m.module, "version": m.version} for m in captured.modules
        ],
        "notes": captured.notes,
        "raw_bytes": result.raw_bytes,
        "stored_bytes": result.stored_bytes,
        "bytes_uploaded": result.uploaded_bytes,
        "seconds": round(time.perf_counter() - started, 4),
        "capture_seconds": round(blocked, 4),
    }
