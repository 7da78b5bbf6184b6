"""AgentService: the kernel's gRPC endpoint, started when the extension loads.

Listens on a Unix socket inside a private 0700 folder (the socket itself is
0600), or on loopback TCP when NBFERRY_AGENT_LISTEN=127.0.0.1:PORT. Every
call needs the kernel's random token. Address and token go into a 0600
discovery file next to the kernel's connection file, so only the kernel's
user can find and use it. Work that touches the session runs on the kernel's
main thread between cells (see mainthread.py).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import queue
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from nbferry.agent.grpcauth import TokenAuth
from nbferry.agent.mainthread import Cancelled, KernelBusy, MainThread
from nbferry.v1 import agent_pb2 as apb
from nbferry.v1 import agent_pb2_grpc

DISCOVERY_SUFFIX = ".nbferry.json"
ENV_LISTEN = "NBFERRY_AGENT_LISTEN"
_DONE = object()


def discovery_file(connection_file: str | Path) -> Path:
    """kernel-<id>.json -> kernel-<id>.nbferry.json, in the same folder."""
    path = Path(connection_file)
    return path.with_name(path.stem + DISCOVERY_SUFFIX)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, shell: Any, kernel_id: str) -> None:
        self.shell = shell
        self.kernel_id = kernel_id
        self.main = MainThread(shell)
        self._operations: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------
    def _session(self, session_id: str) -> str:
        from nbferry.agent.session import default_session_id

        return session_id or default_session_id(self.shell.user_ns)

    def _on_main(
        self,
        context: grpc.ServicerContext,
        fn: Callable[[], Any],
        *,
        interrupt: bool = False,
        cancelled: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
        wait: float = 0.0,
    ) -> Any:
        remaining = context.time_remaining()
        timeout = wait or (None if remaining is None else max(0.0, remaining - 0.5))
        try:
            return self.main.call(
                fn, timeout, interrupt=interrupt, cancelled=cancelled, on_wait=on_wait
            )
        except Exception as exc:
            context.abort(*_status(exc))

    def _streamed(
        self,
        context: grpc.ServicerContext,
        operation_id: str,
        interrupt: bool,
        work: Callable[[Callable[[str, int, int], None]], Any],
    ) -> Iterator[tuple[str, Any]]:
        """Run work(progress) on the main thread; yield progress events, then the result."""
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        if operation_id:
            with self._lock:
                self._operations[operation_id] = cancel

        def progress(phase: str, done: int = 0, total: int = 0) -> None:
            if cancel.is_set():
                raise Cancelled("cancelled by the client")
            events.put(("progress", apb.Progress(phase=phase, done_bytes=done, total_bytes=total)))

        def run() -> None:
            try:
                result = self.main.call(
                    lambda: work(progress),
                    _timeout(context),
                    interrupt=interrupt,
                    cancelled=cancel,
                    on_wait=lambda: events.put(("progress", apb.Progress(phase="waiting"))),
                )
                events.put(("result", result))
            except BaseException as exc:
                events.put(("error", exc))
            finally:
                events.put((_DONE, None))

        context.add_callback(cancel.set)  # the client went away: stop uploading
        worker = threading.Thread(target=run, name="nbferry-agent-op", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = events.get()
                if kind is _DONE:
                    return
                if kind == "error":
                    context.abort(*_status(value))
                yield kind, value
        finally:
            if operation_id:
                with self._lock:
                    self._operations.pop(operation_id, None)

    # -- RPCs --------------------------------------------------------------------
    def Describe(self, request: apb.DescribeRequest, context: Any) -> apb.DescribeResponse:
        from nbferry.agent import caretaker
        from nbferry.agent.namespace import size_of, user_variables
        from nbferry.agent.recorder import recorder_of
        from nbferry.storage import nbferry_version

        ns = self.shell.user_ns
        for _ in range(5):  # a cell may be changing the namespace: retry a copy
            try:
                names = user_variables(dict(ns), getattr(self.shell, "user_ns_hidden", None))
                break
            except RuntimeError:
                continue
        else:
            names = {}
        return apb.DescribeResponse(
            session_id=self._session(""),
            kernel_id=self.kernel_id,
            variables=[
                apb.VariableInfo(name=n, type_name=_type_name(v), size_bytes=size_of(v))
                for n, v in names.items()
            ],
            history_length=len(recorder_of(self.shell).cells),
            busy=self.main.busy,
            nbferry_version=nbferry_version(),
            python_version=platform.python_version(),
            cwd=os.getcwd(),
            pid=os.getpid(),
            awaiting_restore=caretaker.awaiting_restore(),
        )

    def Plan(self, request: apb.PlanRequest, context: Any) -> apb.PlanResponse:
        from nbferry.agent.capture import capture_namespace, plan_checkpoint
        from nbferry.storage import open_store, parse_options

        opts = request.options

        def plan() -> dict:
            store = open_store(opts.store_url or None, parse_options(list(opts.store_options)))
            captured = capture_namespace(
                self.shell.user_ns, getattr(self.shell, "user_ns_hidden", None)
            )
            return plan_checkpoint(
                self.shell,
                store,
                self._session(opts.session_id),
                captured,
                restore_weight=opts.restore_weight or 1.0,
                inputs_on_target=opts.inputs_on_target,
                store_all=opts.store_all,
            ).report()

        report = self._on_main(context, plan, wait=request.wait_seconds)
        return apb.PlanResponse(
            report_json=json.dumps(report),
            store=report["store"],
            recompute=report["recompute"],
            rerun_cells=report["rerun_cells"],
            infeasible=report["infeasible"],
            predicted_checkpoint_seconds=report["predicted_checkpoint_seconds"],
            predicted_restore_seconds=report["predicted_restore_seconds"],
        )

    def Checkpoint(
        self, request: apb.CheckpointRequest, context: Any
    ) -> Iterator[apb.CheckpointResponse]:
        from nbferry.agent.capture import checkpoint
        from nbferry.storage import open_store, parse_options

        opts = request.options

        def work(progress: Callable[..., None]) -> dict:
            progress("planning")  # capture and plan: what to store, what to rerun
            store = open_store(opts.store_url or None, parse_options(list(opts.store_options)))
            report = checkpoint(
                self.shell,
                store,
                self._session(opts.session_id),
                request.message,
                progress=lambda done, total: progress("uploading", done, total),
                restore_weight=opts.restore_weight or 1.0,
                inputs_on_target=opts.inputs_on_target,
                store_all=opts.store_all,
                allow_loss=request.allow_loss,
            )
            progress("committed")
            return report

        for kind, value in self._streamed(context, request.operation_id, request.interrupt, work):
            if kind == "progress":
                yield apb.CheckpointResponse(progress=value)
            else:
                yield apb.CheckpointResponse(result=checkpoint_result(value))

    def Restore(self, request: apb.RestoreRequest, context: Any) -> Iterator[apb.RestoreResponse]:
        from nbferry.agent.restore import restore
        from nbferry.storage import open_store, parse_options

        def work(progress: Callable[..., None]) -> dict:
            progress("loading")
            store = open_store(
                request.store_url or None, parse_options(list(request.store_options))
            )
            checkpoint = request.checkpoint or "latest"
            scope = None
            if checkpoint == "latest" or request.session_id:
                scope = self._session(request.session_id)
            return restore(
                self.shell,
                store,
                checkpoint,
                scope,
                progress=lambda done, total: progress("loading", done, total),
            )

        for kind, value in self._streamed(context, request.operation_id, request.interrupt, work):
            if kind == "progress":
                yield apb.RestoreResponse(progress=value)
            else:
                yield apb.RestoreResponse(result=restore_result(value))

    def Cancel(self, request: apb.CancelRequest, context: Any) -> apb.CancelResponse:
        with self._lock:
            event = self._operations.get(request.operation_id)
        if event is not None:
            event.set()
        return apb.CancelResponse(cancelled=event is not None)


def checkpoint_result(report: dict) -> apb.CheckpointResult:
    return apb.CheckpointResult(
        checkpoint_id=report["checkpoint_id"],
        session_id=report["session_id"],
        store_url=report["store"],
        stored=[v["name"] for v in report["stored"]],
        recomputed=report["recomputed"],
        stored_bytes=report["stored_bytes"],
        bytes_uploaded=report["bytes_uploaded"],
        seconds=report["seconds"],
        report_json=json.dumps(report),
    )


def restore_result(report: dict) -> apb.RestoreResult:
    return apb.RestoreResult(
        checkpoint_id=report["checkpoint_id"],
        session_id=report["session_id"],
        loaded=report["loaded"],
        recomputed=report["recomputed"],
        differs=report["differs"],
        lost={x["name"]: x["reason"] for x in report["lost"]},
        failed={x["name"]: x["reason"] for x in report["failed"]},
        seconds=report["seconds"],
        report_json=json.dumps(report),
    )


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(0.0, remaining - 0.5)


def _type_name(value: Any) -> str:
    from nbferry.agent.capture import type_name

    return type_name(value)


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a failure maps to; the message always says what to do."""
    from nbferry.agent.capture import PlanError
    from nbferry.agent.restore import RestoreError
    from nbferry.storage import CheckpointNotFoundError, StoreAccessError, StoreError

    if isinstance(exc, KernelBusy):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, Cancelled):
        return grpc.StatusCode.CANCELLED, str(exc)
    if isinstance(exc, CheckpointNotFoundError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, PlanError | RestoreError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, StoreAccessError):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, StoreError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return grpc.StatusCode.ABORTED, "interrupted"
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


