"""Summaries of checkpoints for people and scripts (pure: manifests in, dicts and text out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nbferry.agent.report import human_size
from nbferry.v1 import manifest_pb2 as pb

__all__ = ["checkpoint_summary", "human_size", "render_show", "table"]

_CODECS = {pb.CODEC_RAW: "raw", pb.CODEC_ZSTD: "zstd", pb.CODEC_UNSPECIFIED: "shared"}


def _buffers(pod: pb.Pod) -> list[pb.Buffer]:
    return [pod.header, *pod.buffers]


def pod_summary(pod: pb.Pod) -> dict[str, Any]:
    chunks = [ref for buf in _buffers(pod) for ref in buf.chunks]
    codecs: dict[str, int] = {}
    for ref in chunks:
        name = _CODECS.get(ref.codec, str(ref.codec))
        codecs[name] = codecs.get(name, 0) + 1
    return {
        "pod_id": pod.id,
        "variables": list(pod.variables),
        "serializer": pod.serializer,
        "raw_bytes": sum(buf.size for buf in _buffers(pod)),
        "stored_bytes": sum(ref.stored_size for ref in chunks),
        "chunks": len(chunks),
        "buffers": len(pod.buffers),
        "codecs": codecs,
    }


def checkpoint_summary(manifest: pb.Manifest) -> dict[str, Any]:
    """Everything `nbferry show` prints, as JSON-ready data."""
    pods = [pod_summary(p) for p in manifest.pods]
    stats = manifest.stats
    return {
        "checkpoint_id": manifest.checkpoint_id,
        "session_id": manifest.session_id,
        "parent_checkpoint_id": manifest.parent_checkpoint_id or None,
        "created": manifest.created.ToDatetime().isoformat() + "Z",
        "message": manifest.message,
        "labels": dict(manifest.labels),
        "producer": {
            "nbferry_version": manifest.producer.nbferry_version,
            "python_version": manifest.producer.python_version,
            "platform": manifest.producer.platform,
            "hostname": manifest.producer.hostname,
        },
        "format_version": manifest.format_version,
        "variables": {
            name: {"pod_id": ref.pod_id, "type": ref.type_name}
            for name, ref in sorted(manifest.variables.items())
        },
        "skipped": [
            {"name": s.name, "type": s.type_name, "reason": s.reason} for s in manifest.skipped
        ],
        "pods": pods,
        "raw_bytes": stats.raw_bytes,
        "stored_bytes": stats.stored_bytes,
        "uploaded_bytes": stats.uploaded_bytes,
        "shared_raw_bytes": stats.reused_raw_bytes,
        "chunks": stats.chunks,
        "chunks_uploaded": stats.chunks_uploaded,
        "chunks_shared": stats.chunks - stats.chunks_uploaded,
        "write_seconds": round(stats.seconds, 3),
    }


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Plain left-aligned columns (numbers right-aligned)."""
    cells = [list(header), *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            numeric = cell[:1].isdigit() and row is not cells[0]
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join(fmt(r) for r in cells)


def render_show(summary: dict[str, Any], signature: str) -> str:
    s = summary
    lines = [
        f"checkpoint  {s['checkpoint_id']}",
        f"session     {s['session_id']}",
        f"parent      {s['parent_checkpoint_id'] or '-'}",
        f"created     {s['created']}",
        f"producer    nbferry {s['producer']['nbferry_version']}, Python "
        f"{s['producer']['python_version']}, {s['producer']['platform']}, "
        f"host {s['producer']['hostname']}",
        f"signature   {signature}",
    ]
    if s["message"]:
        lines.append(f"message     {s['message']}")
    lines += [
        "",
        table(
            [
                (
                    p["pod_id"],
                    ", ".join(p["variables"]) or "-",
                    p["serializer"],
                    human_size(p["raw_bytes"]),
                    human_size(p["stored_bytes"]),
                    str(p["chunks"]),
                    " ".join(f"{k}:{v}" for k, v in sorted(p["codecs"].items())),
                )
                for p in s["pods"]
            ],
            ("POD", "VARIABLES", "SERIALIZER", "RAW", "STORED", "CHUNKS", "CODECS"),
        ),
        "",
        f"total       {human_size(s['raw_bytes'])} raw, {human_size(s['stored_bytes'])} stored "
        f"in {s['chunks']} unique chunks",
        f"new         {human_size(s['uploaded_bytes'])} uploaded in {s['chunks_uploaded']} chunks "
        f"({s['write_seconds']:.2f} s)",
        f"shared      {human_size(s['shared_raw_bytes'])} raw in {s['chunks_shared']} chunks "
        "already in the store (earlier checkpoints)",
    ]
    for item in s["skipped"]:
        lines.append(f"skipped     {item['name']} ({item['type']}): {item['reason']}")
    return "\n".join(lines)
