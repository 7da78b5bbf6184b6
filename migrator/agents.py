"""Find and call the AgentService of local kernels (the client side of agent/service.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from jupyter_core.paths import jupyter_runtime_dir

from nbferry.agent.grpcauth import bearer
from nbferry.agent.service import DISCOVERY_SUFFIX, discovery_file
from nbferry.migrator.errors import KernelError
from nbferry.v1 import agent_pb2 as apb
from nbferry.v1 import agent_pb2_grpc


@dataclass(frozen=True)
class AgentInfo:
    kernel_id: str
    address: str
    token: str
    pid: int
    connection_file: str


def read_discovery(path: Path) -> AgentInfo:
    """An agent's discovery file; OSError, ValueError or KeyError when missing or foreign."""
    info = json.loads(path.read_text())
    return AgentInfo(
        info["kernel_id"], info["address"], info["token"], int(info["pid"]), info["connection_file"]
    )


def agent_of(connection_file: str | Path) -> AgentInfo | None:
    """The agent of the kernel with this connection file; None when it runs none."""
    try:
        return read_discovery(discovery_file(connection_file))
    except (OSError, ValueError, KeyError):
        return None


def running_agents(runtime_dir: str | Path | None = None) -> list[AgentInfo]:
    """Kernels in the Jupyter runtime folder whose agent wrote a discovery file."""
    runtime = Path(runtime_dir or jupyter_runtime_dir())
    out = []
    for path in sorted(runtime.glob(f"kernel-*{DISCOVERY_SUFFIX}")):
        try:
            info = read_discovery(path)
        except (OSError, ValueError, KeyError):
            continue  # half-written or foreign: skip
        if _alive(info.pid):  # a killed kernel's file stays behind (no exit handlers ran)
            out.append(info)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def find_agent(ref: str) -> AgentInfo:
    """The agent of the kernel named by id, unique id prefix, or connection file."""
    from nbferry.migrator.kernels import find_connection_file

    connection = find_connection_file(ref)
    info = agent_of(connection)
    if info is None:
        raise KernelError(
            f"kernel {ref} runs no nbferry agent ({discovery_file(connection)} is missing): "
            "load it there with %load_ext nbferry.agent, or run `nbferry install` for new kernels"
        )
    return info


class AgentClient:
    """Calls one kernel's AgentService with its token."""

    def __init__(self, address: str, token: str) -> None:
        self.channel = grpc.insecure_channel(address)  # a Unix socket or loopback only
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.metadata = bearer(token)

    @classmethod
    def for_kernel(cls, ref: str) -> AgentClient:
        info = find_agent(ref)
        return cls(info.address, info.token)

    def describe(self, timeout: float = 10) -> apb.DescribeResponse:
        return self.stub.Describe(apb.DescribeRequest(), metadata=self.metadata, timeout=timeout)

    def plan(self, request: apb.PlanRequest, timeout: float | None = None) -> apb.PlanResponse:
        return self.stub.Plan(request, metadata=self.metadata, timeout=timeout)

    def checkpoint(
        self, request: apb.CheckpointRequest, timeout: float | None = None
    ) -> Iterator[apb.CheckpointResponse]:
        return self.stub.Checkpoint(request, metadata=self.metadata, timeout=timeout)

    def restore(
        self, request: apb.RestoreRequest, timeout: float | None = None
    ) -> Iterator[apb.RestoreResponse]:
        return self.stub.Restore(request, metadata=self.metadata, timeout=timeout)

    def cancel(self, operation_id: str) -> bool:
        reply = self.stub.Cancel(
            apb.CancelRequest(operation_id=operation_id), metadata=self.metadata, timeout=10
        )
        return reply.cancelled

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def result_of(stream: Iterator[Any], on_progress: Any = None) -> Any:
    """Drain a progress stream; return its result message."""
    result = None
    for event in stream:
        which = event.WhichOneof("event")
        if which == "progress":
            if on_progress is not None:
                on_progress(event.progress)
        else:
            result = getattr(event, which)
    if result is None:
        raise KernelError("the agent ended the call without a result")
    return result
