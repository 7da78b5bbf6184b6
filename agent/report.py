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
    for f in r["failed"]:
        lines.append(f"  FAILED {f['name']}: {f['reason']}")
    for s in r["skipped_at_checkpoint"]:
        lines.append(f"  not in checkpoint: {s['name']} ({s['type']}): {s['reason']}")
    for w in r["warnings"]:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)
