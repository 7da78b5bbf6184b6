"""Checkpoint many kernels at once, within one deadline: before a server stops or a pod dies.

Used by `nbferry checkpoint --all` (a Kubernetes preStop hook) and by the
jupyter_server extension when the server stops. Every kernel is saved in
parallel through its agent; a value nothing can save is listed as lost rather
than failing that kernel's checkpoint, because at shutdown a partial save beats
none. The result says, per kernel, what was saved and what was not, and why.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from nbferry.migrator.agents import AgentClient, AgentInfo, result_of
from nbferry.v1 import agent_pb2 as apb


def checkpoint_all(
    agents: Sequence[AgentInfo],
    *,
    deadline: float,
    message: str = "",
    interrupt: bool = False,
    store_url: str = "",
    store_options: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One entry per agent: kernel_id, saved, seconds, and the checkpoint, the error, or
    why it was skipped (a kernel nothing ran in is not checkpointed)."""
    started = time.monotonic()

    def save(info: AgentInfo) -> dict[str, Any]:
        entry: dict[str, Any] = {"kernel_id": info.kernel_id, "saved": False}
        request = apb.CheckpointRequest(
            options=apb.PlanOptions(
                store_url=store_url, store_options=list(store_options), restore_weight=1.0
            ),
            message=message,
            allow_loss=True,
            interrupt=interrupt,
        )
        try:
            with AgentClient(info.address, info.token) as agent:
                left = max(0.1, deadline - (time.monotonic() - started))
                described = agent.describe(timeout=min(10.0, left))
                if not described.history_length and not described.variables:
                    # A kernel nothing ran in (a spare, a notebook opened but not used):
                    # its checkpoint would only hide the session's real latest one.
                    entry["skipped"] = "nothing ran in this kernel"
                    entry["seconds"] = round(time.monotonic() - started, 3)
                    return entry
                left = max(0.1, deadline - (time.monotonic() - started))
                result = result_of(agent.checkpoint(request, timeout=left))
            report = json.loads(result.report_json)
            entry.update(
                saved=True,
                checkpoint_id=report.get("checkpoint_id"),
                session_id=report.get("session_id"),
                bytes_uploaded=report.get("bytes_uploaded", 0),
                lost=[item["name"] for item in report.get("skipped", [])],
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                entry["error"] = f"not finished within the {deadline:g} s deadline"
            elif code == grpc.StatusCode.UNAVAILABLE and "busy" not in (exc.details() or ""):
                entry["error"] = f"agent unreachable ({exc.details()}); is the kernel still alive?"
            else:
                entry["error"] = f"{code.name}: {exc.details()}"
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["seconds"] = round(time.monotonic() - started, 3)
        return entry

    if not agents:
        return []
    with ThreadPoolExecutor(len(agents), thread_name_prefix="nbferry-save") as pool:
        return list(pool.map(save, agents))


def all_saved(results: Sequence[dict[str, Any]]) -> bool:
    """Every kernel saved, or skipped for having nothing to save."""
    return all(r["saved"] or r.get("skipped") for r in results)


def summary(results: Sequence[dict[str, Any]]) -> str:
    """One line per kernel, for logs and the terminal."""
    lines = []
    for r in results:
        if r.get("skipped"):
            lines.append(f"skipped kernel {r['kernel_id']}: {r['skipped']}")
        elif r["saved"]:
            lost = f"; lost {', '.join(r['lost'])}" if r.get("lost") else ""
            lines.append(
                f"saved   kernel {r['kernel_id']}: {r['checkpoint_id']} "
                f"(session {r['session_id']}, {r['seconds']:.1f} s{lost})"
            )
        else:
            lines.append(f"NOT SAVED kernel {r['kernel_id']}: {r['error']}")
    saved = sum(1 for r in results if r["saved"])
    skipped = sum(1 for r in results if r.get("skipped"))
    lines.append(
        f"{saved} of {len(results) - skipped} kernels saved"
        + (f" ({skipped} with nothing to save skipped)" if skipped else "")
    )
    return "\n".join(lines)
