"""`nbferry install` / `nbferry uninstall`: make every new kernel load the agent, or stop it.

Per user: an IPython startup file in the default profile. For an environment
(a JupyterHub image, a conda env): `--prefix P` adds the extension to
P/etc/ipython/ipython_kernel_config.json, which kernels of that environment
read (P is usually sys.prefix). Both are undone exactly by uninstall.

`--jupyter-server` also enables the jupyter_server extension (save kernels when
the server stops, restore a notebook's session when its kernel starts): a file
in the user's (or P/etc/jupyter's) jupyter_server_config.d, as `jupyter server
extension enable` would write for a package that ships one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

EXTENSION = "nbferry.agent"
STARTUP_NAME = "50-nbferry-agent.py"
STARTUP_CODE = f'''# Added by `nbferry install`; remove with `nbferry uninstall`.
try:
    get_ipython().extension_manager.load_extension("{EXTENSION}")
except Exception as exc:  # never break a kernel's start
    print(f"nbferry: agent not loaded: {{exc}}")
'''


def _startup_file() -> Path:
    from IPython.paths import get_ipython_dir

    return Path(get_ipython_dir()) / "profile_default" / "startup" / STARTUP_NAME


def _prefix_config(prefix: str) -> Path:
    return Path(prefix) / "etc" / "ipython" / "ipython_kernel_config.json"


def install(prefix: str | None = None) -> Path:
    if prefix is None:
        path = _startup_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTUP_CODE)
        return path
    path = _prefix_config(prefix)
    config = json.loads(path.read_text()) if path.exists() else {}
    extensions = config.setdefault("InteractiveShellApp", {}).setdefault("extensions", [])
    if EXTENSION not in extensions:
        extensions.append(EXTENSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def uninstall(prefix: str | None = None) -> Path | None:
    """Undo install; returns the file changed, or None when there was nothing to undo."""
    if prefix is None:
        path = _startup_file()
        if path.exists():
            path.unlink()
            return path
        return None
    path = _prefix_config(prefix)
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    app = config.get("InteractiveShellApp", {})
    if EXTENSION not in app.get("extensions", []):
        return None
    app["extensions"].remove(EXTENSION)
    if not app["extensions"]:
        del app["extensions"]
    if not app:
        config.pop("InteractiveShellApp", None)
    if config:
        path.write_text(json.dumps(config, indent=2) + "\n")
    else:
        path.unlink()
    return path


SERVER_EXTENSION = "nbferry.migrator.server_extension"
SERVER_CONFIG_NAME = "nbferry.json"


def _server_config(prefix: str | None) -> Path:
    if prefix is None:
        from jupyter_core.paths import jupyter_config_dir

        base = Path(jupyter_config_dir())
    else:
        base = Path(prefix) / "etc" / "jupyter"
    return base / "jupyter_server_config.d" / SERVER_CONFIG_NAME


def enable_server_extension(prefix: str | None = None) -> Path:
    path = _server_config(prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"ServerApp": {"jpserver_extensions": {SERVER_EXTENSION: True}}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def disable_server_extension(prefix: str | None = None) -> Path | None:
    path = _server_config(prefix)
    if not path.exists():
        return None
    path.unlink()
    return path
