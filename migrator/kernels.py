"""Start and drive local IPython kernels through jupyter_client."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import time
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_runtime_dir

from nbferry.migrator.errors import KernelError

__all__ = ["Kernel", "KernelError", "find_connection_file", "notebook_cells", "shutdown_kernel"]


class Kernel:
    """A python3 kernel (this interpreter's ipykernel) started in `cwd`, or attached to."""

    km: KernelManager | None

    def __init__(
        self,
        cwd: Path | str,
        env: dict[str, str] | None = None,
        timeout: float = 60,
        runtime_dir: Path | str | None = None,
    ) -> None:
        # IPC (Unix sockets in the runtime dir) rather than TCP on loopback: a
        # local kernel needs no network port, and nothing else can connect.
        # The socket path must be absolute: the kernel starts in another directory.
        runtime = Path(runtime_dir or jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        kernel_id = str(uuid.uuid4())
        socket_base = runtime / f"nbferry-{kernel_id[:12]}"
        self.km = KernelManager(
            kernel_name="python3",
            transport="ipc",
            ip=str(socket_base),
            # Named like Jupyter's own kernels, so `--kernel ID` finds it.
            connection_file=str(runtime / f"kernel-{kernel_id}.json"),
        )
        self.km.start_kernel(cwd=str(cwd), env={**os.environ, **(env or {})})
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=timeout)
        except RuntimeError:
            self.shutdown()
            raise

    @property
    def kernel_id(self) -> str:
        return Path(self.kc.connection_file).stem.removeprefix("kernel-")

    def run(
        self, code: str, timeout: float = 300, allow_error: bool = False, store_history: bool = True
    ) -> str:
        """Execute code as a cell; return its stdout; raise KernelError if it raises."""
        msg_id = self.kc.execute(code, store_history=store_history)
        out: list[str] = []
        error = None
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                raise KernelError(f"no reply after {timeout}s running:\n{code}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self._reply(msg_id, timeout)
        if reply.get("status") == "error" and error is None:
            # IPython reports a UsageError on stderr and in the reply only.
            error = f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"
        if error and not allow_error:
            raise KernelError(f"{error}\nwhile running:\n{code}\noutput:\n{''.join(out)}")
        return "".join(out) + (f"\n{error}" if error else "")

    def _reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=timeout)
            except queue.Empty:
                raise KernelError(f"no execute reply after {timeout}s") from None
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    def value(self, expr: str, timeout: float = 300) -> Any:
        """The JSON value of an expression evaluated in the kernel (not kept in history)."""
        code = f"print('\\x00' + __import__('json').dumps({expr}))"
        out = self.run(code, timeout, store_history=False)
        return json.loads(out.rsplit("\x00", 1)[1])

    def magic(self, line: str, timeout: float = 300) -> dict[str, Any]:
        """Run `%nbferry LINE` silently (not recorded, not in history); its report dict."""
        expr = f"__import__('json').dumps(dict(get_ipython().run_line_magic('nbferry', {line!r})))"
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"r": expr})
        result = self._reply(msg_id, timeout)["user_expressions"]["r"]
        if result.get("status") != "ok":
            error = f"{result.get('ename')}: {result.get('evalue')}"
            if "not found" in error and "nbferry" in error:
                error += (
                    " (load the agent in that kernel: %load_ext nbferry.agent, or nbferry install)"
                )
            raise KernelError(error)
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))

    def shutdown(self) -> None:
        self.kc.stop_channels()
        if self.km is not None:
            connection = self.km.connection_file
            self.km.shutdown_kernel(now=True)
            # Killed, the agent could not remove its discovery file: do it for it.
            from nbferry.agent.service import discovery_file

            with contextlib.suppress(OSError):
                discovery_file(connection).unlink()

    @classmethod
    def attach(cls, ref: str) -> Kernel:
        """A client for a running kernel: its id, a unique prefix of one, or its connection file."""
        kernel = cls.__new__(cls)
        kernel.km = None
        kernel.kc = BlockingKernelClient(connection_file=str(find_connection_file(ref)))
        kernel.kc.load_connection_file()
        kernel.kc.start_channels()
        try:
            kernel.kc.wait_for_ready(timeout=30)
        except RuntimeError as exc:
            kernel.kc.stop_channels()
            raise KernelError(f"kernel {ref} does not answer: {exc}") from None
        return kernel

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def shutdown_kernel(connection_file: str | Path, timeout: float = 10) -> None:
    """Ask the kernel behind a connection file to shut down (one it did not start)."""
    client = BlockingKernelClient(connection_file=str(connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        msg_id = client.shutdown()
        # Wait for the reply: closing the channels at once can drop the request unsent.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = client.control_channel.get_msg(timeout=0.5)
            except queue.Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()


def find_connection_file(ref: str) -> Path:
    """The connection file of a local kernel named by id, unique id prefix, or path."""
    path = Path(ref)
    if path.suffix == ".json" and path.is_file():
        return path
    runtime = Path(jupyter_runtime_dir())
    found = sorted(
        p
        for p in runtime.glob("kernel-*.json")
        if p.stem.removeprefix("kernel-").startswith(ref) and "." not in p.stem  # not *.nbferry
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise KernelError(
            f"no kernel {ref!r} in {runtime}: give a kernel id, a unique prefix of one, "
            "or the path of its connection file"
        )
    raise KernelError(f"{ref!r} matches {len(found)} kernels in {runtime}: give more of the id")


def notebook_cells(path: Path | str) -> list[str]:
    """Code cells of a .ipynb file, in order."""
    nb = json.loads(Path(path).read_text())
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]
