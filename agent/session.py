"""Default session ids: stable for a user and notebook, so a restarted server finds them."""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

import blake3

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")
MAX_LEN = 200


def session_id_for(user: str, notebook: str) -> str:
    """'alice' + 'work/Sales Q3.ipynb' -> 'alice-work-Sales_Q3.ipynb-<hash>'.

    Readable, and a short hash of the exact user and path is added whenever
    the name had to change (or be cut), or when the user name has a "-" (then
    "alice-a" + "b.ipynb" and "alice" + "a-b.ipynb" would both read
    "alice-a-b.ipynb"), so two notebooks, or two users, never share a session
    id. Ids without a hash are left as they always were.
    """
    raw = f"{user}-{notebook}"
    clean = _UNSAFE.sub("_", raw.replace("/", "-").replace("..", "_")).strip("._-") or "session"
    if clean != raw or "-" in user or len(clean) > MAX_LEN:
        digest = blake3.blake3(f"{user}\0{notebook}".encode()).hexdigest()[:10]
        clean = f"{clean[: MAX_LEN - 11]}-{digest}"
    return clean


ENV_ROOT = "NBFERRY_NOTEBOOK_ROOT"  # set by the jupyter_server extension: its root_dir


def notebook_path(user_ns: dict[str, Any]) -> str:
    """The notebook's path as Jupyter gave it to the kernel; '' when it did not.

    Jupyter gives an absolute path; below $NBFERRY_NOTEBOOK_ROOT it becomes
    relative, so a server started in another folder (or on another host)
    with the same notebook tree finds the same session.
    """
    path = str(user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME") or "")
    root = os.environ.get(ENV_ROOT, "")
    if path and root and os.path.isabs(path):
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            return rel.replace(os.sep, "/")
    return path


def default_session_id(user_ns: dict[str, Any]) -> str:
    """From the notebook path Jupyter gives the kernel; else the kernel's id; else the pid."""
    user = os.environ.get("JUPYTERHUB_USER") or _user()
    notebook = notebook_path(user_ns)
    if notebook:
        return session_id_for(user, notebook)
    kernel = kernel_id()
    return session_id_for(user, f"kernel-{kernel}" if kernel else f"ipython-{os.getpid()}")


def kernel_id() -> str:
    """This kernel's id, from its connection file name; '' outside a Jupyter kernel."""
    try:
        from ipykernel import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return ""
    return name.removeprefix("kernel-").removesuffix(".json")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "user"
