"""`nbferry install` makes new kernels load the agent; `nbferry uninstall` undoes it exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nbferry.migrator.kernels import Kernel

NBFERRY = str(Path(sys.executable).with_name("nbferry"))
HAS_MAGIC = "'nbferry' in get_ipython().magics_manager.magics['line']"


def _nbferry(*args: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [NBFERRY, *args, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_user_install_loads_agent_in_new_kernels(tmp_path: Path) -> None:
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}
    installed = _nbferry("install", env=env)
    startup = Path(installed["path"])
    assert startup.is_relative_to(tmp_path / "ipython") and startup.exists()
    with Kernel(tmp_path, env={"IPYTHONDIR": env["IPYTHONDIR"]}) as kernel:
        assert kernel.value(HAS_MAGIC) is True
        assert "nbferry agent loaded" in kernel.run("%nbferry status --store memory://inst")

    removed = _nbferry("uninstall", env=env)
    assert removed["path"] == str(startup) and not startup.exists()
    with Kernel(tmp_path, env={"IPYTHONDIR": env["IPYTHONDIR"]}) as kernel:
        assert kernel.value(HAS_MAGIC) is False
    assert _nbferry("uninstall", env=env)["path"] is None  # nothing left to undo


def test_prefix_install_merges_and_unmerges_kernel_config(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "ipython" / "ipython_kernel_config.json"
    config.parent.mkdir(parents=True)
    original = {"InteractiveShellApp": {"extensions": ["autoreload"]}, "Other": {"x": 1}}
    config.write_text(json.dumps(original))
    env = dict(os.environ)

    _nbferry("install", "--prefix", str(tmp_path), env=env)
    _nbferry("install", "--prefix", str(tmp_path), env=env)  # idempotent
    merged = json.loads(config.read_text())
    assert merged["InteractiveShellApp"]["extensions"] == ["autoreload", "nbferry.agent"]
    assert merged["Other"] == {"x": 1}

    # IPython's own config loader reads it the way a kernel of that prefix would.
    from traitlets.config.loader import JSONFileConfigLoader

    loaded = JSONFileConfigLoader(config.name, str(config.parent)).load_config()
    assert "nbferry.agent" in loaded.InteractiveShellApp.extensions

    _nbferry("uninstall", "--prefix", str(tmp_path), env=env)
    assert json.loads(config.read_text()) == original

    fresh = tmp_path / "fresh"
    _nbferry("install", "--prefix", str(fresh), env=env)
    _nbferry("uninstall", "--prefix", str(fresh), env=env)
    assert not (fresh / "etc" / "ipython" / "ipython_kernel_config.json").exists()


def test_jupyter_server_flag_enables_the_extension_and_uninstall_removes_it(
    tmp_path: Path,
) -> None:
    prefix = tmp_path / "env"
    env = dict(os.environ)
    done = _nbferry("install", "--prefix", str(prefix), "--jupyter-server", env=env)
    config = prefix / "etc" / "jupyter" / "jupyter_server_config.d" / "nbferry.json"
    assert done["server_extension"] == str(config)
    enabled = json.loads(config.read_text())["ServerApp"]["jpserver_extensions"]
    assert enabled == {"nbferry.migrator.server_extension": True}
    undone = _nbferry("uninstall", "--prefix", str(prefix), env=env)
    assert undone["server_extension"] == str(config) and not config.exists()
