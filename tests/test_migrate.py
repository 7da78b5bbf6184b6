"""`nbferry migrate` between two "hosts": separate process trees with their own HOME,
Jupyter runtime folder and working directory, sharing only a moto S3 server.

Host A runs the source kernel and the CLI; host B runs `nbferry serve`. Every
process is real: kernels via jupyter_client, gRPC over sockets, S3 over HTTP.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from jupyter_client.blocking import BlockingKernelClient

from nbferry.migrator.kernels import Kernel, shutdown_kernel
from nbferry.migrator.service import LocalMigrator, MigratorClient
from nbferry.v1 import migrator_pb2 as mpb

NBFERRY = str(Path(sys.executable).with_name("nbferry"))
TOKEN = "migrator-test-token"


@dataclass
class Host:
    root: Path
    env: dict[str, str]

    @property
    def runtime(self) -> Path:
        return Path(self.env["JUPYTER_RUNTIME_DIR"])

    @property
    def work(self) -> Path:
        return self.root / "work"

    def nbferry(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [NBFERRY, *args],
            env=self.env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def make_host(root: Path, s3_endpoint: str) -> Host:
    for sub in ("home", "runtime", "work"):
        (root / sub).mkdir(parents=True)
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "NBFERRY_S3_ENDPOINT_URL": s3_endpoint,
        "NBFERRY_TOKEN": TOKEN,
        "PYTHONHASHSEED": "0",
    }
    env.pop("NBFERRY_SPEED_CACHE", None)  # each host measures the store itself
    return Host(root, env)


def Migrator(host: Host, store: str, *extra: str) -> LocalMigrator:
    """Host `host`'s migrator."""
    return LocalMigrator(store, host.work, *extra, env=host.env)


