"""Reports the magics print, and return as dicts for programs."""

from __future__ import annotations

from typing import Any


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Report(dict):
    """A plain dict (r["checkpoint_id"]) that displays as one line, not a wall of data."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        keys = ", ".join(self)
        printer.text(f"<nbferry report for {self.get('checkpoint_id', '?')}; keys: {keys}>")


def render_checkpoint(r: dict[str, Any]) -> str:
    lines = [
        f"checkpoint {r['checkpoint_id']} of session {r['session_id']} in {r['store']}",
        f"  stored {len(r['stored'])} variables: {_size(r['raw_bytes'])} raw, "
        f"{_size(r['stored_bytes'])} stored, {_size(r['bytes_uploaded'])} uploaded "
        f"in {r['seconds']:.2f} s",
    ]
    for v in r["stored"]:
        shared = f" (with {', '.join(v['shared_with'])})" if v["shared_with"] else ""
        lines.append(f"    {v['name']:<20} {v['type']:<32} {_size(v['raw_bytes']):>10}{shared}")
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
