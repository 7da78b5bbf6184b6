"""Start a kernel through a Jupyter server's REST API, so the session shows in JupyterLab.

`nbferry serve --jupyter-url URL` restores into kernels made this way: the
server owns the kernel (POST /api/sessions with the notebook's path), and the
migrator attaches to it through the connection file the server writes in the
shared Jupyter runtime folder (same user, same host); launch.py loads the
agent there and restores through it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from nbferry.migrator.errors import KernelError


class JupyterServer:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"token {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                text = reply.read()
        except urllib.error.HTTPError as exc:
            raise KernelError(
                f"Jupyter server {self.url}: {method} {path} answered {exc.code} "
                f"{exc.reason}: check --jupyter-url and its token"
            ) from None
        except OSError as exc:
            raise KernelError(f"Jupyter server {self.url} unreachable: {exc}") from None
        return json.loads(text) if text else None

    def start_session(self, notebook: str, kernel_name: str = "python3") -> tuple[str, str]:
        """(session id, kernel id) of a new session for `notebook` (a server-relative path)."""
        reply = self._call(
            "POST",
            "/api/sessions",
            {
                "path": notebook,
                "name": os.path.basename(notebook),
                "type": "notebook",
                "kernel": {"name": kernel_name},
            },
        )
        return reply["id"], reply["kernel"]["id"]

    def stop_session(self, session_id: str) -> None:
        self._call("DELETE", f"/api/sessions/{session_id}")

    def sessions(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/sessions")


def connection_file(kernel_id: str, timeout: float = 30) -> Path:
    """The connection file the server wrote for `kernel_id` (same runtime folder)."""
    path = Path(jupyter_runtime_dir()) / f"kernel-{kernel_id}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise KernelError(
                f"no {path.name} in {path.parent}: the Jupyter server must run as this user "
                "on this host, with the same JUPYTER_RUNTIME_DIR"
            )
        time.sleep(0.05)
    return path
