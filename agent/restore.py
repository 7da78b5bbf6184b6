"""Restore a checkpoint into a kernel's namespace.

Order matters: modules are imported first, then notebook definitions (other
pods refer to them by name), then data, then random states. Before anything
is loaded the manifest's signature is verified and every module it needs is
checked, so a target that lacks a package fails cleanly and changes nothing.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import platform
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbferry.agent import caretaker, pickling
from nbferry.agent.pickling import STATE_POD
from nbferry.agent.rerun import module_state_notes, recompute
from nbferry.storage import CorruptCheckpointError, Store, StoreError, nbferry_version
from nbferry.v1 import manifest_pb2 as pb


class RestoreError(StoreError):
    """The checkpoint cannot be restored here; nothing was changed."""


def preflight(manifest: pb.Manifest) -> list[str]:
    """Raise RestoreError for missing modules; return warnings worth showing."""
    missing = []
    for binding in manifest.modules:
        if not _findable(binding.module.split(".")[0], manifest.environment):
            package = binding.distribution or binding.module.split(".")[0]
            pin = f"=={binding.version}" if binding.version else ""
            missing.append(
                f"module {binding.module!r} (bound to {binding.name!r}; "
                f"{package} {binding.version or '?'} on the source): pip install {package}{pin}"
            )
    if missing:
        raise RestoreError(
            f"checkpoint {manifest.checkpoint_id} needs modules this kernel cannot import; "
            "nothing was restored:\n  " + "\n  ".join(missing)
        )
    warnings = []
    source, here = manifest.producer.python_version, platform.python_version()
    if source and source.split(".")[:2] != here.split(".")[:2]:
        warnings.append(
            f"checkpoint written by Python {source}, restoring into Python {here}: "
            "pickles usually load, but compiled notebook functions may not"
        )
    return warnings


def restore(
    shell: Any,
    store: Store,
    checkpoint: str,
    session_id: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Load a checkpoint (id, unique prefix or 'latest') into the shell; returns the report."""
    started = time.perf_counter()
    ref = store.resolve(checkpoint, session_id)
    manifest = store.read_manifest(ref)  # verifies the signature
    warnings = preflight(manifest)
    warnings += _restore_environment(manifest.environment)  # reruns may open relative paths
    user_ns = shell.user_ns
    loaded: list[str] = []
    failed: list[dict[str, str]] = []

    # Fetch while the modules import: reading mostly waits on I/O, hashing and
    # zstd, all of which release the GIL.
    with ThreadPoolExecutor(1) as fetcher:
        pending_pods = fetcher.submit(_read_pods, store, manifest, progress)
        for binding in manifest.modules:
            user_ns[binding.name] = importlib.import_module(binding.module)
            loaded.append(binding.name)
            for sub in binding.submodules:
                try:
                    importlib.import_module(sub)
                except Exception as exc:  # the binding itself works; say what is missing
                    warnings.append(
                        f"{binding.name}: submodule {sub} was imported on the source but "
                        f"cannot be here ({type(exc).__name__}: {exc})"
                    )
        pods, unreadable = pending_pods.result()
    by_id = {p.id: p for p in manifest.pods}
    for pid, exc in unreadable.items():
        _fail(failed, by_id[pid], exc)
        if pid == STATE_POD:
            warnings.append(f"random generator states were not restored: {exc}")
    values: dict[str, Any] = {}
    pending = [pid for pid in by_id if pid != STATE_POD and pid in pods]
    # Definitions may refer to each other (a subclass to its base): retry in passes.
    for _ in range(len(pending) + 1):
        deferred = []
        for pid in pending:
            pod = pods[pid]
            try:
                decoded = pickling.decode(pod.header, pod.buffers, pod.serializer)
            except NameError as exc:
                if "is not restored yet" in str(exc):
                    deferred.append(pid)
                    continue
                _fail(failed, by_id[pid], exc)
                continue
            except Exception as exc:
                _fail(failed, by_id[pid], exc, manifest.producer.nbferry_version)
                continue
            user_ns.update(decoded)
            values.update(decoded)
            loaded.extend(decoded)
        if not deferred or len(deferred) == len(pending):
            for pid in deferred:
                _fail(failed, by_id[pid], NameError("a definition it needs was not restored"))
            break
        pending = deferred

    modules = {b.name: user_ns[b.name] for b in manifest.modules}
    # sys.path already has the checkpoint's folders: a rerun's sys.path.append of
    # one must not add it twice. Entries only a rerun could add (a zip file, a
    # folder the cell made) stay, after the others.
    path = list(sys.path)
    try:
        outcome = recompute(shell, manifest, values, modules)
    finally:
        sys.path[:] = path + [e for e in dict.fromkeys(sys.path) if e not in path]
    warnings += module_state_notes(manifest.history.cells, outcome.rerun_cells)

    if STATE_POD in pods:  # last: reruns draw from the random generators too
        state = pickling.decode(pods[STATE_POD].header, pods[STATE_POD].buffers, "pickle")
        random.setstate(state["random"])
        if "numpy" in state:
            import numpy as np

            np.random.set_state(state["numpy"])

    _restore_history(shell, manifest.history)
    from nbferry.agent.recorder import recorder_of

    # So the next checkpoint can recompute too, or at least knows what came from here.
    recorder_of(shell).adopt(
        manifest.history, loaded + outcome.recomputed + outcome.differs, manifest.checkpoint_id
    )
    caretaker.restored()  # a kernel started for a restore holds a session now: keep it
    lost = outcome.lost + [
        {"name": s.name, "reason": f"not saved at checkpoint: {s.reason}"} for s in manifest.skipped
    ]
    return {
        "checkpoint_id": manifest.checkpoint_id,
        "session_id": manifest.session_id,
        "store": store.url,
        "loaded": loaded,
        "recomputed": outcome.recomputed,
        "differs": outcome.differs,
        "lost": lost,
        "failed": failed,
        "rerun_cells": outcome.rerun_cells,
        "rerun_seconds": round(outcome.seconds, 4),
        "skipped_at_checkpoint": [
            {"name": s.name, "type": s.type_name, "reason": s.reason} for s in manifest.skipped
        ],
        "warnings": warnings + outcome.warnings,
        "seconds": round(time.perf_counter() - started, 4),
    }


