"""Garbage collection on real stores (a folder, moto's S3 over HTTP): the trash, the
grace period, retention, leftovers, damaged manifests, the commit deadline, and a
race between writers, deleters, readers and collectors.

Ages are simulated by passing `now` (hours ahead) to collect(): objects moved by
a collection are stamped with the real time but sit in a trash run named with
the simulated one, which keeps them until that run is older than the grace.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import from_pod, to_pod
from nbferry.storage import CheckpointNotFoundError, CorruptCheckpointError, Store, StoreError
from nbferry.storage.gc import GcError, GcReport, collect
from nbferry.storage.ids import new_checkpoint_id
from nbferry.storage.retention import Policy
from nbferry.storage.signing import SigningKey
from nbferry.storage.store import TRASH, _location, open_store, trash_run_name
from nbferry.v1 import manifest_pb2 as pb

HOUR = timedelta(hours=1)
NBFERRY = str(Path(sys.executable).with_name("nbferry"))


def later(hours: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(hours=hours)


def big(seed: int) -> np.ndarray:
    """320 KB of random float64: one chunk, stored as its own blob."""
    return np.random.default_rng(seed).random(40_000)


def small(seed: int) -> np.ndarray:
    """A few KB: packed."""
    return np.random.default_rng(seed).integers(0, 1 << 30, 500)


def uses(store: Store, checkpoint_id: str) -> set[str]:
    manifest = store.read_manifest(checkpoint_id, verify=False)
    return {
        _location(ref)
        for pod in manifest.pods
        for buf in [pod.header, *pod.buffers]
        for ref in buf.chunks
    }


def live(store: Store) -> set[str]:
    return set(store.backend.list("blobs") + store.backend.list("packs"))


def trashed(store: Store) -> set[str]:
    return {k.split("/", 2)[2] for k in store.backend.list(TRASH)}


def snapshot(store: Store) -> dict[str, int]:
    return {key: size for key, size, _ in store.backend.list_info("", temp=True)}


def reads_back(store: Store, checkpoint_id: str, expected: dict[str, np.ndarray]) -> None:
    pods = store.read_pods(store.read_manifest(checkpoint_id))
    assert sorted(pods) == sorted(expected), checkpoint_id
    for pod_id, want in expected.items():
        assert np.array_equal(from_pod(pods[pod_id]), want), f"{checkpoint_id} {pod_id}"


@pytest.fixture(params=["file", "s3"])
def gc_store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")


def test_deleted_checkpoint_is_trashed_then_purged(gc_store: Store) -> None:
    store = gc_store
    a_pods = {"shared": big(0), "only_a": big(1), "sa": small(1)}
    b_pods = {"shared": big(0), "only_b": big(2), "sb": small(2)}
    a = store.write_checkpoint("nb", [to_pod(k, v) for k, v in a_pods.items()])
    b = store.write_checkpoint("nb", [to_pod(k, v) for k, v in b_pods.items()], parent=None)
    ka, kb = uses(store, a.checkpoint_id), uses(store, b.checkpoint_id)
    only_a = ka - kb
    assert len(only_a) == 2 and len(ka & kb) == 1  # one blob and a pack; the shared blob

    sizes = {key: size for key, size, _ in store.backend.list_info("")}
    store.delete_checkpoint(a.checkpoint_id)
    # Nothing is old enough yet: the deleted manifest waits in the trash, its blobs live.
    report = collect(store, grace=HOUR)
    assert (report.manifests_purged, report.blobs_trashed, report.blobs_deleted) == (0, 0, 0)
    assert live(store) == ka | kb

    # An hour later the deleted manifest goes, and the blobs only it used move to the trash.
    report = collect(store, grace=HOUR, now=later(2))
    assert report.manifests_purged == 1
    assert (report.blobs_trashed, report.blobs_deleted, report.blobs_restored) == (2, 0, 0)
    assert live(store) == kb and trashed(store) == only_a
    reads_back(store, b.checkpoint_id, b_pods)

    # Not yet an hour in the trash: a collection at the same time keeps them there.
    report = collect(store, grace=HOUR, now=later(2.5))
    assert (report.blobs_trashed, report.blobs_deleted) == (0, 0)
    assert trashed(store) == only_a

    report = collect(store, grace=HOUR, now=later(4))
    assert report.blobs_deleted == 2 and report.bytes_freed == sum(sizes[k] for k in only_a)
    assert live(store) == kb and trashed(store) == set()
    reads_back(store, b.checkpoint_id, b_pods)
    assert report.to_json()["blobs_deleted"] == 2
    json.dumps(report.to_json())


def test_a_checkpoint_that_reuses_a_trashed_blob_restores_and_keeps_it(gc_store: Store) -> None:
    """The race the trash exists for, made deterministic: a writer read its parent's
    chunk list, the parent was deleted, and a collection trashed the parent's blobs
    before the writer committed. The new checkpoint still reads (from the trash),
    and the next collection moves its blobs back instead of deleting them."""
    store = gc_store
    pods = {"x": big(5), "s": small(5)}
    parent = store.write_checkpoint("nb", [to_pod(k, v) for k, v in pods.items()])
    parent_manifest = store.read_manifest(parent.checkpoint_id)  # what the writer read
    store.delete_checkpoint(parent.checkpoint_id)

    def collect_then_commit(*args: object) -> None:
        # After the writer checked that its parent's blobs exist, before it commits.
        assert collect(store, grace=HOUR, now=later(2)).blobs_trashed == 2
        assert live(store) == set()
        Store._check_deadline(writer, *args)  # type: ignore[arg-type]

    writer = Store(store.url, key=store.key)
    writer.backend = store.backend
    writer._parent_manifest = lambda *a: parent_manifest  # type: ignore[method-assign]
    writer._check_deadline = collect_then_commit  # type: ignore[method-assign]
    child = writer.write_checkpoint("nb", [to_pod(k, v) for k, v in pods.items()])
    assert child.chunks_uploaded == 0  # every chunk deduplicated against the parent
    assert uses(store, child.checkpoint_id) <= trashed(store)
    reads_back(store, child.checkpoint_id, pods)  # through the trash

    # Past the grace period: the purge finds the child using them and moves them back.
    report = collect(store, grace=HOUR, now=later(4))
    assert (report.blobs_restored, report.blobs_deleted) == (2, 0)
    assert uses(store, child.checkpoint_id) <= live(store) and trashed(store) == set()
    collect(store, grace=HOUR, now=later(8))
    reads_back(store, child.checkpoint_id, pods)


def test_sweep_repairs_a_trashed_blob_in_use(memory_store: Store) -> None:
    store = memory_store
    pods = {"x": big(6)}
    result = store.write_checkpoint("nb", [to_pod("x", pods["x"])])
    (blob,) = [k for k in uses(store, result.checkpoint_id) if k.startswith("blobs/")]
    store.backend.move(blob, f"{TRASH}/{trash_run_name()}/{blob}")  # as if a GC raced
    reads_back(store, result.checkpoint_id, pods)
    report = collect(store, grace=HOUR)
    assert report.blobs_restored == 1 and blob in live(store) and trashed(store) == set()


def test_dry_run_changes_nothing_and_predicts_the_real_run(gc_store: Store) -> None:
    store = gc_store
    ids = [
        store.write_checkpoint("nb", [to_pod("x", big(10 + i)), to_pod("s", small(i))])
        for i in range(4)
    ]
    # ids[1] deduplicated its pod headers against ids[0]'s pack: ids[0] alone uses its blob.
    first_only = uses(store, ids[0].checkpoint_id) - uses(store, ids[1].checkpoint_id)
    store.delete_checkpoint(ids[0].checkpoint_id)
    collect(store, grace=HOUR, now=later(2))  # ids[0]'s blob is in the trash now
    store.backend.put("probe/leftover-0", [b"probe"])
    before = snapshot(store)

    policy = Policy(last=1)
    dry = collect(store, grace=HOUR, now=later(4), policy=policy, dry_run=True)
    assert snapshot(store) == before
    assert dry.dry_run and dry.checkpoints_deleted == [r.checkpoint_id for r in ids[1:3]]
    assert dry.blobs_deleted == len(first_only) == 1  # in the trash since "2 hours"
    assert dry.blobs_trashed == 0  # ids[1:3] would only now go to the trash, as manifests
    assert dry.leftovers_deleted == 1

    real = collect(store, grace=HOUR, now=later(4), policy=policy)
    assert not real.dry_run
    ignore = {"dry_run", "seconds", "bytes_live", "blobs_live", "manifests_read"}
    assert {k: v for k, v in dry.to_json().items() if k not in ignore} == {
        k: v for k, v in real.to_json().items() if k not in ignore
    }
    assert [r.checkpoint_id for r in store.list_checkpoints()] == [ids[3].checkpoint_id]
    # Two grace periods on, everything but the kept checkpoint's blobs is gone.
    collect(store, grace=HOUR, now=later(6))
    collect(store, grace=HOUR, now=later(8))
    assert live(store) == uses(store, ids[3].checkpoint_id) and trashed(store) == set()
    assert [k for k in snapshot(store) if not k.startswith(("blobs/", "packs/"))] == [
        f"sessions/nb/{ids[3].checkpoint_id}.ckpt"
    ]


def test_probe_and_temp_leftovers_are_cleaned_after_grace(gc_store: Store) -> None:
    store = gc_store
    store.write_checkpoint("nb", [to_pod("x", big(20))])
    store.backend.put("probe/01ABC-0", [b"x" * 100])
    store.backend.put("probe/01ABC-latency", [b"x"])
    temps = []
    if store.backend.local:
        root = Path(store.backend.root)
        for name in ["blobs/ab/" + "ab" * 32 + ".tmp-1-dead", "sessions/nb/X.ckpt.tmp-2-beef"]:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"partial")
            temps.append(path)
        old = time.time() - 7200
        os.utime(temps[0], (old, old))
    report = collect(store, grace=HOUR)
    assert report.leftovers_deleted == (1 if temps else 0)
    assert len(store.backend.list("probe")) == 2
    if temps:
        assert not temps[0].exists() and temps[1].exists()
    report = collect(store, grace=HOUR, now=later(2))
    assert report.leftovers_deleted == 2 + len(temps[1:])
    assert store.backend.list("probe") == [] and not any(p.exists() for p in temps)
    assert len(store.list_checkpoints()) == 1 and report.blobs_trashed == 0


def test_an_unreadable_manifest_stops_collection(gc_store: Store, tmp_path: Path) -> None:
    store = gc_store
    a = store.write_checkpoint("nb", [to_pod("x", big(30))])
    b = store.write_checkpoint("nb", [to_pod("y", big(31))], parent=None)
    a_only = uses(store, a.checkpoint_id) - uses(store, b.checkpoint_id)
    assert len(a_only) == 1  # its blob; its pack (one pod header) is the same as b's
    store.delete_checkpoint(a.checkpoint_id)
    collect(store, grace=HOUR, now=later(2))  # a's blob to the trash

    # A checkpoint signed with another host's key counts: its blobs are not touched.
    other = Store(store.url, key=SigningKey(b"someone else", "theirs"))
    other.backend = store.backend
    foreign = other.write_checkpoint("theirs", [to_pod("z", big(32))])
    report = collect(store, grace=HOUR, now=later(4))
    assert report.blobs_deleted == len(a_only) and report.blobs_trashed == 0
    assert uses(store, foreign.checkpoint_id) | uses(store, b.checkpoint_id) == live(store)

    # Damaged: nothing may be deleted, and the error names the object and the fix.
    c = store.write_checkpoint("nb", [to_pod("w", big(33))])
    c_only = uses(store, c.checkpoint_id) - uses(store, b.checkpoint_id)  # its pack is b's
    store.delete_checkpoint(c.checkpoint_id)
    bad = f"sessions/nb/{new_checkpoint_id()}.ckpt"
    store.backend.put_new(bad, b"NBFM\x10\x00\x00\x00 not a manifest at all")
    before = snapshot(store)
    for policy in (None, Policy(last=1)):
        with pytest.raises(GcError) as err:
            collect(store, grace=HOUR, now=later(8), policy=policy)
        message = str(err.value)
        assert bad in message and "remove" in message and "run gc again" in message
        assert snapshot(store) == before

    # From a newer nbferry: same, with the fix "upgrade".
    data = store.backend.get(f"sessions/nb/{b.checkpoint_id}.ckpt")
    (length,) = struct.unpack_from("<I", data, 4)
    envelope = pb.ManifestFile.FromString(data[8 : 8 + length])
    envelope.format_version = 2
    body = envelope.SerializeToString()
    store.backend.put(bad, [b"NBFM", struct.pack("<I", len(body)), body])
    with pytest.raises(GcError, match=r"format version 2.*as new as"):
        collect(store, grace=HOUR, now=later(8))
    assert snapshot(store) == {**before, bad: 8 + len(body)}

    if store.backend.local:  # the command line says the same, with exit code 1
        out = subprocess.run(
            [NBFERRY, "gc", "--store", store.url, "--grace", "0s"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 1 and bad in out.stderr and "as new as" in out.stderr
    store.backend.delete(bad)
    report = collect(store, grace=HOUR, now=later(8))
    assert report.manifests_purged == 1 and report.blobs_trashed == len(c_only) == 1


def test_a_checkpoint_past_its_deadline_is_not_committed(memory_store: Store) -> None:
    store = memory_store
    store.max_write_seconds = 0.0
    with pytest.raises(StoreError, match=r"not committed.*max_write_seconds"):
        store.write_checkpoint("nb", [to_pod("x", big(40))])
    assert store.list_checkpoints() == []
    # The grace period must be longer than the writers' deadline, else collect warns.
    assert Store.max_write_seconds == 6 * 3600.0
    assert collect(store, grace=timedelta(hours=7)).warnings == []
    assert "no checkpoint is being written" in collect(store, grace=HOUR).warnings[0]


def test_cli(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    store = open_store(url)
    for i in range(3):
        store.write_checkpoint("nb", [to_pod("x", big(50 + i))])

    out = subprocess.run(
        [NBFERRY, "gc", "--store", url, "--dry-run", "--keep-last", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "dry run" in out.stdout and "deleted by retention (last=1" in out.stdout
    assert ": 2" in out.stdout and out.stderr == ""
    assert len(store.list_checkpoints()) == 3

    out = subprocess.run(
        [NBFERRY, "gc", "--store", url, "--grace", "0s", "--keep-last", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["manifests_deleted"] == 2 and data["grace_seconds"] == 0
    assert "warning" in out.stderr and "no checkpoint is being written" in out.stderr
    assert len(store.list_checkpoints()) == 1

    bad = subprocess.run(
        [NBFERRY, "gc", "--store", url, "--grace", "soon"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid duration value: 'soon'" in bad.stderr


# -- the race ------------------------------------------------------------------------

POOL = [big(100 + i) for i in range(10)]
SMALL_POOL = [small(100 + i) for i in range(6)]


def race(
    url: str,
    options: dict,
    *,
    seconds: float,
    grace: float,
    max_write: float,
    gc: Callable[..., GcReport] = collect,  # a naive collector fails this (tried)
) -> dict[str, int]:
    """Writers checkpoint (sharing chunks with older, deleted checkpoints), a deleter
    deletes all but the newest, readers read, collectors collect, all at once.
    Afterwards every committed checkpoint still listed reads back exactly."""
    stop = threading.Event()
    lock = threading.Lock()
    expected: dict[str, dict[str, np.ndarray]] = {}
    deleted: set[str] = set()
    stats = {"committed": 0, "late": 0, "reused": 0, "reads": 0, "collections": 0}
    totals = {"blobs_trashed": 0, "blobs_deleted": 0, "blobs_restored": 0}
    errors: list[BaseException] = []

    def guard(fn: Callable[..., None]) -> Callable[..., None]:
        def run(*args: object) -> None:
            try:
                fn(*args)
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        return run

    @guard
    def writer(n: int) -> None:
        store = open_store(url, options)
        store.max_write_seconds = max_write
        rng = random.Random(n)
        seed = 1000 * (n + 1)
        while not stop.is_set():
            seed += 1
            pods = {f"pool{i}": POOL[i] for i in rng.sample(range(len(POOL)), 3)}
            pods["own"] = big(seed)
            pods["spool"] = SMALL_POOL[rng.randrange(len(SMALL_POOL))]
            pods["sown"] = small(seed)
            try:
                result = store.write_checkpoint(
                    f"w{n}", [to_pod(k, v) for k, v in pods.items()], message=str(seed)
                )
            except StoreError as exc:
                assert "not committed" in str(exc), exc
                with lock:
                    stats["late"] += 1
                continue
            with lock:
                expected[result.checkpoint_id] = pods
                stats["committed"] += 1
                stats["reused"] += result.reused_raw_bytes > 0

    @guard
    def deleter() -> None:
        store = open_store(url, options)
        rng = random.Random(7)
        while not stop.is_set():
            refs = store.list_checkpoints()
            for session in {r.session_id for r in refs}:
                mine = [r for r in refs if r.session_id == session]
                for ref in mine[: -rng.choice([1, 2])]:
                    with lock:
                        deleted.add(ref.checkpoint_id)
                    store.delete_checkpoint(ref)
            time.sleep(0.01)

    @guard
    def reader() -> None:
        store = open_store(url, options)
        rng = random.Random(3)
        while not stop.is_set():
            with lock:
                ids = [cid for cid in expected if cid not in deleted]
            if not ids:
                time.sleep(0.01)
                continue
            cid = rng.choice(ids[-4:])
            try:
                reads_back(store, cid, expected[cid])
            except (CheckpointNotFoundError, CorruptCheckpointError):
                listed = {r.checkpoint_id for r in store.list_checkpoints()}
                if cid in listed:  # not deleted meanwhile: a real loss
                    raise
            with lock:
                stats["reads"] += 1

    @guard
    def collector() -> None:
        store = open_store(url, options)
        while not stop.is_set():
            report = gc(store, grace=timedelta(seconds=grace))
            with lock:
                stats["collections"] += 1
                for key in totals:
                    totals[key] += getattr(report, key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=f) for f in (deleter, reader, collector)]
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]

    store = open_store(url, options)
    listed = {r.checkpoint_id for r in store.list_checkpoints()}
    assert listed <= set(expected)
    assert set(expected) - deleted <= listed
    for cid in sorted(listed):
        reads_back(store, cid, expected[cid])
    # Let every grace period pass: what is left in the trash goes, and nothing listed breaks.
    for hours in (1, 2, 3):
        collect(store, grace=HOUR, now=later(hours))
    assert trashed(store) == set()
    for cid in sorted(listed):
        reads_back(store, cid, expected[cid])
    return {**stats, **totals}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_race_writers_deleters_readers_and_collectors(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(f"{kind}_store")
    options = {"endpoint_url": request.getfixturevalue("s3_endpoint")} if kind == "s3" else {}
    # Writers must commit within max_write of starting; the grace is longer (the rule).
    # S3 lists modification times to the second: GC adds a second to every age there.
    seconds, grace, max_write = {"file": (4.0, 0.5, 0.4), "s3": (10.0, 1.0, 0.8)}[kind]
    stats = race(store.url, options, seconds=seconds, grace=grace, max_write=max_write)
    assert stats["committed"] >= 10 and stats["reused"] >= 5, stats
    assert stats["collections"] >= 3 and stats["blobs_trashed"] > 0, stats
    assert stats["blobs_deleted"] > 0, stats
