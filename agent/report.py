"""Reports the magics print, and return as dicts for programs."""

from __future__ import annotations

from typing import Any


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB'. Shared by the magics and the CLI (migrator imports it)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Report(dict):
    """A plain dict (r["checkpoint_id"]) that displays as one line, not a wall of data."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        keys = ", ".join(self)
        printer.text(f"<nbferry report for {self.get('checkpoint_id', '?')}; keys: {keys}>")


def render_checkpoint(r: dict[str, Any]) -> str:
    lines = [
        f"checkpoint {r['checkpoint_id']} of session {r['session_id']} in {r['store']}",
        f"  stored {len(r['stored'])} variables: {human_size(r['raw_bytes'])} raw, "
        f"{human_size(r['stored_bytes'])} stored, {human_size(r['bytes_uploaded'])} uploaded "
        f"in {r['seconds']:.2f} s",
    ]
    if r.get("recomputed"):
        cells = ", ".join(f"In[{n}]" for n in r["rerun_cells"])
        lines.append(
            f"  recomputed on restore ({len(r['recomputed'])}): {', '.join(r['recomputed'])} "
            f"by rerunning {cells}"
        )
    for v in r["stored"]:
        shared = f" (with {', '.join(v['shared_with'])})" if v["shared_with"] else ""
        lines.append(
            f"    {v['name']:<20} {v['type']:<32} {human_size(v['raw_bytes']):>10}{shared}"
        )
    if r["modules"]:
        lines.append("  modules: " + ", ".join(f"{m['name']}={m['module']}" for m in r["modules"]))
    for s in r["skipped"]:
        lines.append(f"  skipped {s['name']} ({s['type']}): {s['reason']}")
    for note in r["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def render_restore(r: dict[str, Any]) -> str:
    lines = [
        f"restored {r['checkpoint_id']} of session {r['session_id']} from {r['store']} "
        f"in {r['seconds']:.2f} s",
        f"  loaded {len(r['loaded'])}: {', '.join(r['loaded']) or '-'}",
    ]
    if r.get("rerun_cells"):
        cells = ", ".join(f"In[{n}]" for n in r["rerun_cells"])
        lines.append(
            f"  recomputed and verified {len(r['recomputed'])}: {', '.join(r['recomputed']) or '-'}"
            f" (reran {cells} in {r['rerun_seconds']:.2f} s)"
        )
    for name in r.get("differs", []):
        lines.append(f"  DIFFERS {name}: recomputed, but not equal to the checkpointed value")
    for f in r["failed"]:
        lines.append(f"  pod failed to load: {f['name']}: {f['reason']}")
    for item in r.get("lost", []):
        lines.append(f"  LOST {item['name']}: {item['reason']}")
    for w in r["warnings"]:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def render_plan(r: dict[str, Any]) -> str:
    cells = ", ".join(f"In[{n}]" for n in r["rerun_cells"]) or "none"
    lines = [
        f"store ({len(r['store'])}): {', '.join(r['store']) or '-'}",
        f"recompute ({len(r['recompute'])}): {', '.join(r['recompute']) or '-'}",
        f"rerun cells: {cells}",
        f"predicted: checkpoint {r['predicted_checkpoint_seconds']:.2f} s, "
        f"restore {r['predicted_restore_seconds']:.2f} s",
    ]
    for name, why in sorted(r["infeasible"].items()):
        lines.append(f"CANNOT RESTORE {name}: {why}")
    if r["infeasible"]:
        lines.append("checkpoint refuses these unless given --allow-loss")
    return "\n".join(lines)
