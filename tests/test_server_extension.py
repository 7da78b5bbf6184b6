"""The jupyter_server extension, end to end: real `jupyter server` processes, real kernels
started through its REST API, SIGTERM as JupyterHub sends it, and a moto S3 store.

Server A runs a notebook and is stopped: its kernel must be in the store. Server B, in
another folder (another "host"), opens the same notebook: the variables come back.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_migrate import Host, _free_port, kernel_value, make_host, source_kernel

from nbferry.migrator.jupyter import JupyterServer
from nbferry.storage import open_store

JUPYTER = str(Path(sys.executable).with_name("jupyter"))
JTOKEN = "hub-test-token"


def prepare(host: Host) -> None:
    """What an operator does once: auto-load the agent, enable the server extension."""
    out = host.nbferry("install", "--jupyter-server")
    assert out.returncode == 0, out.stderr
    listed = subprocess.run(
        [JUPYTER, "server", "extension", "list"], env=host.env, capture_output=True, text=True
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout)
    assert "nbferry.migrator.server_extension enabled" in plain, plain


@contextlib.contextmanager
def jupyter_server(host: Host, store: str, *config: str) -> Iterator[tuple[JupyterServer, Any]]:
    port = _free_port()
    log = open(host.root / f"server-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", "--allow-root",
         f"--ServerApp.root_dir={host.work}", f"--IdentityProvider.token={JTOKEN}",
         f"--NbferryExtension.store={store}", *config],
        env=host.env, cwd=host.work, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = JupyterServer(f"http://127.0.0.1:{port}", JTOKEN)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.sessions()
                break
            except Exception:
                assert proc.poll() is None, (host.root / f"server-{port}.log").read_text()
                assert time.monotonic() < deadline, "jupyter server did not start"
                time.sleep(0.2)
        yield server, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()


def stop(proc: subprocess.Popen, timeout: float = 60) -> float:
    """SIGTERM, as a spawner or the kubelet sends it; seconds until the server exited."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout)
    return time.monotonic() - started


def connection_file(host: Host, kernel_id: str) -> str:
    path = host.runtime / f"kernel-{kernel_id}.json"
    deadline = time.monotonic() + 30
    while not (host.runtime / f"kernel-{kernel_id}.nbferry.json").exists():
        assert time.monotonic() < deadline, "the agent did not start in the server's kernel"
        time.sleep(0.1)
    return str(path)


