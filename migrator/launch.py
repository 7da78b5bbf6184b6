"""Start a fresh kernel on this host with the agent loaded, and restore a checkpoint into it.

Used by `nbferry restore --new-kernel` and by the MigratorService. Kernels are
started independent of the process that asked (their own session; no parent
polling), named like Jupyter's own (`kernel-<id>.json` in the runtime folder),
so they outlive the CLI or migrator and `jupyter console --existing` attaches.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_runtime_dir

from nbferry.agent import caretaker
from nbferry.migrator.agents import AgentClient, find_agent
from nbferry.migrator.errors import KernelError
from nbferry.v1 import agent_pb2 as apb


@dataclass
class NewKernel:
    kernel_id: str
    connection_file: str
    pid: int
    manager: KernelManager | None
    stop: Callable[[], None] | None = None  # for kernels a Jupyter server owns

    def connection_info(self) -> dict[str, Any]:
        return json.loads(Path(self.connection_file).read_text())

    def hand_over(self) -> None:
        """The kernel is the user's now: drop its manager, whose garbage collection
        would otherwise delete the connection file of the still-running kernel."""
        if self.manager is not None:
            self.manager._connection_file_written = False  # what cleanup_connection_file checks
            self.manager = None

    def kill(self) -> None:
        """Stop the kernel and remove its files (a restore into it failed, or its
        caller went away)."""
        if self.stop is not None:
            with contextlib.suppress(Exception):
                self.stop()  # the Jupyter server shuts the kernel down and removes its files
            return
        try:
            if self.manager is None:
                raise OSError("handed over: only its process is left to stop")
            self.manager.shutdown_kernel(now=True)
        except Exception:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        conn = Path(self.connection_file)
        for path in (conn, _discovery(self.connection_file), conn.with_suffix(".log")):
            path.unlink(missing_ok=True)


def _discovery(connection_file: str) -> Path:
    from nbferry.agent.service import discovery_file

    return discovery_file(connection_file)


# Secrets of the process that starts kernels; notebook code must not read them.
_PRIVATE_ENV = ("NBFERRY_TOKEN",)


def kernel_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
    env.update(extra or {})
    return env


def start_kernel(
    cwd: str | Path, env: dict[str, str] | None = None, timeout: float = 60
) -> NewKernel:
    """A new python3 kernel in `cwd` with the nbferry agent loaded and serving.

    The agent loads while the kernel starts (`--ext`), and watches this process
    until a restore into the kernel finishes: should this process die first,
    the kernel shuts itself down (see `agent.caretaker`).
    """
    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True)
    kernel_id = str(uuid.uuid4())
    manager = KernelManager(
        kernel_name="python3",
        connection_file=str(runtime / f"kernel-{kernel_id}.json"),
    )
    # The kernel outlives whoever started it, so it must not hold their stdout or
    # stderr open: its own output goes to a log file beside its connection file.
    log_path = runtime / f"kernel-{kernel_id}.log"
    with open(log_path, "ab") as log:
        manager.start_kernel(
            cwd=str(cwd),
            env=kernel_env({caretaker.ENV: str(os.getpid()), **(env or {})}),
            extra_arguments=["--ext=nbferry.agent"],
            independent=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    kernel = NewKernel(kernel_id, manager.connection_file, manager.provisioner.pid, manager)
    try:
        load_agent(kernel.connection_file, kernel_id, timeout)
    except BaseException:
        kernel.kill()
        raise
    return kernel


def load_agent(connection_file: str, kernel_id: str, timeout: float = 60) -> None:
    """Load the agent in a running kernel (if it is not yet), then wait until it serves."""
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        # Not the %load_ext magic: it prints when the agent is loaded already
        # (start_kernel loads it with --ext), and this process's stdout may be JSON.
        reply = client.execute_interactive(
            "get_ipython().extension_manager.load_extension('nbferry.agent')",
            timeout=timeout,
            silent=True,
            output_hook=lambda msg: None,
        )
        if reply["content"].get("status") != "ok":
            raise KernelError(f"loading the agent failed: {reply['content'].get('evalue')}")
    finally:
        client.stop_channels()
    deadline = time.monotonic() + timeout
    while True:
        try:
            find_agent(kernel_id)
            return
        except KernelError:
            if time.monotonic() > deadline:
                raise KernelError(
                    f"kernel {kernel_id} started, but its agent never came up"
                ) from None
            time.sleep(0.05)


def start_kernel_via_jupyter(url: str, token: str, notebook: str) -> NewKernel:
    """A kernel a Jupyter server starts for `notebook`, with the agent loaded."""
    from nbferry.migrator.jupyter import JupyterServer, connection_file

    server = JupyterServer(url, token)
    session_id, kernel_id = server.start_session(notebook)
    kernel = NewKernel(kernel_id, "", 0, None, stop=lambda: server.stop_session(session_id))
    try:
        kernel.connection_file = str(connection_file(kernel_id))
        load_agent(kernel.connection_file, kernel_id)
        kernel.pid = find_agent(kernel_id).pid
    except BaseException:
        kernel.kill()
        raise
    return kernel


def restore_into_new_kernel(
    cwd: str | Path,
    request: apb.RestoreRequest,
    on_progress: Callable[[apb.Progress], None] | None = None,
    env: dict[str, str] | None = None,
    starter: Callable[[], NewKernel] | None = None,
) -> tuple[NewKernel, apb.RestoreResult]:
    """Start a kernel, restore into it; the kernel is removed again if the restore fails."""
    if on_progress:
        on_progress(apb.Progress(phase="starting kernel"))
    kernel = starter() if starter is not None else start_kernel(cwd, env)
    try:
        info = find_agent(kernel.kernel_id)
        with AgentClient(info.address, info.token) as agent:
            result = None
            for event in agent.restore(request):
                if event.WhichOneof("event") == "progress":
                    if on_progress:
                        on_progress(event.progress)
                else:
                    result = event.result
        if result is None:
            raise KernelError("the agent ended the restore without a result")
        kernel.hand_over()
        return kernel, result
    except BaseException:
        kernel.kill()
        raise


def hostname() -> str:
    return socket.gethostname()
