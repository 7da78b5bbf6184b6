"""`nbferry migrate` to a host in its own network namespace.

Host B's migrator (and every kernel it starts) runs under `ip netns exec` in a
namespace joined to this one by a veth pair; the moto S3 server listens on the
veth address, the only network both sides share. Where `ip netns` is not
permitted, the same migration runs in one namespace instead (the separate
process trees of test_migrate.py), so the test still checks the move.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from test_migrate import Host, kill_leftovers, make_host, source_kernel

from nbferry.migrator.service import LocalMigrator

SUBNET = "10.213.{}.{}"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str] | None]:
    """(namespace, our address, its address), or None where namespaces are not permitted."""
    if shutil.which("ip") is None:
        yield None
        return
    name = f"nbf{uuid.uuid4().hex[:8]}"
    octet = str(int(name[3:5], 16))
    ours, theirs = SUBNET.format(octet, 1), SUBNET.format(octet, 2)
    here, there = f"va{name[3:11]}", f"vb{name[3:11]}"
    steps = [
        ("netns", "add", name),
        ("link", "add", here, "type", "veth", "peer", "name", there),
        ("link", "set", there, "netns", name),
        ("addr", "add", f"{ours}/24", "dev", here),
        ("link", "set", here, "up"),
        ("netns", "exec", name, "ip", "addr", "add", f"{theirs}/24", "dev", there),
        ("netns", "exec", name, "ip", "link", "set", there, "up"),
        ("netns", "exec", name, "ip", "link", "set", "lo", "up"),
    ]
    ok = all(_ip(*step).returncode == 0 for step in steps)
    try:
        yield (name, ours, theirs) if ok else None
    finally:
        _ip("netns", "del", name)  # also removes the veth pair
        _ip("link", "del", here)


_SHUTDOWN = "import sys; from nbferry.migrator.kernels import shutdown_kernel as s; s(sys.argv[1])"


def _value_on_b(prefix: list[str], connection_file: str, expr: str) -> object:
    """kernel_value(), run in host B's network namespace."""
    code = (
        "import json, sys; from test_migrate import kernel_value; "
        "print(json.dumps(kernel_value(sys.argv[1], sys.argv[2])))"
    )
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code, connection_file, expr],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_migrate_to_a_host_in_another_network_namespace(
    tmp_path: Path, netns: tuple[str, str, str] | None
) -> None:
    ours, theirs, prefix = "127.0.0.1", "127.0.0.1", []
    if netns is not None:
        name, ours, theirs = netns
        prefix = ["ip", "netns", "exec", name]
    server = ThreadedMotoServer(ip_address=ours, port=0)
    server.start()
    try:
        host_ip, port = server.get_host_and_port()
        endpoint = f"http://{host_ip}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="netns"
        )
        a: Host = make_host(tmp_path / "A", endpoint)
        b: Host = make_host(tmp_path / "B", endpoint)
        store = "s3://netns/sessions"
        migrator = LocalMigrator(store, b.work, env=b.env, listen=f"{theirs}:0", prefix=prefix)
        try:
            address = migrator.address
            assert address.startswith(theirs)
            with source_kernel(a) as src:
                src.run("import numpy as np\nbig = np.zeros((2000, 1000))\nxs = [1, 2]\nys = [xs]")
                out = a.nbferry("migrate", "--kernel", src.kernel_id, "--to", address,
                                "--store", store, "--json")  # fmt: skip
                assert out.returncode == 0, out.stderr
            moved = json.loads(out.stdout)
            # Attach as a user on host B would: from inside its namespace.
            got = _value_on_b(prefix, moved["connection_file"],
                              "[big.shape, ys[0] is xs, __import__('os').getpid()]")  # fmt: skip
            assert got[:2] == [[2000, 1000], True]
            if netns is not None:  # the restored kernel really lives in the other namespace
                assert os.readlink(f"/proc/{got[2]}/ns/net") != os.readlink("/proc/self/ns/net")
        finally:
            migrator.stop()
            for conn in b.runtime.glob("kernel-*.json"):
                if not conn.name.endswith(".nbferry.json"):
                    subprocess.run(  # from inside the namespace, where its ports are
                        [*prefix, sys.executable, "-c", _SHUTDOWN, str(conn)],
                        timeout=60,
                        check=False,
                    )
            kill_leftovers(b.runtime)
    finally:
        server.stop()