class AgentServer:
    """The running server, its address, token and discovery file."""

    def __init__(self, shell: Any, connection_file: str) -> None:
        kernel_id = Path(connection_file).stem.removeprefix("kernel-")
        self.token = secrets.token_urlsafe(32)
        self.discovery = discovery_file(connection_file)
        self._dir: str | None = None
        listen = os.environ.get(ENV_LISTEN, "")
        self.server = grpc.server(
            ThreadPoolExecutor(4, thread_name_prefix="nbferry-agent"),
            interceptors=[TokenAuth(self.token)],
        )
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(shell, kernel_id), self.server
        )
        if listen:
            host, _, port = listen.rpartition(":")
            if host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
                raise ValueError(f"{ENV_LISTEN}={listen}: the agent listens on loopback only")
            bound = self.server.add_insecure_port(f"{host}:{port}")
            self.address = f"{host}:{bound}"
        else:
            self._dir = tempfile.mkdtemp(prefix="nbferry-agent-")  # 0700: only this user
            sock = os.path.join(self._dir, "agent.sock")
            self.server.add_insecure_port(f"unix://{sock}")
            self.address = f"unix://{sock}"
        self.server.start()
        if self._dir:
            os.chmod(os.path.join(self._dir, "agent.sock"), 0o600)
        info = {
            "address": self.address,
            "token": self.token,
            "kernel_id": kernel_id,
            "pid": os.getpid(),
            "connection_file": str(connection_file),
        }
        self._pid = os.getpid()
        try:
            _write_private(self.discovery, json.dumps(info))
        except OSError:
            self.stop()
            raise
        atexit.register(self.stop)

    def stop(self) -> None:
        if os.getpid() != self._pid:
            return  # a forked child: the parent still serves
        self.server.stop(0)
        with contextlib.suppress(OSError):
            self.discovery.unlink()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically: a fresh temp file (never a planted one), then rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


_server: AgentServer | None = None


def start(shell: Any) -> AgentServer | None:
    """Start the service once per kernel; None outside ipykernel (plain IPython)."""
    global _server
    if _server is not None or getattr(shell, "kernel", None) is None:
        return _server
    if os.environ.get("NBFERRY_AGENT_SERVICE", "1") == "0":
        return None
    from ipykernel.connect import get_connection_file

    try:
        connection_file = get_connection_file()
    except Exception:
        return None
    _server = AgentServer(shell, os.path.abspath(connection_file))
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


__all__ = ["AgentServer", "discovery_file", "start", "stop"]
