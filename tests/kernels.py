"""Real IPython kernels for tests, through jupyter_client."""

from __future__ import annotations

import json
import os
import queue
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


class KernelError(AssertionError):
    pass


class Kernel:
    """A python3 kernel (this interpreter's ipykernel) started in `cwd`."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(kernel_name="python3")
        full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
        self.km.start_kernel(cwd=str(cwd), env=full_env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120, allow_error: bool = False) -> str:
        """Execute code as a cell; return its stdout; raise KernelError on an exception."""
        msg_id = self.kc.execute(code, store_history=True)
        out, error = [], None
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
        if error and not allow_error:
            raise KernelError(f"{error}\nwhile running:\n{code}\noutput:\n{''.join(out)}")
        return "".join(out) + (f"\n{error}" if error else "")

    def value(self, expr: str) -> Any:
        """The JSON value of an expression evaluated in the kernel."""
        out = self.run(f"print('\\x00' + __import__('json').dumps({expr}))")
        return json.loads(out.rsplit("\x00", 1)[1])

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
