"""Round trips through the pod store on file://, memory:// and s3:// (moto over HTTP).

Objects are pickled the way the agent does (protocol 5, out-of-band buffers, see
conftest.to_pod), written as one checkpoint, read back and unpickled.
"""

from __future__ import annotations

import math
import pickle
import platform
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from conftest import from_pod, to_pod
from nbferry.storage import (
    AmbiguousCheckpointError,
    CheckpointNotFoundError,
    CheckpointRef,
    PodData,
    Store,
)
from nbferry.storage.store import PACK_THRESHOLD
from nbferry.v1 import manifest_pb2 as pb

MiB = 1 << 20


def roundtrip(store: Store, obj: object, session: str = "rt") -> tuple[object, pb.Manifest]:
    """Write `obj` as pod "p0" of a new checkpoint, read it back, unpickle it."""
    result = store.write_checkpoint(session, [to_pod("p0", obj, ["v"])])
    manifest = store.read_manifest(result.checkpoint_id)
    pods = store.read_pods(manifest)
    assert list(pods) == ["p0"]
    return from_pod(pods["p0"]), manifest


def assert_same_array(got: object, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.flags.writeable, "restored arrays must be writable"


def common_prefix(*texts: str) -> str:
    """The longest string every one of `texts` starts with."""
    first, *rest = texts
    n = 0
    while n < len(first) and all(len(t) > n and t[n] == first[n] for t in rest):
        n += 1
    return first[:n]


# -- numpy ------------------------------------------------------------------------


def test_large_array_spans_several_chunks(store):
    arr = np.random.default_rng(1).random(5 * MiB)  # 40 MiB of float64
    got, manifest = roundtrip(store, arr)
    assert_same_array(got, arr)
    (buf,) = manifest.pods[0].buffers
    assert buf.size == arr.nbytes
    assert len(buf.chunks) == -(-arr.nbytes // store.chunk_size) >= 10
    assert sum(c.raw_size for c in buf.chunks) == arr.nbytes
    got[0] = -1.0  # writable and independent of the original
    assert arr[0] != -1.0


def test_array_layouts_views_and_order(store):
    base = np.arange(6000, dtype=np.float64).reshape(60, 100)
    values = {
        "view": base[5:25],  # contiguous view of a bigger base: only its bytes go
        "strided": base[:, ::3],  # non-contiguous: pickled in-band
        "fortran": np.asfortranarray(np.arange(3 * 1000 * 7, dtype=np.int32).reshape(3, 1000, 7)),
        "transposed": base.T,  # F-contiguous view
    }
    got, _ = roundtrip(store, values)
    for name, want in values.items():
        assert_same_array(got[name], want)
    assert got["view"].flags.c_contiguous
    assert got["view"].nbytes == values["view"].nbytes
    assert got["strided"].shape == (60, 34)
    assert got["fortran"].flags.f_contiguous and not got["fortran"].flags.c_contiguous
    assert got["transposed"].flags.f_contiguous
    got["fortran"][1, 2, 3] = -5  # writable through an F-ordered out-of-band buffer
    assert got["fortran"][1, 2, 3] == -5


def test_dtypes_object_and_empty_arrays(store):
    rng = np.random.default_rng(2)
    values = {
        "int8": rng.integers(-128, 127, 1000, dtype=np.int8),
        "uint16": rng.integers(0, 65535, 1000, dtype=np.uint16),
        "int64": rng.integers(-(2**62), 2**62, 1000, dtype=np.int64),
        "big_endian": np.arange(1000, dtype=">i4"),
        "float16": rng.random(1000).astype(np.float16),
        "float32": rng.random(1000).astype(np.float32),
        "float64_nan": np.array([1.5, np.nan, -np.inf, np.inf, -0.0]),
        "complex128": rng.random(500) + 1j * rng.random(500),
        "bool": rng.random(1000) > 0.5,
        "datetime64": np.arange("2020-01-01", "2020-03-01", dtype="datetime64[D]").astype("M8[ns]"),
        "timedelta64": np.arange(100, dtype="timedelta64[ms]"),
        "unicode": np.array(["a", "bé", "漢字", ""], dtype="U4"),
        "bytes": np.array([b"x", b"\x00\xff"], dtype="S2"),
        "structured": np.array([(1, 2.5, b"ab"), (3, 4.5, b"cd")], dtype="<i4,>f8,S2"),
        "object": np.array([1, "a", None, [1, 2], {"k": (3,)}, 2**100], dtype=object),
        "empty": np.empty(0),
        "empty_2d": np.empty((0, 5), dtype=np.int16),
        "empty_f": np.empty((3, 0), dtype=np.complex64, order="F"),
        "empty_str": np.zeros(0, dtype="U3"),
        "scalar_0d": np.array(3.25),
    }
    got, manifest = roundtrip(store, values)
    assert set(got) == set(values)
    for name, want in values.items():
        if name == "float64_nan":
            np.testing.assert_array_equal(got[name], want)  # treats nan == nan
            assert np.signbit(got[name][-1])
        else:
            assert_same_array(got[name], want)
    assert got["object"][4] == {"k": (3,)}
    assert got["object"][5] == 2**100
    # Empty arrays travel as zero-length out-of-band buffers: no chunks at all.
    sizes = [b.size for b in manifest.pods[0].buffers]
    assert 0 in sizes
    for buf in manifest.pods[0].buffers:
        assert sum(c.raw_size for c in buf.chunks) == buf.size
        if buf.size == 0:
            assert len(buf.chunks) == 0


def test_pod_with_many_buffers(store):
    rng = np.random.default_rng(3)
    arrays = []
    for i in range(300):
        if i % 50 == 0:
            arrays.append(rng.random(PACK_THRESHOLD // 8 + 3))  # own blob
        elif i % 7 == 0:
            arrays.append(np.full(100, 7, dtype=np.int64))  # repeated content
        else:
            arrays.append(rng.integers(0, 1000, i + 1, dtype=np.int64))
    got, manifest = roundtrip(store, arrays)
    assert len(manifest.pods[0].buffers) == len(arrays)
    assert len(got) == len(arrays)
    for g, w in zip(got, arrays, strict=True):
        assert_same_array(g, w)
    packed = [c for b in manifest.pods[0].buffers for c in b.chunks if c.pack]
    alone = [c for b in manifest.pods[0].buffers for c in b.chunks if not c.pack]
    assert all(c.raw_size < PACK_THRESHOLD for c in packed)
    assert all(c.raw_size >= PACK_THRESHOLD for c in alone)
    assert len(alone) == 6


def test_buffers_at_chunk_and_pack_boundaries(store):
    """Raw buffers of awkward sizes and kinds come back byte for byte."""
    cs = store.chunk_size
    rng = np.random.default_rng(4)
    sizes = [0, 1, PACK_THRESHOLD - 1, PACK_THRESHOLD, cs - 1, cs, cs + 1, 2 * cs + PACK_THRESHOLD]
    blobs = [rng.bytes(n) for n in sizes]
    ints = np.arange(1000, dtype=np.int32)
    buffers = [
        *blobs,
        bytearray(b"bytearray"),
        memoryview(ints),  # format "i": must be cast to bytes, not rejected
        pickle.PickleBuffer(np.asfortranarray(np.ones((4, 5)))),
    ]
    pod = PodData("raw", b"", buffers, ["raw"], serializer="none")
    result = store.write_checkpoint("rt", [pod])
    manifest = store.read_manifest(result.checkpoint_id)
    got = store.read_pods(manifest)["raw"]
    assert got.header == b""
    assert got.serializer == "none"
    assert len(got.buffers) == len(buffers)
    for i, n in enumerate(sizes):
        assert not memoryview(got.buffers[i]).readonly  # writable: bytearray or mmap
        assert len(got.buffers[i]) == n
        assert memoryview(got.buffers[i]) == blobs[i], f"buffer of {n} bytes differs"
        assert len(manifest.pods[0].buffers[i].chunks) == -(-n // cs)
    assert got.buffers[len(sizes)] == b"bytearray"
    assert got.buffers[len(sizes) + 1] == ints.tobytes()
    assert got.buffers[len(sizes) + 2] == np.ones(20).tobytes()
    assert result.raw_bytes == sum(sizes) + 9 + ints.nbytes + 160


def test_non_contiguous_buffer_is_rejected_and_commits_nothing(store):
    strided = memoryview(np.arange(100, dtype=np.int64)[::2])
    with pytest.raises(ValueError, match="contiguous"):
        store.write_checkpoint("rt", [PodData("p", b"h", [strided], ["x"])])
    with pytest.raises(ValueError, match="duplicate pod id"):
        store.write_checkpoint("rt", [PodData("p", b"h"), PodData("p", b"h")])
    assert store.list_checkpoints() == []


def test_aliasing_within_a_pod_survives(store):
    arr = np.arange(1000, dtype=np.float64)
    inner = [1, 2, 3]
    shared = {"k": "v"}
    obj = {"a": arr, "same": arr, "lists": [inner, inner], "dicts": (shared, [shared])}
    got, manifest = roundtrip(store, obj)
    # The same array object twice is written once and comes back as one object.
    assert len(manifest.pods[0].buffers) == 1
    assert got["a"] is got["same"]
    got["a"][0] = 42.0
    assert got["same"][0] == 42.0
    assert got["lists"][0] is got["lists"][1]
    got["lists"][0].append(4)
    assert got["lists"][1] == [1, 2, 3, 4]
    assert got["dicts"][0] is got["dicts"][1][0]


# -- pandas -----------------------------------------------------------------------


def test_pandas_frames(store):
    n = 2000
    rng = np.random.default_rng(5)
    idx = pd.MultiIndex.from_product(
        [["north", "south", "east", "west"], range(n // 4)], names=["region", "i"]
    )
    floats = rng.random(n)
    floats[::17] = np.nan
    df = pd.DataFrame(
        {
            "int": rng.integers(0, 10**9, n),
            "float": floats,
            "bool": rng.random(n) > 0.3,
            "str": [f"s{i}" * (i % 4) for i in range(n)],
            "obj": pd.Series([(i, str(i)) if i % 3 else None for i in range(n)], dtype=object),
            "cat": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), ordered=True),
            "when": pd.date_range("2024-03-30", periods=n, freq="h", tz="Europe/Berlin"),
            "utc": pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC"),
            "delta": pd.to_timedelta(np.arange(n), unit="s"),
            "nullable": pd.array([i if i % 5 else None for i in range(n)], dtype="Int64"),
        },
        index=idx,
    )
    wide = pd.DataFrame(
        rng.random((50, 6)),
        columns=pd.MultiIndex.from_product([["a", "b"], ["x", "y", "z"]]),
        index=pd.date_range("2021-01-01", periods=50, tz="US/Eastern", name="t"),
    )
    series = pd.Series(rng.random(100), name="s", index=pd.RangeIndex(100, 200))
    got, _ = roundtrip(store, {"df": df, "wide": wide, "series": series, "empty": df.iloc[:0]})
    pd.testing.assert_frame_equal(got["df"], df)
    pd.testing.assert_frame_equal(got["wide"], wide)
    pd.testing.assert_series_equal(got["series"], series)
    pd.testing.assert_frame_equal(got["empty"], df.iloc[:0])
    assert isinstance(got["df"].index, pd.MultiIndex)
    assert str(got["df"]["when"].dt.tz) == "Europe/Berlin"
    assert got["df"]["cat"].cat.ordered


# -- plain Python -----------------------------------------------------------------


def test_nested_python_containers(store):
    inner = [(1, "a", b"\x00\x01"), (2, None, frozenset({1, 2}))]
    obj = {
        "lists": {"x": inner, "y": [[], [[]], [(), ((),)]]},
        "set": {1, "two", (3, 4), None},
        "bytes": bytes(range(256)) * 10,
        "bytearray": bytearray(b"abc"),
        "none": None,
        "big": 2**521 - 1,
        "neg_big": -(3**200),
        "floats": [0.1, -0.0, 1e308, 5e-324, float("inf"), float("-inf")],
        "nan": float("nan"),
        "complex": 1 + 2j,
        "str": "ünïcödé \N{SNOWMAN} \x00",
        "when": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2))),
        "range": range(3, 30, 4),
        "bool": [True, False],
        ("tuple", "key"): {"deep": {"deeper": {"deepest": [1, {2: [3]}]}}},
    }
    got, _ = roundtrip(store, obj)
    assert isinstance(got, dict)
    assert math.isnan(got.pop("nan"))
    want = dict(obj)
    del want["nan"]
    assert got == want
    assert math.copysign(1.0, got["floats"][1]) == -1.0
    assert type(got["set"]) is set
    assert type(got["bytearray"]) is bytearray
    assert isinstance(got["lists"]["x"][0], tuple)


def test_several_pods_in_one_checkpoint(store):
    rng = np.random.default_rng(6)
    values = {
        "arr": rng.random(300_000),
        "df": pd.DataFrame({"a": range(100), "b": [str(i) for i in range(100)]}),
        "d": {"k": [1, 2, (3, 4)], "s": {5}},
        "n": 12345678901234567890,
        "s": "hello",
    }
    pods = [to_pod(f"pod-{i}", v, [name]) for i, (name, v) in enumerate(values.items())]
    pods.append(to_pod("pod-multi", ["shared"], ["alias1", "alias2"]))
    result = store.write_checkpoint("multi", pods, message="several pods")
    manifest = store.read_manifest(result.checkpoint_id)
    assert [p.id for p in manifest.pods] == [p.pod_id for p in pods]
    got = store.read_pods(manifest)
    assert set(got) == {p.pod_id for p in pods}
    restored = {name: from_pod(got[f"pod-{i}"]) for i, name in enumerate(values)}
    assert_same_array(restored["arr"], values["arr"])
    pd.testing.assert_frame_equal(restored["df"], values["df"])
    assert restored["d"] == values["d"]
    assert restored["n"] == values["n"]
    assert restored["s"] == "hello"
    assert from_pod(got["pod-multi"]) == ["shared"]
    assert list(got["pod-multi"].variables) == ["alias1", "alias2"]
    assert got["pod-0"].variables == ["arr"]


def test_read_pods_fetches_only_the_requested_pods(store):
    big = np.random.default_rng(7).random(2 * MiB // 8)  # 2 MiB: a blob of its own
    pods = [to_pod("small", {"x": 1}), to_pod("big", big), to_pod("other", "text")]
    result = store.write_checkpoint("sel", pods)
    manifest = store.read_manifest(result.checkpoint_id)

    got = store.read_pods(manifest, pod_ids=["small", "other"])
    assert set(got) == {"small", "other"}
    assert from_pod(got["small"]) == {"x": 1}
    assert from_pod(got["other"]) == "text"

    # Remove the big pod's blob: reading the others must not touch it, reading it must fail.
    big_pod = next(p for p in manifest.pods if p.id == "big")
    (buf,) = big_pod.buffers
    blob_keys = {f"blobs/{c.hash.hex()[:2]}/{c.hash.hex()}" for c in buf.chunks}
    assert blob_keys <= set(store.backend.list("blobs/"))
    for key in blob_keys:
        store.backend.delete(key)
    got = store.read_pods(manifest, pod_ids=["small"])
    assert list(got) == ["small"]
    assert from_pod(got["small"]) == {"x": 1}
    from nbferry.storage import CorruptCheckpointError

    with pytest.raises(CorruptCheckpointError, match="big"):
        store.read_pods(manifest, pod_ids=["big"])
    with pytest.raises(CheckpointNotFoundError, match="nope"):
        store.read_pods(manifest, pod_ids=["small", "nope"])


# -- listing, resolving, deleting, manifests -------------------------------------------


def test_list_latest_resolve_delete_and_parents(store):
    assert store.list_checkpoints() == []
    assert store.latest("alpha") is None
    r1 = store.write_checkpoint("alpha", [to_pod("p", 1)])
    r2 = store.write_checkpoint("alpha", [to_pod("p", 2)])
    r3 = store.write_checkpoint("alpha", [to_pod("p", 3)], parent=r1.checkpoint_id)
    b1 = store.write_checkpoint("beta", [to_pod("p", 10)])
    r4 = store.write_checkpoint("alpha", [to_pod("p", 4)], parent=None)

    # Parent links: "latest" by default, an explicit id, or none.
    assert r1.parent_checkpoint_id == ""
    assert r2.parent_checkpoint_id == r1.checkpoint_id
    assert r3.parent_checkpoint_id == r1.checkpoint_id
    assert b1.parent_checkpoint_id == ""  # other sessions are not parents
    assert r4.parent_checkpoint_id == ""
    assert store.read_manifest(r2.checkpoint_id).parent_checkpoint_id == r1.checkpoint_id

    alpha = [r1, r2, r3, r4]
    refs = store.list_checkpoints("alpha")
    assert all(isinstance(r, CheckpointRef) for r in refs)
    assert [r.checkpoint_id for r in refs] == [r.checkpoint_id for r in alpha]
    assert {r.session_id for r in refs} == {"alpha"}
    assert [r.checkpoint_id for r in store.list_checkpoints("beta")] == [b1.checkpoint_id]
    everything = store.list_checkpoints()
    assert [r.checkpoint_id for r in everything] == sorted(r.checkpoint_id for r in [*alpha, b1])
    assert store.sessions() == ["alpha", "beta"]
    assert store.latest("alpha").checkpoint_id == r4.checkpoint_id
    assert store.latest("beta").checkpoint_id == b1.checkpoint_id
    assert store.resolve("latest", "alpha").checkpoint_id == r4.checkpoint_id
    now = datetime.now(timezone.utc)
    assert all(abs((r.created - now).total_seconds()) < 120 for r in everything)

    # Prefixes: the shortest unique prefix of each id resolves (in any case).
    ids = [r.checkpoint_id for r in everything]
    for cid in ids:
        n = 1 + max(len(common_prefix(cid, other)) for other in ids if other != cid)
        assert store.resolve(cid[:n]).checkpoint_id == cid
        assert store.resolve(cid[:n].lower()).checkpoint_id == cid
        assert store.resolve(cid).checkpoint_id == cid
        assert store.read_manifest(cid[:n]).checkpoint_id == cid
    shared = common_prefix(*ids)
    assert shared, "ids made a moment apart share their time prefix"
    with pytest.raises(AmbiguousCheckpointError):
        store.resolve(shared)
    with pytest.raises(AmbiguousCheckpointError):
        store.read_manifest(shared)
    # Scoped to a session, the prefix shared with beta's id can become unique.
    assert store.resolve(b1.checkpoint_id[: len(shared) + 1], "beta").checkpoint_id == (
        b1.checkpoint_id
    )
    for unknown in ["ZZZZZZ", "0000000000", "not-an-id!", ""]:
        with pytest.raises(CheckpointNotFoundError):
            store.resolve(unknown)
    with pytest.raises(CheckpointNotFoundError):
        store.resolve(r1.checkpoint_id, "beta")
    with pytest.raises(CheckpointNotFoundError):
        store.resolve("latest")  # needs a session
    with pytest.raises(CheckpointNotFoundError):
        store.resolve("latest", "nobody")

    # Deleting removes it from listings and lookups; the rest still reads.
    deleted = store.delete_checkpoint(r4.checkpoint_id)
    assert deleted.checkpoint_id == r4.checkpoint_id
    assert r4.checkpoint_id not in [r.checkpoint_id for r in store.list_checkpoints()]
    assert store.latest("alpha").checkpoint_id == r3.checkpoint_id
    with pytest.raises(CheckpointNotFoundError):
        store.resolve(r4.checkpoint_id)
    with pytest.raises(CheckpointNotFoundError):
        store.read_manifest(r4.checkpoint_id)
    store.delete_checkpoint(store.resolve(r2.checkpoint_id))  # by ref
    assert [r.checkpoint_id for r in store.list_checkpoints("alpha")] == [
        r1.checkpoint_id,
        r3.checkpoint_id,
    ]
    for r, value in [(r1, 1), (r3, 3), (b1, 10)]:
        pods = store.read_pods(store.read_manifest(r.checkpoint_id))
        assert from_pod(pods["p"]) == value
    # A new checkpoint's "latest" parent is the newest one still there.
    r5 = store.write_checkpoint("alpha", [to_pod("p", 5)])
    assert r5.parent_checkpoint_id == r3.checkpoint_id


def test_manifest_records_what_was_written(store):
    pods = [
        to_pod("p-df", pd.DataFrame({"a": [1, 2]}), ["df", "df_alias"]),
        to_pod("p-x", 7, ["x"]),
    ]
    result = store.write_checkpoint(
        "rec.session@host",
        pods,
        variables={"x": pb.VariableRef(pod_id="p-x", type_name="builtins.int")},
        message="first one",
        labels={"purpose": "test"},
    )
    ref = store.resolve(result.checkpoint_id)
    for m in (store.read_manifest(result.checkpoint_id), store.read_manifest(ref)):
        assert m.checkpoint_id == result.checkpoint_id
        assert m.session_id == "rec.session@host" == result.session_id
        assert m.parent_checkpoint_id == ""
        assert m.format_version >= 1
        assert m.producer.python_version == platform.python_version()
        assert m.producer.nbferry_version
        assert m.producer.hostname
        assert m.message == "first one"
        assert m.labels["purpose"] == "test"
        assert "user" in m.labels
        assert dict(m.variables) == {
            "df": pb.VariableRef(pod_id="p-df"),
            "df_alias": pb.VariableRef(pod_id="p-df"),
            "x": pb.VariableRef(pod_id="p-x", type_name="builtins.int"),
        }
        assert [(p.id, list(p.variables), p.serializer) for p in m.pods] == [
            ("p-df", ["df", "df_alias"], "pickle"),
            ("p-x", ["x"], "pickle"),
        ]
        assert abs(m.created.ToSeconds() - datetime.now(timezone.utc).timestamp()) < 120
        assert m.stats.raw_bytes == result.raw_bytes
        assert m.stats.chunks == result.chunks
        assert m.stats.blobs_written == result.blobs_written
        assert m.stats.uploaded_bytes == result.uploaded_bytes
    assert ref.key == f"sessions/rec.session@host/{result.checkpoint_id}.ckpt"
    assert ref.key in store.backend.list("sessions/")
    # Unverified reads (listing, showing) give the same manifest.
    assert store.read_manifest(ref, verify=False) == store.read_manifest(ref)
    assert store.signature_status(ref) == "verified"


def test_latest_is_the_newest_checkpoint_even_after_a_host_whose_clock_ran_ahead(
    store, monkeypatch
):
    """A session moves from a host whose clock is an hour ahead to this one: the
    checkpoint written here must still be the session's latest (ids sort by
    time, and `latest` is the last id), so it is made to sort after its parent."""
    import time as real_time

    from nbferry.storage import ids

    class AheadClock:
        @staticmethod
        def time() -> float:
            return real_time.time() + 3600

    monkeypatch.setattr(ids, "_last", ids._last)  # put back after the test
    monkeypatch.setattr(ids, "time", AheadClock)
    ahead = store.write_checkpoint("s", [to_pod("x", 1)])
    monkeypatch.setattr(ids, "time", real_time)
    ids._last = (0, 0)  # this host's process has made no id yet
    here = store.write_checkpoint("s", [to_pod("x", 2)])
    assert here.parent_checkpoint_id == ahead.checkpoint_id
    assert here.checkpoint_id > ahead.checkpoint_id
    assert store.latest("s").checkpoint_id == here.checkpoint_id
    # Without a parent too: a new chain in the session still sorts last.
    fresh = store.write_checkpoint("s", [to_pod("x", 3)], parent=None)
    assert store.latest("s").checkpoint_id == fresh.checkpoint_id
