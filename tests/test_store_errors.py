"""Bad input and broken stores: retries for transient errors, one clear line for the rest."""

from __future__ import annotations

import time

import numpy as np
import pytest
from faulty_proxy import FaultyProxy

from conftest import from_pod, to_pod
from nbferry.storage import (
    CheckpointNotFoundError,
    StoreAccessError,
    open_store,
)
from nbferry.storage.retry import RetryPolicy, is_transient

FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05)


def _pods() -> list:
    big = np.random.default_rng(1).random(1_500_000)  # ~11 MiB: three big chunks
    return [to_pod("p0", big, ["big"]), to_pod("p1", {"k": list(range(50))}, ["small"])]


def test_transient_s3_errors_are_retried(s3_endpoint: str, s3_bucket: str) -> None:
    with FaultyProxy(s3_endpoint) as proxy:
        store = open_store(f"s3://{s3_bucket}/x", {"endpoint_url": proxy.url}, retry=FAST_RETRY)
        put_blob = proxy.fail("PUT", "/blobs/", 503, times=4)
        put_pack = proxy.fail("PUT", "/packs/", 500, times=2)
        put_manifest = proxy.fail("PUT", "/sessions/", 503, times=2)
        result = store.write_checkpoint("flaky", _pods())
        get_blob = proxy.fail("GET", "/blobs/", 503, times=3)
        pods = store.read_pods(store.read_manifest(result.checkpoint_id))
    for rule in (put_blob, put_pack, put_manifest, get_blob):
        assert rule.fired == rule.times, rule
    np.testing.assert_array_equal(from_pod(pods["p0"]), from_pod(_pods()[0]))
    assert [c.checkpoint_id for c in store.list_checkpoints()] == [result.checkpoint_id]


def test_permanent_s3_errors_are_not_retried(s3_endpoint: str, s3_bucket: str) -> None:
    with FaultyProxy(s3_endpoint) as proxy:
        store = open_store(f"s3://{s3_bucket}/x", {"endpoint_url": proxy.url}, retry=FAST_RETRY)
        proxy.fail("PUT", "/blobs/", 403, times=100)
        with pytest.raises(StoreAccessError) as err:
            store.write_checkpoint("denied", _pods())
        denied = [r for r in proxy.requests if r[2] == 403]
    message = str(err.value)
    assert "permission denied" in message and "credentials" in message
    assert f"s3://{s3_bucket}/x" in message
    # One refused request per blob at most: no retry loop on a 403.
    assert 1 <= len(denied) <= 3
    assert store.list_checkpoints() == []  # nothing committed


def test_missing_bucket_names_the_fix(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket-nbf/p", {"endpoint_url": s3_endpoint})
    with pytest.raises(StoreAccessError, match=r"bucket does not exist.*create it or fix the URL"):
        store.write_checkpoint("s", _pods())


def test_missing_credentials_names_the_fix(s3_endpoint: str, s3_bucket: str, monkeypatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store(
        f"s3://{s3_bucket}/p", {"endpoint_url": s3_endpoint, "skip_instance_cache": True}
    )
    with pytest.raises(StoreAccessError, match=r"no AWS credentials found.*AWS_PROFILE"):
        store.list_checkpoints()


def test_endpoint_from_environment(s3_endpoint: str, s3_bucket: str, monkeypatch) -> None:
    monkeypatch.setenv("NBFERRY_S3_ENDPOINT_URL", s3_endpoint)
    store = open_store(f"s3://{s3_bucket}/env")
    result = store.write_checkpoint("env", _pods()[1:])
    assert store.resolve(result.checkpoint_id[:12]).checkpoint_id == result.checkpoint_id


def test_unknown_url_scheme() -> None:
    with pytest.raises(StoreAccessError, match="Use file:///path, memory://name, s3://"):
        open_store("nosuchproto://bucket/x")


def test_store_path_that_is_a_file(tmp_path) -> None:
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    store = open_store((blocker / "inner").as_uri())
    with pytest.raises(StoreAccessError, match="exists and is not a folder: choose another"):
        store.write_checkpoint("s", _pods())
    assert blocker.read_text() == "not a folder"


def test_unknown_and_ambiguous_ids(file_store) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint 'ZZZZ'.*nbferry list"):
        file_store.resolve("ZZZZ")
    with pytest.raises(CheckpointNotFoundError, match="not a checkpoint id"):
        file_store.resolve("not-an-id!")
    with pytest.raises(CheckpointNotFoundError, match="'latest' needs a session"):
        file_store.resolve("latest")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint for session 'nobody'"):
        file_store.resolve("latest", "nobody")


def test_invalid_session_id(file_store) -> None:
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 300):
        with pytest.raises(ValueError, match="invalid session id"):
            file_store.write_checkpoint(bad, _pods())


def test_retry_policy_classification() -> None:
    import errno

    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert is_transient(OSError(errno.EBUSY, "SlowDown"))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("x"))
    assert not is_transient(ValueError("x"))
    calls = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert FAST_RETRY.call(flaky, "op") == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(PermissionError):
        FAST_RETRY.call(lambda: calls.append(1) or (_ for _ in ()).throw(PermissionError()), "op")
    assert len(calls) == 1
