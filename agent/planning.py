"""Turn a session's facts (manifest types) into planner inputs, and the plan back into facts.

Pure like the planner: no IPython, no store I/O, so `nbferry plan CHECKPOINT`
can run it on any host from a manifest. The cost model, in seconds:

- storing a co-variable group costs its upload (size over the store's write
  bandwidth plus request latency) plus `restore_weight` times its load
  (download plus unpickling, estimated by the time pickling took); a group
  whose every member has the pod digest the parent checkpoint stored costs
  no upload (its chunks are already in the store);
- recomputing a value costs `restore_weight` times the runtime of the cells
  rerun, plus verifying its fingerprint afterwards. Since every value is
  either stored or recomputed, the verification is charged as a discount on
  storing (never below zero), which keeps the cut a cut.

Pickling every value at checkpoint time is paid either way (it finds the
co-variables and the sizes), so it is not part of the choice; it is part of
the predicted checkpoint time. Recomputed values are fingerprinted at
checkpoint time too, which the verification estimate covers.

So the cut minimises checkpoint time + restore_weight x restore time: raise
the weight to favour fast restores, lower it to favour fast checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from nbferry.agent import planner
from nbferry.storage.speed import StoreSpeed
from nbferry.v1 import manifest_pb2 as pb

DEFAULT_SPEED = StoreSpeed(
    write_bytes_per_second=200e6, read_bytes_per_second=400e6, latency_seconds=0.01
)


_DEFINITIONS = frozenset({"function", "type", "abc.ABCMeta", "enum.EnumType", "enum.EnumMeta"})


@dataclass
class Planned:
    """A plan with the figures people and programs see."""

    plan: planner.Plan
    cells: list[pb.CellExecution]
    predicted_checkpoint_seconds: float = 0.0
    predicted_restore_seconds: float = 0.0
    restore_weight: float = 1.0
    inputs_on_target: bool = False
    stored_groups: set[str] = field(default_factory=set)

    def to_pb(self) -> pb.Plan:
        msg = pb.Plan(
            stored=self.plan.store,
            recomputed=self.plan.recompute,
            rerun_cells=self.plan.rerun_cells,
            predicted_checkpoint_seconds=self.predicted_checkpoint_seconds,
            predicted_restore_seconds=self.predicted_restore_seconds,
            restore_weight=self.restore_weight,
            inputs_on_target=self.inputs_on_target,
        )
        for name, why in sorted(self.plan.infeasible.items()):
            msg.infeasible.add(name=name, reason=why)
        return msg

    def report(self) -> dict:
        """The dict `%nbferry plan` binds (cells named by execution count, as In[n])."""
        by_index = {c.index: c for c in self.cells}
        return {
            "store": list(self.plan.store),
            "recompute": list(self.plan.recompute),
            "rerun_cells": [by_index[i].execution_count for i in self.plan.rerun_cells],
            "infeasible": dict(self.plan.infeasible),
            "predicted_checkpoint_seconds": round(self.predicted_checkpoint_seconds, 4),
            "predicted_restore_seconds": round(self.predicted_restore_seconds, 4),
            "restore_weight": self.restore_weight,
            "inputs_on_target": self.inputs_on_target,
        }


def stored_digests(manifest: pb.Manifest) -> dict[str, bytes]:
    """Name -> pod digest, for the variables whose pods this checkpoint stored."""
    stored_pods = {p.id for p in manifest.pods}
    return {n: r.digest for n, r in manifest.variables.items() if r.pod_id in stored_pods}


def cells_for_plan(
    history: pb.History,
    *,
    inputs_on_target: bool,
    file_problem: Callable[[pb.SideEffect], str] | None = None,
) -> list[planner.Cell]:
    """History as planner cells, each marked unsafe with the reason when it is.

    At checkpoint time a cell that read files is safe only when the target is
    known to see the same files (`inputs_on_target`); at restore time
    `file_problem` checks each file read on this host ("" when it is there
    and unchanged).
    """
    out = []
    for cell in history.cells:
        why = cell.unsafe
        for effect in cell.side_effects:
            if not why and effect.kind == "external_read" and not inputs_on_target:
                why = (
                    f"it reads data outside Python ({effect.target}) that the target may not "
                    "have (--inputs-on-target says it does)"
                )
            if why or effect.kind != "file_read":
                continue
            if file_problem is not None:
                why = file_problem(effect)
            elif not inputs_on_target:
                why = (
                    f"it reads {effect.target}, which the target may not have "
                    "(--inputs-on-target says it does)"
                )
        out.append(
            planner.Cell(
                index=cell.index,
                runtime=cell.runtime_seconds,
                reads=frozenset(cell.reads),
                writes=frozenset(cell.writes) | frozenset(cell.deletes),
                safe=not why,
                why=why,
                label=f"In[{cell.execution_count}]",
            )
        )
    return out


def file_problem_here(effect: pb.SideEffect) -> str:
    """'' when a file a cell read is on this host with the same content, else why not."""
    from nbferry.agent.recorder import file_digest  # file I/O lives outside the pure path

    path = effect.target
    try:
        st = os.stat(path)
    except OSError:
        return f"it reads {path}, which is missing here"
    if not os.path.isfile(path):
        return f"it reads {path}, which is not a file here"
    if effect.size and st.st_size != effect.size:
        return f"it reads {path}, which has changed here ({st.st_size} bytes, was {effect.size})"
    if effect.blake3:
        try:
            same = file_digest(path) == effect.blake3
        except OSError as exc:
            return f"it reads {path}, which cannot be read here ({exc.strerror or exc})"
        if not same:
            return f"it reads {path}, whose content changed after the cell read it"
    elif effect.HasField("mtime") and st.st_mtime_ns != effect.mtime.ToNanoseconds():
        return f"it reads {path}, which was modified after the cell read it"
    return ""


def variables_for_plan(
    variables: Mapping[str, pb.VariableRef],
    unserializable: Iterable[str],
    speed: StoreSpeed,
    restore_weight: float,
    already_stored: Mapping[str, bytes] | None = None,
) -> tuple[list[planner.Variable], dict[str, tuple[float, float, float]]]:
    """Planner variables and, per group, its (upload, load, verify) seconds.

    `already_stored` maps names to pod digests the store already holds (the
    parent checkpoint's); such groups cost no upload.
    """
    already_stored = already_stored or {}
    unserializable = set(unserializable) | {n for n, r in variables.items() if r.unserializable}
    members: dict[str, list[str]] = {}
    for name, ref in variables.items():
        if name in unserializable:
            continue
        members.setdefault(ref.pod_id or f"~{name}", []).append(name)
    costs: dict[str, tuple[float, float, float]] = {}
    out: list[planner.Variable] = []
    for group, names in members.items():
        refs = [variables[n] for n in names]
        size = sum(r.size for r in refs)
        fresh = any(
            not r.digest or already_stored.get(n) != r.digest
            for n, r in zip(names, refs, strict=True)
        )
        upload = speed.write_seconds(size) if fresh else 0.0
        load = speed.read_seconds(size) + sum(r.encode_seconds for r in refs)
        verify = sum(r.fingerprint_seconds for r in refs)
        costs[group] = (upload, load, verify)
        # A recomputed value is fingerprinted twice: at checkpoint (unweighted)
        # and after its cells rerun (weighted like all restore time).
        cost = max(0.0, upload + restore_weight * load - (1 + restore_weight) * verify)
        if any(r.type_name in _DEFINITIONS for r in refs):
            # Other pods refer to notebook functions and classes by name: always
            # store them, so loaded values find them.
            cost = 0.0
        tie = group if len(names) > 1 else ""
        for i, name in enumerate(sorted(names)):
            out.append(planner.Variable(name, cost if i == 0 else 0.0, tie))
    out += [planner.Variable(name, planner.INF) for name in sorted(unserializable)]
    return out, costs


def plan_restorable(
    cells: list[planner.Cell], variables: list[planner.Variable], speed: float
) -> planner.Plan:
    """planner.plan, plus: a cell that reads a value no restore will bring back is not rerun.

    A value left out (infeasible) is missing on the target, so a cell reading
    it would fail there; mark such cells unsafe and plan again until stable.
    """
    for _ in range(len(cells) + 1):
        result = planner.plan(cells, variables, speed=speed)
        gone = set(result.infeasible)
        changed = False
        for i, cell in enumerate(cells):
            lacking = sorted(gone & cell.reads) if cell.safe else []
            if lacking:
                why = f"it reads {', '.join(lacking)}, which cannot be restored"
                cells[i] = dataclasses.replace(cell, safe=False, why=why)
                changed = True
        if not changed:
            return result
    return result


def file_checker() -> Callable[[pb.SideEffect], str]:
    """file_problem_here, each file checked once per plan (cells re-read the same files)."""
    checked: dict[str, str] = {}

    def problem(effect: pb.SideEffect) -> str:
        if effect.target not in checked:
            checked[effect.target] = file_problem_here(effect)
        return checked[effect.target]

    return problem


def plan_session(
    variables: Mapping[str, pb.VariableRef],
    unserializable: Iterable[str],
    history: pb.History,
    speed: StoreSpeed = DEFAULT_SPEED,
    *,
    restore_weight: float = 1.0,
    inputs_on_target: bool = False,
    store_all: bool = False,
    already_stored: Mapping[str, bytes] | None = None,
    file_problem: Callable[[pb.SideEffect], str] | None = None,
    capture_seconds: float = 0.0,
) -> Planned:
    """Plan a checkpoint: which groups to store, which cells to rerun, predicted times.

    `capture_seconds` (pickling and fingerprinting, already spent) is added to
    the predicted checkpoint time.
    """
    if restore_weight <= 0:
        raise ValueError("restore weight must be positive (1 weighs checkpoint and restore alike)")
    unserializable = list(unserializable)
    cells = cells_for_plan(history, inputs_on_target=inputs_on_target, file_problem=file_problem)
    pv, costs = variables_for_plan(variables, unserializable, speed, restore_weight, already_stored)
    if store_all:
        # Storing everything is a plan with no reruns: unserializable values are lost.
        why = "--store-all reruns no cell"
        cells = [dataclasses.replace(c, safe=False, why=why) for c in cells]
    result = plan_restorable(cells, pv, speed=restore_weight)
    planned = Planned(
        plan=result,
        cells=list(history.cells),
        restore_weight=restore_weight,
        inputs_on_target=inputs_on_target,
    )
    stored = set(result.store)
    runtimes = {c.index: c.runtime_seconds for c in history.cells}
    for name, ref in variables.items():
        group = ref.pod_id or f"~{name}"
        if name in stored and group not in planned.stored_groups:
            planned.stored_groups.add(group)
            upload, load, _ = costs[group]
            planned.predicted_checkpoint_seconds += upload
            planned.predicted_restore_seconds += load
    planned.predicted_restore_seconds += sum(runtimes[i] for i in result.rerun_cells)
    verify = sum(variables[n].fingerprint_seconds for n in result.recompute if n in variables)
    planned.predicted_restore_seconds += verify
    planned.predicted_checkpoint_seconds += capture_seconds + verify
    return planned