@pytest.fixture
def hub(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> tuple[Host, Host, str]:
    a = make_host(tmp_path / "A", s3_endpoint)
    b = make_host(tmp_path / "B", s3_endpoint)
    for host in (a, b):
        host.env["JUPYTERHUB_USER"] = "alice"  # the session id is user + notebook path
        prepare(host)
    return a, b, f"s3://{s3_bucket}/hub"


def test_stop_saves_every_kernel_and_the_next_server_restores_them(
    hub: tuple[Host, Host, str], s3_endpoint: str
) -> None:
    a, b, store_url = hub
    (a.work / "sub").mkdir()
    with jupyter_server(a, store_url) as (server, proc):
        _, k1 = server.start_session("analysis.ipynb")
        _, k2 = server.start_session("sub/other.ipynb")
        c1, c2 = connection_file(a, k1), connection_file(a, k2)
        run(c1, "xs = [1, 2, 3]\nys = [xs, xs]\nimport numpy as np\narr = np.arange(10.0)")
        run(c2, "name = 'other'")
        seconds = stop(proc)
        log = (a.root / next(p.name for p in a.root.glob("server-*.log"))).read_text()
    store = open_store(store_url, {"endpoint_url": s3_endpoint})
    sessions = {ref.session_id: ref for ref in store.list_checkpoints()}
    assert len(sessions) == 2, log
    assert "2 of 2 kernels saved" in log, log
    assert seconds < 60

    # Another server, in another folder, with the same notebooks: opening them restores.
    (b.work / "sub").mkdir()
    with jupyter_server(b, store_url, "--NbferryExtension.restore=auto") as (server, proc):
        _, k1 = server.start_session("analysis.ipynb")
        _, k2 = server.start_session("sub/other.ipynb")
        c1, c2 = connection_file(b, k1), connection_file(b, k2)
        assert wait_value(c1, "[ys[0] is ys[1], xs, float(arr.sum())]") == [True, [1, 2, 3], 45.0]
        assert wait_value(c2, "name") == "other"
        stop(proc)


def test_ask_mode_tells_the_user_instead_of_restoring(
    hub: tuple[Host, Host, str], s3_endpoint: str
) -> None:
    a, b, store_url = hub
    with jupyter_server(a, store_url) as (server, proc):
        _, k = server.start_session("note.ipynb")
        run(connection_file(a, k), "secret = 42")
        stop(proc)
    with jupyter_server(b, store_url, "--NbferryExtension.restore=ask") as (server, proc):
        _, k = server.start_session("note.ipynb")
        c = connection_file(b, k)
        told_not_restored(c, "secret")
        run(c, "%nbferry restore latest")
        assert kernel_value(c, "secret") == 42
        stop(proc)


def test_scheduled_checkpoint_fires_after_a_long_cell_and_keeps_retention(
    hub: tuple[Host, Host, str], s3_endpoint: str
) -> None:
    a, _, store_url = hub
    config = (
        "--NbferryExtension.checkpoint_after=0.3",
        "--NbferryExtension.checkpoint_every=0.02",  # 1.2 s while idle
        "--NbferryExtension.keep=last=2",
    )
    store = open_store(store_url, {"endpoint_url": s3_endpoint})
    with jupyter_server(a, store_url, *config) as (server, proc):
        _, k = server.start_session("long.ipynb")
        c = connection_file(a, k)
        run(c, "import time; time.sleep(0.5); v = 1")  # long: a checkpoint follows it
        first = wait_for(lambda: store.list_checkpoints(), "a checkpoint after the long cell")
        assert "after a" in store.read_manifest(first[-1]).message
        previous = first[-1].checkpoint_id
        for i in range(3):  # short cells: the idle timer saves them
            run(c, f"v = {i + 2}")

            def newer(previous: str = previous) -> Any:
                refs = store.list_checkpoints()
                return refs[-1] if refs and refs[-1].checkpoint_id > previous else None

            ref = wait_for(newer, "an idle-timer checkpoint")
            assert store.read_manifest(ref).message.endswith("idle timer")
            previous = ref.checkpoint_id
        time.sleep(2.5)  # two more idle periods without cells: nothing new to save
        refs = store.list_checkpoints()
        assert refs[-1].checkpoint_id == previous
        assert len(refs) == 2  # retention kept the last two
        latest = store.read_manifest(refs[-1])
        assert "v" in latest.variables

        # Restart Kernel asks for a fresh namespace: the restarted kernel (same id as the
        # checkpoint's) is told about the checkpoint, not restored from it.
        discovery = a.runtime / f"kernel-{k}.nbferry.json"
        discovery.unlink()
        server._call("POST", f"/api/kernels/{k}/restart")
        c = connection_file(a, k)
        told_not_restored(c, "v")
        stop(proc)


def test_a_typo_in_a_setting_is_refused_when_the_server_starts(
    hub: tuple[Host, Host, str],
) -> None:
    a, _, store_url = hub
    with jupyter_server(a, store_url, "--NbferryExtension.keep=last=ten") as (_, proc):
        stop(proc)
    log = next(a.root.glob("server-*.log")).read_text()
    assert "c.NbferryExtension.keep = 'last=ten' is invalid" in log, log
    assert "needs a whole number" in log and 'keep = "last=10,hourly=24,daily=7"' in log, log
    assert "restore=auto" not in log, log  # no longer claimed while nothing would restore


def test_a_relative_store_is_a_folder_below_the_server_not_each_kernel(tmp_path: Path) -> None:
    # Kernels start in their notebooks' folders and inherit NBFERRY_STORE: it must be absolute.
    a = make_host(tmp_path / "A", "http://127.0.0.1:9")
    prepare(a)
    with jupyter_server(a, "sessions") as (_, proc):
        stop(proc)
    log = next(a.root.glob("server-*.log")).read_text()
    assert f"kernels save to file://{a.work.as_posix()}/sessions;" in log, log


def test_a_kernel_the_culler_stops_is_saved_first(
    hub: tuple[Host, Host, str], s3_endpoint: str
) -> None:
    a, _, store_url = hub
    config = (
        "--ServerApp.kernel_manager_class=nbferry.migrator.server_extension.NbferryKernelManager",
        "--MappingKernelManager.cull_idle_timeout=2",
        "--MappingKernelManager.cull_interval=1",
    )
    store = open_store(store_url, {"endpoint_url": s3_endpoint})
    with jupyter_server(a, store_url, *config) as (server, proc):
        _, k = server.start_session("idle.ipynb")
        run(connection_file(a, k), "kept = 'before the cull'")
        refs = wait_for(store.list_checkpoints, "a checkpoint before the cull")
        assert "culler" in store.read_manifest(refs[0]).message
        wait_for(lambda: not server.sessions(), "the culled kernel's session to go")
        stop(proc)


def test_checkpoint_all_saves_idle_kernels_and_names_the_busy_one(
    hub: tuple[Host, Host, str], s3_endpoint: str
) -> None:
    """`nbferry checkpoint --all`, as a Kubernetes preStop hook runs it."""
    a, _, store_url = hub
    with source_kernel(a) as idle, source_kernel(a) as busy, source_kernel(a) as unused:
        idle.run("x = 1")
        busy.run("y = 2")
        busy.kc.execute("import time\nfor _ in range(200):\n    time.sleep(0.05)")
        time.sleep(0.5)
        started = time.monotonic()
        out = a.nbferry("checkpoint", "--all", "--deadline", "3", "--store", store_url, "--json")
        took = time.monotonic() - started
        assert out.returncode == 1, out.stderr  # not everything was saved: scripts can tell
        results = {r["kernel_id"]: r for r in json.loads(out.stdout)["kernels"]}
        assert results[idle.kernel_id]["saved"] and not results[busy.kernel_id]["saved"]
        assert "busy" in results[busy.kernel_id]["error"]
        # Nothing ran in the third: no checkpoint, which would hide its session's latest.
        assert results[unused.kernel_id]["skipped"] and not results[unused.kernel_id]["saved"]
        assert took < 15  # the deadline holds for the whole run
        store = open_store(store_url, {"endpoint_url": s3_endpoint})
        ref = store.resolve(results[idle.kernel_id]["checkpoint_id"])
        assert "x" in store.read_manifest(ref).variables

        # With --interrupt the busy cell is stopped and its kernel saved too.
        busy.kc.execute("import time\nfor _ in range(400):\n    time.sleep(0.05)")
        time.sleep(0.5)
        out = a.nbferry("checkpoint", "--all", "--interrupt", "--deadline", "20",
                        "--store", store_url)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "2 of 2 kernels saved (1 with nothing to save skipped)" in out.stdout


# -- helpers -------------------------------------------------------------------------


def run(connection: str, code: str) -> str:
    """Execute code in the kernel; returns its printed output."""
    from jupyter_client.blocking import BlockingKernelClient

    client = BlockingKernelClient(connection_file=connection)
    client.load_connection_file()
    client.start_channels()
    out: list[str] = []

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(code, timeout=120, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(out)
    finally:
        client.stop_channels()
    return "".join(out)


def told_not_restored(connection: str, name: str) -> None:
    """The first cell's output says how to restore, and the namespace is still fresh."""
    out = run(connection, "print('first cell')")
    assert "%nbferry restore latest" in out, out
    assert kernel_value(connection, f"{name!r} in globals()") is False


def wait_value(connection: str, expr: str, timeout: float = 60) -> object:
    """The expression's value once the kernel has it (the restore runs as the kernel starts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return kernel_value(connection, expr)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def wait_for(fn: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := fn()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found
