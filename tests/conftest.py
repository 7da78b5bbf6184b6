"""Shared fixtures: a real S3 API (moto's server over HTTP on 127.0.0.1) and stores
of every kind nbferry supports, plus helpers to turn objects into pods."""

from __future__ import annotations

import os
import pickle
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never touch real AWS credentials or the developer's own key/store.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("NBFERRY_STORE", None)
os.environ["NBFERRY_SIGNING_KEY"] = "nbferry-test-suite-key"
# Store speeds measured by tests go to a throwaway folder, not the user's cache.
os.environ["NBFERRY_SPEED_CACHE"] = tempfile.mkdtemp(prefix="nbferry-speed-")

from nbferry.storage import PodData, Store, open_store


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on 127.0.0.1 (port picked by the OS), shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket name on the moto server."""
    import boto3

    name = f"nbf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_endpoint: str, s3_bucket: str) -> Store:
    return open_store(f"s3://{s3_bucket}/ckpts", {"endpoint_url": s3_endpoint})


@pytest.fixture
def file_store(tmp_path: Path) -> Store:
    return open_store((tmp_path / "store").as_uri())


@pytest.fixture
def memory_store() -> Store:
    return open_store(f"memory://nbf-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["file", "memory", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test against file://, memory:// and s3:// (moto over HTTP)."""
    return request.getfixturevalue(f"{request.param}_store")


def to_pod(pod_id: str, obj: object, names: list[str] | None = None) -> PodData:
    """Pickle protocol 5 with out-of-band buffers, as the agent does."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return PodData(pod_id, header, buffers, names or [pod_id])


def from_pod(pod: PodData) -> object:
    return pickle.loads(pod.header, buffers=pod.buffers)