@pytest.fixture
def hosts(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[tuple[Host, Host, str]]:
    a = make_host(tmp_path / "A", s3_endpoint)
    b = make_host(tmp_path / "B", s3_endpoint)
    yield a, b, f"s3://{s3_bucket}/sessions"
    for host in (a, b):  # kernels the migrator started outlive it by design: stop them
        for conn in host.runtime.glob("kernel-*.json"):
            if conn.name.endswith(".nbferry.json"):
                continue
            with contextlib.suppress(Exception):
                shutdown_kernel(conn)
        kill_leftovers(host.runtime)


def kill_leftovers(runtime: Path) -> None:
    """SIGKILL any process still running with a connection file in `runtime` (e.g. a
    kernel a killed migrator was starting), so no test leaves kernels behind."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if str(runtime).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)


def source_kernel(host: Host) -> Kernel:
    kernel = Kernel(host.work, host.env, runtime_dir=host.runtime)
    kernel.run("%load_ext nbferry.agent")
    return kernel


def checkpoint_of_xs(host: Host, store: str, session: str) -> str:
    """The id of a checkpoint of a kernel holding xs = list(range(1000))."""
    with source_kernel(host) as src:
        src.run("xs = list(range(1000))")
        out = host.nbferry("checkpoint", "--kernel", src.kernel_id, "--store", store,
                           "--session", session, "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["checkpoint_id"]


def kernel_value(connection_file: str, expr: str) -> object:
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=30)
        code = f"__import__('json').dumps({expr})"
        reply = client.execute_interactive("", user_expressions={"r": code}, timeout=60)
        result = reply["content"]["user_expressions"]["r"]
        assert result["status"] == "ok", result
        return json.loads(ast.literal_eval(result["data"]["text/plain"]))
    finally:
        client.stop_channels()


SESSION = [
    "import numpy as np",
    "big = np.zeros((4000, 1000))",  # cheap to recompute: rerun on B
    "a = [1, 2, 3]\nb = [a, a]",  # aliasing that must survive
    "total = sum(i % 7 for i in range(2_000_000))",  # slow: stored
]


def test_migrate_moves_a_session_to_another_host(hosts: tuple[Host, Host, str]) -> None:
    a, b, store = hosts
    migrator = Migrator(b, store)
    try:
        with source_kernel(a) as src:
            for cell in SESSION:
                src.run(cell)
            out = a.nbferry(
                "migrate", "--kernel", src.kernel_id[:8], "--to", migrator.address,
                "--store", store, "--json",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            moved = json.loads(out.stdout)
            # The source keeps running, untouched.
            assert src.value("[len(b), b[0] is a]") == [2, True]
        assert {"checkpoint_id", "kernel_id", "connection_file", "loaded", "recomputed",
                "failed", "seconds"} <= moved.keys()  # fmt: skip
        assert "big" in moved["recomputed"] and "total" in moved["loaded"]
        assert moved["failed"] == [] and moved["lost"] == []
        conn = moved["connection_file"]
        assert conn.startswith(str(b.runtime)) and Path(conn).exists()
        got = kernel_value(conn, "[big.shape, float(big.sum()), b[0] is a is b[1], a, total]")
        assert got == [[4000, 1000], 0.0, True, [1, 2, 3], sum(i % 7 for i in range(2_000_000))]
    finally:
        log = migrator.stop()
    events = [json.loads(line)["msg"] for line in log.splitlines() if line.startswith("{")]
    assert events[0] == "listening" and "restore done" in events and events[-1] == "stopped"


def test_wrong_or_missing_token_is_rejected_and_nothing_starts(
    hosts: tuple[Host, Host, str],
) -> None:
    a, b, store = hosts
    migrator = Migrator(b, store, "--spare-kernels", "0")  # so that nothing at all starts
    try:
        for token in ("", "wrong"):
            with MigratorClient(migrator.address, token) as client:
                with pytest.raises(grpc.RpcError) as err:
                    list(client.restore_checkpoint(
                        mpb.RestoreCheckpointRequest(checkpoint="latest", session_id="x"),
                        timeout=30,
                    ))  # fmt: skip
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert list(b.runtime.glob("kernel-*")) == []
        # Health needs no token (probes), and says the service is up.
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(migrator.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="nbferry.v1.MigratorService"), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        bad = a.nbferry("restore", "latest", "--session", "x", "--to", migrator.address,
                        "--store", store)  # fmt: skip
        bad_env = a.env.copy()
        assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr, bad.stderr
        bad_env["NBFERRY_TOKEN"] = "nope"
        out = subprocess.run(
            [NBFERRY, "restore", "latest", "--session", "x", "--to", migrator.address],
            env=bad_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr
    finally:
        migrator.stop()


def test_a_busy_kernel_fails_cleanly(hosts: tuple[Host, Host, str]) -> None:
    a, b, store = hosts
    migrator = Migrator(b, store, "--spare-kernels", "0")  # so B must hold no kernel at all
    try:
        with source_kernel(a) as src:
            src.run("x = 1")
            src.kc.execute("import time\ntime.sleep(8)")
            time.sleep(0.5)
            out = a.nbferry(
                "migrate", "--kernel", src.kernel_id, "--to", migrator.address,
                "--store", store, "--timeout", "3",
            )  # fmt: skip
            assert out.returncode == 1 and "busy" in out.stderr, out.stderr
        assert list(b.runtime.glob("kernel-*")) == []
    finally:
        migrator.stop()


def test_a_target_without_a_needed_package_fails_and_the_source_is_untouched(
    hosts: tuple[Host, Host, str],
) -> None:
    a, b, store = hosts
    mods = a.root / "mods"
    mods.mkdir()
    (mods / "only_on_a.py").write_text("VALUE = 41\n")
    migrator = Migrator(b, store, "--spare-kernels", "0")
    try:
        with source_kernel(a) as src:
            src.run(f"import sys\nsys.path.insert(0, {str(mods)!r})\nimport only_on_a")
            src.run("val = only_on_a.VALUE + 1")
            shutil.rmtree(mods)  # host B cannot import it
            out = a.nbferry(
                "migrate", "--kernel", src.kernel_id, "--to", migrator.address, "--store", store,
            )  # fmt: skip
            assert out.returncode == 1
            assert "only_on_a" in out.stderr and "pip install" in out.stderr, out.stderr
            assert src.value("val") == 42
        assert [p for p in b.runtime.glob("kernel-*.json")] == []  # the failed kernel is gone
    finally:
        migrator.stop()


def test_a_migrator_killed_mid_restore_fails_clearly_and_a_retry_succeeds(
    hosts: tuple[Host, Host, str],
) -> None:
    a, b, store = hosts
    checkpoint_id = checkpoint_of_xs(a, store, "kill")
    migrator = Migrator(b, store, "--spare-kernels", "0")  # killed while it starts a kernel
    proc = subprocess.Popen(
        [NBFERRY, "restore", checkpoint_id, "--to", migrator.address, "--store", store, "--json"],
        env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.7)  # the migrator is starting the new kernel
    migrator.proc.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "UNAVAILABLE" in err, err
    migrator.stop()

    again = Migrator(b, store)
    try:
        out = a.nbferry("restore", checkpoint_id, "--to", again.address, "--store", store,
                        "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        restored = json.loads(out.stdout)
        assert "xs" in restored["loaded"] + restored["recomputed"]
        assert kernel_value(restored["connection_file"], "len(xs)") == 1000
    finally:
        again.stop()


def test_a_spare_kernel_takes_the_restore_and_a_dead_spare_is_replaced(
    hosts: tuple[Host, Host, str],
) -> None:
    from nbferry.migrator.agents import running_agents

    a, b, store = hosts

    def spares(exclude: set[str]) -> list:
        deadline = time.monotonic() + 60
        while not (found := [x for x in running_agents(b.runtime) if x.kernel_id not in exclude]):
            assert time.monotonic() < deadline, "no spare kernel started"
            time.sleep(0.1)
        return found

    migrator = Migrator(b, store)
    restored: set[str] = set()
    try:
        [spare] = spares(restored)  # started with the migrator, before any request
        with source_kernel(a) as src:
            src.run("x = 41")
            for expect_spare in (True, False):
                out = a.nbferry("migrate", "--kernel", src.kernel_id, "--to", migrator.address,
                                "--store", store, "--json")  # fmt: skip
                assert out.returncode == 0, out.stderr
                moved = json.loads(out.stdout)
                assert (moved["kernel_id"] == spare.kernel_id) is expect_spare
                assert kernel_value(moved["connection_file"], "x + 1") == 42
                restored.add(moved["kernel_id"])
                # A replacement starts after the restore; a spare that dies is skipped.
                [spare] = spares(restored)
                # `nbferry kernels` tells the spare (nothing of the user's) from the rest
                listed = b.nbferry("kernels", "--json")
                assert listed.returncode == 0, listed.stderr
                waiting = {k["kernel_id"]: k["awaiting_restore"]
                           for k in json.loads(listed.stdout)["kernels"]}  # fmt: skip
                assert waiting == {**{k: False for k in restored}, spare.kernel_id: True}
                assert "spare" in b.nbferry("kernels").stdout
                if expect_spare:
                    os.kill(spare.pid, signal.SIGKILL)
                    time.sleep(0.5)
    finally:
        log = migrator.stop()
    assert '"restore done"' in log
    # Stopping the migrator stops its spare; restored kernels are the user's and stay.
    deadline = time.monotonic() + 30
    while {x.kernel_id for x in running_agents(b.runtime)} != restored:
        assert time.monotonic() < deadline, running_agents(b.runtime)
        time.sleep(0.2)


def test_store_options_reach_every_hop(hosts: tuple[Host, Host, str], s3_endpoint: str) -> None:
    a, b, store = hosts
    for host in (a, b):  # the endpoint comes only from --store-option now
        host.env.pop("NBFERRY_S3_ENDPOINT_URL")
    option = f"endpoint_url={s3_endpoint}"
    migrator = Migrator(b, store, "--store-option", option)
    try:
        with source_kernel(a) as src:
            src.run("xs = [1, 2, 3]")
            out = a.nbferry(
                "migrate", "--kernel", src.kernel_id, "--to", migrator.address,
                "--store", store, "--store-option", option, "--json",
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
        moved = json.loads(out.stdout)
        assert kernel_value(moved["connection_file"], "xs") == [1, 2, 3]
        with MigratorClient(migrator.address, TOKEN) as client:  # the migrator's own options
            listed = client.list_checkpoints(mpb.ListCheckpointsRequest())
        assert moved["checkpoint_id"] in [c.checkpoint_id for c in listed.checkpoints]
    finally:
        migrator.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_migrate_into_a_jupyter_server_shows_the_session_there(
    hosts: tuple[Host, Host, str],
) -> None:
    from nbferry.migrator.jupyter import JupyterServer

    a, b, store = hosts
    port = _free_port()
    b.env["JUPYTER_TOKEN"] = "jupyter-test-token"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", "--allow-root",
         f"--ServerApp.root_dir={b.work}"],
        env=b.env, cwd=b.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    jupyter = JupyterServer(f"http://127.0.0.1:{port}", "jupyter-test-token")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                jupyter.sessions()
                break
            except Exception:
                assert time.monotonic() < deadline, "jupyter server did not start"
                time.sleep(0.2)
        migrator = Migrator(b, store, "--jupyter-url", jupyter.url)
        try:
            a.env["JPY_SESSION_NAME"] = "analysis.ipynb"  # what Jupyter tells a notebook kernel
            with source_kernel(a) as src:
                src.run("xs = list(range(10))")
                out = a.nbferry("migrate", "--kernel", src.kernel_id, "--to", migrator.address,
                                "--store", store, "--json")  # fmt: skip
                assert out.returncode == 0, out.stderr
            moved = json.loads(out.stdout)
            sessions = {s["kernel"]["id"]: s["path"] for s in jupyter.sessions()}
            assert sessions.get(moved["kernel_id"]) == "analysis.ipynb"
            assert kernel_value(moved["connection_file"], "sum(xs)") == 45
        finally:
            migrator.stop()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_handed_over_kernel_keeps_its_connection_file(tmp_path: Path) -> None:
    """jupyter_client's KernelManager deletes the connection file when it is garbage
    collected; a kernel given to the user must stay reachable after that."""
    import gc

    from nbferry.migrator.launch import start_kernel

    kernel = start_kernel(tmp_path)
    connection = Path(kernel.connection_file)
    try:
        kernel.hand_over()
        del kernel
        gc.collect()
        assert connection.exists()
        assert kernel_value(str(connection), "1 + 1") == 2
    finally:
        shutdown_kernel(connection)


STARTER = """
import json, sys, time
from nbferry.migrator.launch import restore_into_new_kernel, start_kernel
from nbferry.v1 import agent_pb2 as apb
cwd, checkpoint, store, how = sys.argv[1:5]
if how == "rpc":  # as the migrator does
    kernel, _ = restore_into_new_kernel(
        cwd, apb.RestoreRequest(checkpoint=checkpoint, store_url=store)
    )
else:
    kernel = start_kernel(cwd)
if how == "magic":  # someone restores by hand into the kernel
    from jupyter_client import BlockingKernelClient
    client = BlockingKernelClient(connection_file=kernel.connection_file)
    client.load_connection_file()
    client.start_channels()
    code = f"r = %nbferry restore {checkpoint} --store {store}"
    reply = client.execute_interactive(code, timeout=120, output_hook=lambda msg: None)
    assert reply["content"]["status"] == "ok", reply["content"]
    kernel.hand_over()
print(json.dumps({"pid": kernel.pid, "connection_file": kernel.connection_file}), flush=True)
time.sleep(600)
"""


def _start_and_kill_starter(
    host: Host, checkpoint: str = "", store: str = "", how: str = ""
) -> dict:
    """Run a process that starts a kernel (and restores into it `how`), then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(host.work), checkpoint, store, how],
        env=host.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()
    return json.loads(line)


