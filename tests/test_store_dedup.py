"""Deduplication, packing and compression of the pod store, measured on real stores.

Object-store traffic is checked without mocks: by listing the keys under blobs/
and packs/ before and after a write and, on s3://, by counting the objects in the
moto bucket (boto3) and the HTTP requests the moto server logged (werkzeug).
"""

from __future__ import annotations

import logging
import re

import blake3
import numpy as np
import pytest

from conftest import from_pod, to_pod
from nbferry.storage import Store
from nbferry.storage.store import PACK_TARGET, PACK_THRESHOLD
from nbferry.v1 import manifest_pb2 as pb

MiB = 1 << 20
KiB = 1 << 10


def data_keys(store: Store) -> set[str]:
    """Every blob and pack in the store."""
    return set(store.backend.list("blobs/")) | set(store.backend.list("packs/"))


def digest(arr: np.ndarray) -> bytes:
    """BLAKE3 of an array's bytes, without copying them."""
    return blake3.blake3(memoryview(arr).cast("B")).digest()


def read_back(store: Store, checkpoint_id: str) -> dict[str, object]:
    pods = store.read_pods(store.read_manifest(checkpoint_id))
    return {pod_id: from_pod(pod) for pod_id, pod in pods.items()}


def chunk_refs(manifest: pb.Manifest) -> list[pb.ChunkRef]:
    return [c for p in manifest.pods for b in [p.header, *p.buffers] for c in b.chunks]


def bucket_keys(endpoint: str, bucket: str, prefix: str = "ckpts/") -> set[str]:
    import boto3

    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    return {
        o["Key"]
        for page in pages.paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    }


_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/\S*) HTTP/')


def moto_requests(records: list[logging.LogRecord], bucket: str) -> list[tuple[str, str]]:
    """(method, path) of each request the moto server logged for `bucket`."""
    found = []
    for rec in records:
        if rec.name == "werkzeug":
            m = _REQUEST.search(rec.getMessage())
            if m and m.group(2).startswith(f"/{bucket}"):
                found.append((m.group(1), m.group(2)))
    return found


@pytest.fixture(params=["file", "s3"])
def big_store(request: pytest.FixtureRequest) -> Store:
    """file:// and s3:// only, for the tests that move hundreds of MiB."""
    return request.getfixturevalue(f"{request.param}_store")


# -- unchanged data ------------------------------------------------------------------


