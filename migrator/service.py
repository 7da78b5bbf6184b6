"""MigratorService (`nbferry serve`): restore checkpoints into fresh kernels on this host.

Stateless: every request names (or defaults to) a store, and everything a
restore needs comes from it, so replicas behind one Kubernetes Service are
interchangeable. Serves grpc.health.v1 and server reflection (both open to
probes without a token); every other call needs the bearer token. Optional
TLS, or mutual TLS with a client CA. Logs are JSON lines on stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from nbferry.agent.grpcauth import TokenAuth, bearer
from nbferry.migrator.agents import AgentClient
from nbferry.migrator.errors import KernelError
from nbferry.migrator.launch import hostname, restore_into_new_kernel, start_kernel_via_jupyter
from nbferry.migrator.spare import SpareKernels
from nbferry.storage import CheckpointNotFoundError, StoreError, open_store, parse_options
from nbferry.v1 import agent_pb2 as apb
from nbferry.v1 import migrator_pb2 as mpb
from nbferry.v1 import migrator_pb2_grpc

SERVICE_NAME = "nbferry.v1.MigratorService"
log = logging.getLogger("nbferry.migrator")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower()}
        entry["msg"] = record.getMessage()
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry)


def _event(msg: str, **fields: Any) -> None:
    log.info(msg, extra={"fields": fields})


class MigratorServicer(migrator_pb2_grpc.MigratorServiceServicer):
    def __init__(
        self,
        store_url: str,
        workdir: str | Path,
        store_options: list[str] | None = None,
        jupyter: tuple[str, str] | None = None,
        spares: SpareKernels | None = None,
    ) -> None:
        self.store_url = store_url
        self.store_options = list(store_options or [])
        self.workdir = Path(workdir)
        self.jupyter = jupyter  # (url, token): kernels are made by that Jupyter server
        self.spares = spares  # warm kernels for restores (not with a Jupyter server)

    def _store(self, url: str, options: Any) -> tuple[str, list[str]]:
        """The request's store and options, or this migrator's own."""
        if url:
            return url, list(options)
        return self.store_url, self.store_options

    def RestoreCheckpoint(
        self, request: mpb.RestoreCheckpointRequest, context: grpc.ServicerContext
    ) -> Iterator[mpb.RestoreCheckpointResponse]:
        for kind, value in self._restore(request, context):
            if kind == "progress":
                yield mpb.RestoreCheckpointResponse(progress=value)
            else:
                yield mpb.RestoreCheckpointResponse(result=value)

    def _restore(
        self, request: mpb.RestoreCheckpointRequest, context: grpc.ServicerContext
    ) -> Iterator[tuple[str, Any]]:
        started = time.perf_counter()
        store_url, options = self._store(request.store_url, request.store_options)
        checkpoint = request.checkpoint or "latest"
        try:  # fail fast (and start no kernel) when the checkpoint is not there
            store = open_store(store_url, parse_options(options))
            ref = store.resolve(checkpoint, request.session_id or None)
        except CheckpointNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except (StoreError, ValueError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        _event("restore started", checkpoint=ref.checkpoint_id, store=store_url)
        events = _Relay()

        starter = self.spares.take if self.spares is not None else None
        if self.jupyter is not None:
            notebook = _notebook_path(store.read_manifest(ref))
            url, jupyter_token = self.jupyter
            starter = functools.partial(start_kernel_via_jupyter, url, jupyter_token, notebook)

        def work() -> Any:
            kernel, result = restore_into_new_kernel(
                self.workdir,
                apb.RestoreRequest(
                    store_url=store_url, checkpoint=ref.checkpoint_id, store_options=options
                ),
                on_progress=events.put,
                starter=starter,
            )
            if not context.is_active():
                # The caller is gone (cancelled, or its deadline passed): nobody would
                # ever learn of this kernel, so it would run on as an orphan.
                kernel.kill()
                _event(
                    "restore abandoned", checkpoint=ref.checkpoint_id, kernel_id=kernel.kernel_id
                )
                raise KernelError("the client went away before the restore finished")
            return kernel, result

        try:
            for item in events.run(work):
                yield "progress", item
            kernel, result = events.result
        except grpc.RpcError as exc:
            self._refill()
            _event("restore failed", checkpoint=ref.checkpoint_id, error=exc.details())
            context.abort(exc.code(), exc.details() or "restore failed")
        except Exception as exc:
            self._refill()
            _event("restore failed", checkpoint=ref.checkpoint_id, error=str(exc))
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        self._refill()  # after the restore, so it never shares the CPU with a booting kernel
        _event(
            "restore done",
            checkpoint=ref.checkpoint_id,
            kernel_id=kernel.kernel_id,
            loaded=len(result.loaded),
            recomputed=len(result.recomputed),
            lost=len(result.lost),
            seconds=round(seconds, 3),
        )
        yield (
            "result",
            mpb.RestoredKernel(
                kernel_id=kernel.kernel_id,
                connection_file=kernel.connection_file,
                connection_info_json=json.dumps(kernel.connection_info()),
                host=hostname(),
                report=result,
                seconds=seconds,
            ),
        )

    def _refill(self) -> None:
        if self.spares is not None:
            self.spares.refill()

    def Migrate(
        self, request: mpb.MigrateRequest, context: grpc.ServicerContext
    ) -> Iterator[mpb.MigrateResponse]:
        try:
            with AgentClient(request.source.address, request.source.token) as agent:
                checkpointed = None
                for event in agent.checkpoint(request.checkpoint, timeout=context.time_remaining()):
                    if event.WhichOneof("event") == "progress":
                        yield mpb.MigrateResponse(progress=event.progress)
                    else:
                        checkpointed = event.result
        except grpc.RpcError as exc:
            context.abort(exc.code(), f"source kernel: {exc.details()}")
        if checkpointed is None:
            context.abort(grpc.StatusCode.INTERNAL, "the source agent returned no checkpoint")
        yield mpb.MigrateResponse(checkpointed=checkpointed)
        restore = mpb.RestoreCheckpointRequest(
            store_url=checkpointed.store_url,
            checkpoint=checkpointed.checkpoint_id,
            store_options=request.checkpoint.options.store_options,
        )
        if request.target_migrator:
            with MigratorClient(request.target_migrator, request.target_token) as target:
                stream = target.restore_checkpoint(restore, timeout=context.time_remaining())
                try:
                    for event in stream:
                        if event.WhichOneof("event") == "progress":
                            yield mpb.MigrateResponse(progress=event.progress)
                        else:
                            yield mpb.MigrateResponse(restored=event.result)
                except grpc.RpcError as exc:
                    context.abort(exc.code(), f"target migrator: {exc.details()}")
            return
        for kind, value in self._restore(restore, context):
            if kind == "progress":
                yield mpb.MigrateResponse(progress=value)
            else:
                yield mpb.MigrateResponse(restored=value)

    def ListCheckpoints(
        self, request: mpb.ListCheckpointsRequest, context: grpc.ServicerContext
    ) -> mpb.ListCheckpointsResponse:
        try:
            url, options = self._store(request.store_url, request.store_options)
            refs = open_store(url, parse_options(options)).list_checkpoints(
                request.session_id or None
            )
        except (StoreError, ValueError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return mpb.ListCheckpointsResponse(
            checkpoints=[
                mpb.CheckpointInfo(
                    checkpoint_id=r.checkpoint_id,
                    session_id=r.session_id,
                    created=r.created.isoformat().replace("+00:00", "Z"),
                )
                for r in refs
            ]
        )


def _notebook_path(manifest: Any) -> str:
    """Where the session's notebook sits below the Jupyter server's root."""
    notebook = manifest.labels.get("notebook", "")
    if notebook and not os.path.isabs(notebook):
        return notebook
    return os.path.basename(notebook) or f"{manifest.session_id}.ipynb"


class _Relay:
    """Runs blocking work on a thread and relays its progress events to a generator."""

    def __init__(self) -> None:
        import queue

        self.queue: Any = queue.Queue()
        self.result: Any = None

    def put(self, item: Any) -> None:
        self.queue.put(("item", item))

    def run(self, work: Callable[[], Any]) -> Iterator[Any]:
        def target() -> None:
            try:
                self.result = work()
                self.queue.put(("done", None))
            except BaseException as exc:
                self.queue.put(("error", exc))

        threading.Thread(target=target, daemon=True).start()
        while True:
            kind, value = self.queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return


class MigratorClient:
    """Calls a MigratorService with its token, over TLS when given a CA."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        ca: bytes | None = None,
        cert: bytes | None = None,
        key: bytes | None = None,
    ) -> None:
        if ca is None and (cert or key):
            raise ValueError("a client certificate needs the CA too (else the token goes in clear)")
        if ca is not None:
            creds = grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert)
            self.channel = grpc.secure_channel(address, creds)
        else:
            self.channel = grpc.insecure_channel(address)
        self.stub = migrator_pb2_grpc.MigratorServiceStub(self.channel)
        self.metadata = bearer(token) if token else []

    def restore_checkpoint(
        self, request: mpb.RestoreCheckpointRequest, timeout: float | None = None
    ) -> Iterator[mpb.RestoreCheckpointResponse]:
        return self.stub.RestoreCheckpoint(request, metadata=self.metadata, timeout=timeout)

    def migrate(
        self, request: mpb.MigrateRequest, timeout: float | None = None
    ) -> Iterator[mpb.MigrateResponse]:
        return self.stub.Migrate(request, metadata=self.metadata, timeout=timeout)

    def list_checkpoints(
        self, request: mpb.ListCheckpointsRequest, timeout: float = 30
    ) -> mpb.ListCheckpointsResponse:
        return self.stub.ListCheckpoints(request, metadata=self.metadata, timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> MigratorClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalMigrator:
    """`nbferry serve` in a child process on a free port; used by the demo, tests and bench.

    The child's first line of output gives the address; its JSON-line log goes
    to `log_path` (default: beside `workdir`), and `stop()` returns it. `env`
    must carry NBFERRY_TOKEN; `prefix` runs the command under another (e.g.
    `ip netns exec NAME`).
    """

    def __init__(
        self,
        store_url: str,
        workdir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
        log_path: Path | None = None,
        prefix: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.log_path = log_path or workdir.parent / f"migrator-{workdir.name}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "nbferry.migrator.cli", "serve",
                 "--listen", listen, "--store", store_url, "--workdir", str(workdir), *extra],
                env=env if env is not None else dict(os.environ),
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"migrator did not start: {self.stop()}")
        self.address = json.loads(line)["listening"]

    def stop(self) -> str:
        """SIGTERM (SIGKILL after 30 s); returns the migrator's log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.log_path.read_text()

    def __enter__(self) -> LocalMigrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    listen: str,
    store_url: str,
    token: str,
    *,
    workdir: str | Path | None = None,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    tls_client_ca: bytes | None = None,
    grace: float = 30.0,
    ready: Callable[[str], None] | None = None,
    store_options: list[str] | None = None,
    jupyter: tuple[str, str] | None = None,
    spare_kernels: int = 1,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop taking calls and finish those running."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False

    server = grpc.server(
        ThreadPoolExecutor(16, thread_name_prefix="nbferry-migrator"),
        interceptors=[TokenAuth(token)],
    )
    workdir = workdir or os.getcwd()
    spares = SpareKernels(workdir, spare_kernels) if jupyter is None and spare_kernels else None
    migrator_pb2_grpc.add_MigratorServiceServicer_to_server(
        MigratorServicer(store_url, workdir, store_options, jupyter, spares), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if tls_client_ca and not (tls_cert and tls_key):
        raise ValueError("a client CA needs a server certificate and key: mutual TLS is TLS")
    if tls_cert and tls_key:
        creds = grpc.ssl_server_credentials(
            [(tls_key, tls_cert)],
            root_certificates=tls_client_ca,
            require_client_auth=tls_client_ca is not None,
        )
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise ValueError(f"cannot listen on {listen}: address in use or not allowed")
    address = f"{listen.rpartition(':')[0]}:{port}"
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _event("listening", address=address, store=store_url, tls=bool(tls_cert))
    if ready is not None:
        ready(address)

    stopping = threading.Event()

    def shutdown(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    stopping.wait()
    _event("stopping", grace_seconds=grace)
    health_servicer.enter_graceful_shutdown()
    server.stop(grace).wait()
    if spares is not None:
        spares.close()
    _event("stopped")