def test_a_kernel_started_for_a_restore_stops_when_its_starter_dies_first(
    hosts: tuple[Host, Host, str],
) -> None:
    """A spare, or a kernel whose migrator was SIGKILLed before the restore came,
    would otherwise idle forever: nobody knows of it."""
    from nbferry.agent.caretaker import alive
    from nbferry.migrator.agents import running_agents

    _, b, _ = hosts
    started = _start_and_kill_starter(b)
    deadline = time.monotonic() + 30
    while alive(started["pid"]):
        assert time.monotonic() < deadline, "the orphaned kernel is still running"
        time.sleep(0.2)
    assert running_agents(b.runtime) == []
    assert not Path(started["connection_file"]).exists()
    log = Path(started["connection_file"]).with_suffix(".log").read_text()
    assert "no restore came; shutting the kernel down" in log


@pytest.mark.parametrize("how", ["rpc", "magic"])
def test_a_restored_kernel_outlives_its_starter(hosts: tuple[Host, Host, str], how: str) -> None:
    a, b, store = hosts
    checkpoint_id = checkpoint_of_xs(a, store, "kept")
    started = _start_and_kill_starter(b, checkpoint_id, store, how)
    try:
        time.sleep(3)  # three of the caretaker's polls
        assert kernel_value(started["connection_file"], "len(xs)") == 1000
    finally:
        shutdown_kernel(Path(started["connection_file"]))