def _read_pods(
    store: Store, manifest: pb.Manifest, progress: Any
) -> tuple[dict[str, Any], dict[str, Exception]]:
    """All pods that read back intact, and why each other one did not.

    A damaged chunk fails only the pods that use it; their variables are then
    recomputed when their cells are safe to rerun.
    """
    started = time.perf_counter()
    try:
        pods = store.read_pods(manifest, progress=progress)
    except CorruptCheckpointError:
        pass
    else:
        from nbferry.storage.speed import observe

        size = sum(b.size for p in manifest.pods for b in [p.header, *p.buffers])
        observe(store, read=size, seconds=time.perf_counter() - started)
        return pods, {}
    pods: dict[str, Any] = {}
    errors: dict[str, Exception] = {}
    for pod in manifest.pods:
        try:
            pods.update(store.read_pods(manifest, pod_ids=[pod.id]))
        except CorruptCheckpointError as exc:
            errors[pod.id] = exc
    return pods, errors


def _fail(failed: list[dict[str, str]], pod: pb.Pod, exc: Exception, writer: str = "") -> None:
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        reason += f" (install {exc.name.split('.')[0]} in this kernel's environment)"
    elif isinstance(exc, AttributeError) and "nbferry.agent.pickling" in str(exc):
        # A pod refers to a load helper this (older) nbferry does not have.
        reason += (
            f" (written by nbferry {writer or 'of another version'}; this kernel has "
            f"{nbferry_version()}: install the writer's version or newer here)"
        )
    for name in pod.variables:
        failed.append({"name": name, "reason": reason})


def _findable(top: str, env: pb.Environment) -> bool:
    """Importable here, or once the restore has moved to the source's working
    directory and added its sys.path entries (a module next to the notebook)."""
    if importlib.util.find_spec(top) is not None:
        return True
    extra = [p for p in (env.cwd, *env.sys_path) if p and os.path.isdir(p)]
    return bool(extra) and importlib.machinery.PathFinder.find_spec(top, extra) is not None


def _restore_environment(env: pb.Environment) -> list[str]:
    warnings = []
    if env.cwd and env.cwd != os.getcwd():
        if os.path.isdir(env.cwd):
            os.chdir(env.cwd)
        else:
            warnings.append(
                f"working directory {env.cwd} does not exist here; staying in {os.getcwd()}"
            )
    for entry in reversed(list(env.sys_path)):
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.insert(0, entry)
    return warnings


def _restore_history(shell: Any, history: pb.History) -> None:
    """Put the source's inputs into In when this kernel has run nothing of its own.

    "Nothing of its own" means only blank cells and cells that load or call
    the agent, so the restored history reads as the notebook's.
    """
    hm = getattr(shell, "history_manager", None)
    if hm is None or not history.cells:
        return
    if any(cell.strip() and "nbferry" not in cell for cell in hm.input_hist_parsed[1:]):
        return
    # A cell run with store_history=True is already in the lists at execution_count.
    current = shell.execution_count == len(hm.input_hist_parsed) - 1
    tail_parsed = hm.input_hist_parsed[-1:] if current else []
    tail_raw = hm.input_hist_raw[-1:] if current else []
    sources = [""] + [c.source for c in history.cells]
    hm.input_hist_parsed[:] = sources + tail_parsed
    hm.input_hist_raw[:] = sources + tail_raw
    shell.execution_count = len(hm.input_hist_parsed) - len(tail_parsed)
