"""Recompute on restore: rerun the planned cells in order, then check what they made.

The plan is made again here from what actually loaded: a variable whose pod
loaded costs nothing, one that was recomputed at checkpoint time or whose pod
failed to load must come from its cells, and a cell is safe only when every
file it read is on this host, unchanged. So a damaged pod falls back to
recomputation whenever its cells are safe to rerun.

Loaded values go back in at the right points: a rerun cell that wrote a
loaded name (an older version) is followed by the loaded value once the
replay passes the cell that made the final version. Afterwards every
recomputed variable's fingerprint is compared with the one recorded at
checkpoint time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from nbferry.agent import planner, planning
from nbferry.agent.fingerprint import fingerprint
from nbferry.v1 import manifest_pb2 as pb


@dataclass
class Outcome:
    recomputed: list[str] = field(default_factory=list)  # rerun and verified equal
    differs: list[str] = field(default_factory=list)  # rerun, but not what the source had
    lost: list[dict[str, str]] = field(default_factory=list)  # {"name", "reason"}
    rerun_cells: list[int] = field(default_factory=list)  # execution counts, as In[n]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def plan_here(manifest: pb.Manifest, loaded: set[str]) -> planner.Plan:
    """Which cells to rerun on this host for the variables that did not load."""
    skipped = {s.name for s in manifest.skipped}
    variables = [
        planner.Variable(name, 0.0 if name in loaded else planner.INF)
        for name in manifest.variables
        if name not in skipped
    ]
    checked: dict[str, str] = {}

    def file_problem(effect: pb.SideEffect) -> str:
        if effect.target not in checked:
            checked[effect.target] = planning.file_problem_here(effect)
        return checked[effect.target]

    cells = planning.cells_for_plan(
        manifest.history, inputs_on_target=True, file_problem=file_problem
    )
    return planner.plan(cells, variables)


def recompute(shell: Any, manifest: pb.Manifest, values: dict[str, Any]) -> Outcome:
    """Rerun what the values loaded into `shell` do not cover; verify and report."""
    out = Outcome()
    missing = [n for n in manifest.variables if n not in values]
    if not missing:
        return out
    started = time.perf_counter()
    plan = plan_here(manifest, set(values))
    for name, why in sorted(plan.infeasible.items()):
        out.lost.append({"name": name, "reason": why})
    keep = set(manifest.variables) | {m.name for m in manifest.modules}
    errors = _replay(shell, manifest.history, plan.rerun_cells, values, keep)
    out.rerun_cells = [manifest.history.cells[i].execution_count for i in plan.rerun_cells]
    ns = shell.user_ns
    for name in plan.recompute:
        if name not in ns:
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


def _replay(
    shell: Any, history: pb.History, indexes: list[int], values: dict[str, Any], keep: set[str]
) -> list[str]:
    """Run the cells at `indexes` in order with output hidden; one line per cell that raised."""
    from IPython.utils.capture import capture_output

    ns = shell.user_ns
    cells = [history.cells[i] for i in indexes]
    last: dict[str, int] = {}  # name -> index of the history's last writer (the final version)
    for cell in history.cells:
        for name in [*cell.writes, *cell.deletes]:
            last[name] = cell.index
    before = set(ns)
    figures = _figures()
    clobbered: set[str] = set()
    errors = []
    with capture_output(display=True):
        for cell in cells:
            for name in [n for n in clobbered if last.get(n, -1) < cell.index]:
                ns[name] = values[name]  # the loaded final version, now that it is due
                clobbered.discard(name)
            try:
                code = compile(cell.source, f"<nbferry rerun In[{cell.execution_count}]>", "exec")
                exec(code, ns)
            except Exception as exc:
                errors.append(f"In[{cell.execution_count}] raised {type(exc).__name__}: {exc}")
            clobbered |= {n for n in [*cell.writes, *cell.deletes] if n in values}
    for name in clobbered:
        ns[name] = values[name]
    for name in set(ns) - before - keep:  # temporaries the session no longer had
        if not name.startswith("_"):
            del ns[name]
    _close_new_figures(figures)
    return errors


def _figures() -> set[int]:
    plt = sys.modules.get("matplotlib.pyplot")
    return set(plt.get_fignums()) if plt is not None else set()


def _close_new_figures(before: set[int]) -> None:
    """Figures a rerun drew would otherwise show up under the restoring cell."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