def test_a_restore_whose_caller_gave_up_leaves_no_kernel(hosts: tuple[Host, Host, str]) -> None:
    """The client's deadline passes while the migrator starts the kernel: the kernel,
    which nobody would ever learn of, is stopped when the restore finishes."""
    a, b, store = hosts
    with source_kernel(a) as src:
        src.run("xs = list(range(1000))")
        out = a.nbferry("checkpoint", "--kernel", src.kernel_id, "--store", store,
                        "--session", "gone", "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
    migrator = Migrator(b, store, "--spare-kernels", "0")  # a cold kernel: ~1 s to start
    try:
        with MigratorClient(migrator.address, TOKEN) as client:
            with pytest.raises(grpc.RpcError) as err:
                list(client.restore_checkpoint(
                    mpb.RestoreCheckpointRequest(checkpoint="latest", session_id="gone"),
                    timeout=0.3,
                ))  # fmt: skip
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 60
        while '"restore abandoned"' not in migrator.log_path.read_text():
            assert time.monotonic() < deadline, migrator.log_path.read_text()
            time.sleep(0.2)
        time.sleep(1)
        assert not [p for p in b.runtime.glob("kernel-*.json") if "." not in p.stem]
        running = [
            p for p in Path("/proc").glob("[0-9]*")
            if str(b.runtime).encode() in _cmdline(p)
        ]  # fmt: skip
        assert running == []
    finally:
        migrator.stop()


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
