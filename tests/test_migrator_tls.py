"""The migrator over TLS and mutual TLS, with certificates made for the test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nbferry.migrator.service import MigratorClient
from nbferry.v1 import migrator_pb2 as mpb

NBFERRY = str(Path(sys.executable).with_name("nbferry"))
TOKEN = "tls-test-token"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, bytes]:
    ca_key = _key()
    ca = _cert("nbferry test CA", ca_key, ca=True)
    server_key, client_key = _key(), _key()
    files = {
        "ca": _pem(ca),
        "server.crt": _pem(_cert("migrator", server_key, (ca, ca_key), ip="127.0.0.1")),
        "server.key": _pem(server_key),
        "client.crt": _pem(_cert("client", client_key, (ca, ca_key))),
        "client.key": _pem(client_key),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return files


@pytest.fixture
def migrator(tmp_path: Path, pki: dict[str, bytes]) -> Iterator[str]:
    proc = subprocess.Popen(
        [NBFERRY, "serve", "--listen", "127.0.0.1:0", "--store", (tmp_path / "s").as_uri(),
         "--tls-cert", str(tmp_path / "server.crt"), "--tls-key", str(tmp_path / "server.key"),
         "--tls-client-ca", str(tmp_path / "ca")],
        env={**os.environ, "NBFERRY_TOKEN": TOKEN},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line, "migrator did not start"
    yield json.loads(line)["listening"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def test_mutual_tls_admits_only_clients_with_a_certificate(
    migrator: str, pki: dict[str, bytes]
) -> None:
    request = mpb.ListCheckpointsRequest()
    with MigratorClient(
        migrator, TOKEN, ca=pki["ca"], cert=pki["client.crt"], key=pki["client.key"]
    ) as client:
        assert list(client.list_checkpoints(request).checkpoints) == []
    with MigratorClient(migrator, TOKEN, ca=pki["ca"]) as client, pytest.raises(grpc.RpcError):
        client.list_checkpoints(request, timeout=5)  # no client certificate
    with MigratorClient(migrator, TOKEN) as client, pytest.raises(grpc.RpcError):
        client.list_checkpoints(request, timeout=5)  # plaintext
    with MigratorClient(
        migrator, "wrong", ca=pki["ca"], cert=pki["client.crt"], key=pki["client.key"]
    ) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.list_checkpoints(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