def test_unchanged_second_checkpoint_uploads_only_a_manifest(store):
    rng = np.random.default_rng(10)
    pods = [
        to_pod("arrays", {"big": rng.random(12 * MiB // 8), "small": np.arange(1000)}),
        to_pod("meta", {"name": "run-1", "params": [1, 2.5, "x"]}),
    ]
    r1 = store.write_checkpoint("same", pods)
    assert r1.chunks_uploaded == r1.chunks > 3
    keys1 = data_keys(store)
    sessions1 = set(store.backend.list("sessions/"))

    r2 = store.write_checkpoint("same", pods)
    assert r2.parent_checkpoint_id == r1.checkpoint_id
    assert r2.chunks == r1.chunks
    assert r2.chunks_uploaded == 0
    assert r2.uploaded_bytes == 0
    assert r2.blobs_written == 0
    assert r2.raw_bytes == r1.raw_bytes
    assert r2.reused_raw_bytes == r2.raw_bytes
    assert r2.stored_bytes == r1.stored_bytes
    assert data_keys(store) == keys1
    new = set(store.backend.list("sessions/")) - sessions1
    assert new == {f"sessions/same/{r2.checkpoint_id}.ckpt"}

    # The new manifest points at exactly the chunks the first one wrote.
    m1, m2 = store.read_manifest(r1.checkpoint_id), store.read_manifest(r2.checkpoint_id)
    assert chunk_refs(m2) == chunk_refs(m1)
    got = read_back(store, r2.checkpoint_id)
    np.testing.assert_array_equal(got["arrays"]["big"], from_pod(pods[0])["big"])
    assert got["meta"] == {"name": "run-1", "params": [1, 2.5, "x"]}


# -- a small change in a large array ---------------------------------------------------


def test_one_mib_change_in_256_mib_array_uploads_about_one_chunk(big_store):
    store = big_store
    arr = np.random.default_rng(0).random(256 * MiB // 8)
    original = digest(arr)  # instead of a 256 MiB copy
    r1 = store.write_checkpoint("big", [to_pod("p", arr, ["arr"])])
    assert r1.chunks_uploaded == 256 * MiB // store.chunk_size + 1  # + the pickle header
    keys1 = data_keys(store)

    # Overwrite 1 MiB with fresh random data, off any chunk boundary.
    start = (100 * MiB + 40 * KiB) // 8
    arr[start : start + MiB // 8] = np.random.default_rng(1).random(MiB // 8)
    modified = digest(arr)
    assert modified != original
    r2 = store.write_checkpoint("big", [to_pod("p", arr, ["arr"])])
    assert r2.parent_checkpoint_id == r1.checkpoint_id
    assert 1 <= r2.chunks_uploaded <= 2
    assert r2.uploaded_bytes <= 2 * store.chunk_size + 64
    assert r2.reused_raw_bytes >= r2.raw_bytes - 2 * store.chunk_size
    assert r2.blobs_written == r2.chunks_uploaded
    added = data_keys(store) - keys1
    assert len(added) == r2.chunks_uploaded
    assert all(k.startswith("blobs/") for k in added)

    new = from_pod(store.read_pods(store.read_manifest(r2.checkpoint_id))["p"])
    assert new.dtype == arr.dtype and new.shape == arr.shape
    assert np.array_equal(new, arr)
    assert digest(new) == modified
    del new
    old = from_pod(store.read_pods(store.read_manifest(r1.checkpoint_id))["p"])
    assert old.dtype == arr.dtype and old.shape == arr.shape
    assert digest(old) == original
    assert not np.array_equal(old[start : start + MiB // 8], arr[start : start + MiB // 8])
    assert np.array_equal(old[:start], arr[:start])


# -- identical chunks within one checkpoint ----------------------------------------------


def test_identical_chunks_in_one_checkpoint_are_stored_once(store):
    zeros = np.zeros(64 * MiB // 8)
    r = store.write_checkpoint("zeros", [to_pod("z", zeros)])
    manifest = store.read_manifest(r.checkpoint_id)
    (buf,) = manifest.pods[0].buffers
    assert len(buf.chunks) == 16
    assert len({c.hash for c in buf.chunks}) == 1
    assert r.chunks == 2  # the zero chunk and the pickle header
    assert r.chunks_uploaded == 2
    assert r.raw_bytes == zeros.nbytes + manifest.pods[0].header.size
    assert r.stored_bytes < 64 * KiB
    assert r.uploaded_bytes < 64 * KiB
    assert len(store.backend.list("blobs/")) == 1
    assert len(store.backend.list("packs/")) == 1
    got = read_back(store, r.checkpoint_id)["z"]
    assert got.shape == zeros.shape and got.flags.writeable and not got.any()

    # Incompressible data repeated: one 4 MiB chunk, stored raw, once.
    block = np.random.default_rng(11).random(store.chunk_size // 8)
    tiled = np.tile(block, 4)
    r = store.write_checkpoint("tiled", [to_pod("t", {"tiled": tiled, "again": tiled.copy()})])
    assert r.raw_bytes >= 8 * store.chunk_size
    assert r.chunks_uploaded == 2  # one data chunk + the header
    assert store.chunk_size < r.stored_bytes < store.chunk_size + 4 * KiB
    assert len(store.backend.list("blobs/")) == 2
    got = read_back(store, r.checkpoint_id)["t"]
    np.testing.assert_array_equal(got["tiled"], tiled)
    np.testing.assert_array_equal(got["again"], tiled)


# -- across sessions ---------------------------------------------------------------------


def test_other_session_reuses_big_chunks_already_in_the_store(store):
    arr = np.random.default_rng(12).random(24 * MiB // 8)
    ra = store.write_checkpoint("session-a", [to_pod("p", arr, ["x"])])
    blobs = set(store.backend.list("blobs/"))
    assert len(blobs) == 6

    rb = store.write_checkpoint("session-b", [to_pod("p", arr, ["x"])])
    assert rb.parent_checkpoint_id == ""  # nothing in common but the store
    assert set(store.backend.list("blobs/")) == blobs
    assert rb.chunks == ra.chunks == 7
    assert rb.chunks_uploaded <= 1  # at most the small pickle header, into a pack
    assert rb.uploaded_bytes < 4 * KiB
    assert rb.reused_raw_bytes >= arr.nbytes
    assert rb.stored_bytes == ra.stored_bytes
    np.testing.assert_array_equal(read_back(store, rb.checkpoint_id)["p"], arr)

    # The same holds within one session when the parent link is dropped.
    rc = store.write_checkpoint("session-a", [to_pod("p", arr, ["x"])], parent=None)
    assert rc.chunks_uploaded <= 1
    assert set(store.backend.list("blobs/")) == blobs
    np.testing.assert_array_equal(read_back(store, rc.checkpoint_id)["p"], arr)


# -- many small variables -----------------------------------------------------------------


def test_ten_thousand_small_pods_cost_few_objects(store, request, caplog):
    values = {}
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            values[f"v{i}"] = {"i": i, "name": f"item-{i}", "tags": [i % 7, "t"]}
        elif kind == 1:
            values[f"v{i}"] = f"string value number {i}"
        elif kind == 2:
            values[f"v{i}"] = i * 1_000_003
        else:
            values[f"v{i}"] = (i, float(i) / 3, None, b"b" * (i % 50))
    pods = [to_pod(f"pod{i}", v, [name]) for i, (name, v) in enumerate(values.items())]

    s3 = store.url.startswith("s3://")
    if s3:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        objects_before = bucket_keys(endpoint, bucket)
        caplog.set_level(logging.INFO, logger="werkzeug")
        caplog.clear()
    keys_before = data_keys(store)

    r = store.write_checkpoint("many", pods)

    if s3:
        requests = moto_requests(caplog.records, bucket)
        puts = [path for method, path in requests if method == "PUT"]
        assert len(puts) >= 2, f"expected a pack and a manifest PUT, saw {requests}"
        assert len(puts) <= 6, puts
        assert len(requests) <= 15, requests
        new_objects = bucket_keys(endpoint, bucket) - objects_before
        assert 2 <= len(new_objects) <= 6, new_objects
        assert f"ckpts/sessions/many/{r.checkpoint_id}.ckpt" in new_objects
    assert r.chunks_uploaded == r.chunks == 10_000
    assert r.raw_bytes < PACK_TARGET  # so it all fits in one pack
    assert 1 <= r.blobs_written <= 5
    added = data_keys(store) - keys_before
    assert len(added) == r.blobs_written
    assert all(k.startswith("packs/") for k in added)

    manifest = store.read_manifest(r.checkpoint_id)
    assert len(manifest.pods) == 10_000
    assert len(manifest.variables) == 10_000
    assert manifest.variables["v1234"].pod_id == "pod1234"
    got = store.read_pods(manifest)
    assert len(got) == 10_000
    restored = {pod.variables[0]: from_pod(pod) for pod in got.values()}
    assert restored == values

    # A subset of pods is read back from the same pack.
    few = store.read_pods(manifest, pod_ids=["pod0", "pod9999"])
    assert from_pod(few["pod9999"]) == values["v9999"]
    assert from_pod(few["pod0"]) == values["v0"]


def test_small_chunks_are_packed_and_packs_are_split_at_the_target(memory_store):
    store = memory_store
    rng = np.random.default_rng(13)
    # ~20 MiB of incompressible 200 KiB buffers: all below the pack threshold.
    arrays = [rng.random(200 * KiB // 8) for _ in range(100)]
    r = store.write_checkpoint("packs", [to_pod("p", arrays)])
    assert all(a.nbytes < PACK_THRESHOLD for a in arrays)
    assert store.backend.list("blobs/") == []
    packs = store.backend.list("packs/")
    assert len(packs) == r.blobs_written
    assert r.raw_bytes // PACK_TARGET <= len(packs) <= r.raw_bytes // PACK_TARGET + 1
    got = read_back(store, r.checkpoint_id)["p"]
    for g, a in zip(got, arrays, strict=True):
        np.testing.assert_array_equal(g, a)


# -- compression ----------------------------------------------------------------------------


def test_codecs_zstd_for_compressible_raw_for_random(store):
    compressible = np.resize(np.arange(100, dtype=np.int64), 32 * MiB // 8)  # arange % 100
    r = store.write_checkpoint("codec", [to_pod("c", compressible)])
    manifest = store.read_manifest(r.checkpoint_id)
    (buf,) = manifest.pods[0].buffers
    assert len(buf.chunks) == 8
    assert {c.codec for c in buf.chunks} == {pb.CODEC_ZSTD}
    assert all(c.stored_size < c.raw_size / 5 for c in buf.chunks)
    # zstd level 1 finds the 8-byte-apart matches, not the 800-byte period (~7x).
    assert r.stored_bytes < r.raw_bytes / 5
    assert r.uploaded_bytes == r.stored_bytes
    assert np.array_equal(read_back(store, r.checkpoint_id)["c"], compressible)

    # Low-entropy bytes compress by orders of magnitude.
    codes = np.resize(np.arange(100, dtype=np.int8), 16 * MiB)
    r = store.write_checkpoint("codec", [to_pod("b", codes)])
    assert r.stored_bytes < r.raw_bytes / 100
    assert np.array_equal(read_back(store, r.checkpoint_id)["b"], codes)

    noise = np.random.default_rng(14).random(8 * MiB // 8)
    small_noise = np.random.default_rng(15).random(PACK_THRESHOLD // 8 + 1)
    r = store.write_checkpoint("codec", [to_pod("r", {"noise": noise, "small": small_noise})])
    manifest = store.read_manifest(r.checkpoint_id)
    buffers = manifest.pods[0].buffers
    assert len(buffers) == 2
    for buf in buffers:
        assert buf.chunks
        for c in buf.chunks:
            assert c.codec == pb.CODEC_RAW
            assert c.stored_size == c.raw_size + 1  # the codec tag byte
    got = read_back(store, r.checkpoint_id)["r"]
    np.testing.assert_array_equal(got["noise"], noise)
    np.testing.assert_array_equal(got["small"], small_noise)


def test_small_int64_values_compress_tenfold(memory_store):
    compressible = np.resize(np.arange(100, dtype=np.int64), 32 * MiB // 8)  # arange % 100
    r = memory_store.write_checkpoint("codec", [to_pod("c", compressible)])
    assert r.stored_bytes < r.raw_bytes / 10


def test_chunk_hashes_from_the_caller_are_used_not_recomputed(memory_store):
    """The agent hashes each pod's chunks once for its digests and hands them
    over; the store uses them as the chunks' addresses. A list shaped unlike the
    pod's chunks is refused before anything is written."""
    import dataclasses

    from nbferry.storage import chunks as ck

    arr = np.arange(3 * MiB, dtype=np.int64)  # 24 MiB: six chunks
    pod = to_pod("p0", arr, ["arr"])
    parts = ck.buffer_chunks([pod.header, *pod.buffers])
    hashes = [ck.chunk_hashes(chunks) for chunks in parts]
    assert sum(map(len, hashes)) == 1 + 6

    plain = memory_store.read_manifest(memory_store.write_checkpoint("s", [pod]).checkpoint_id)
    given = dataclasses.replace(pod, chunk_hashes=hashes)
    cid = memory_store.write_checkpoint("s", [given]).checkpoint_id
    manifest = memory_store.read_manifest(cid)
    assert [c.hash for c in manifest.pods[0].buffers[0].chunks] == hashes[1]
    assert manifest.pods[0] == plain.pods[0]
    assert np.array_equal(read_back(memory_store, cid)["p0"], arr)

    # The store trusts what it is given: a wrong hash is caught on read, by verification.
    bad = dataclasses.replace(pod, chunk_hashes=[hashes[0], [b"\0" * 32, *hashes[1][1:]]])
    cid = memory_store.write_checkpoint("s", [bad]).checkpoint_id
    with pytest.raises(Exception, match="does not match its hash"):
        read_back(memory_store, cid)

    before = memory_store.list_checkpoints()
    for wrong in ([hashes[0]], [hashes[0], hashes[1][:-1]]):
        with pytest.raises(ValueError, match="chunk_hashes do not match its buffers"):
            memory_store.write_checkpoint("s", [dataclasses.replace(pod, chunk_hashes=wrong)])
    assert memory_store.list_checkpoints() == before
