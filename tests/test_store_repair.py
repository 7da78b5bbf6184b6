"""A damaged or lost object must not spoil later checkpoints of the same data.

Reads move damaged objects aside (damaged/<run>/<key>), writers check that what
their parent lists is still there, and GC deletes what was moved aside after
the grace period. Also: a missing bucket is an error for read-side commands,
and showing a checkpoint creates no signing key. Damage is done behind
nbferry's back, with plain file operations or boto3 against the moto server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from faulty_proxy import FaultyProxy
from test_store_corruption import RawObjects

from conftest import from_pod, to_pod
from nbferry.storage import CorruptCheckpointError, PodData, Store, StoreAccessError, open_store
from nbferry.storage.gc import collect
from nbferry.storage.store import DAMAGED, _location, chunk_refs

NBFERRY = str(Path(sys.executable).with_name("nbferry"))
HOUR = timedelta(hours=1)


def pods() -> list[PodData]:
    """Two big blobs (one raw, one zstd) and a pack of small chunks."""
    return [
        to_pod("big", np.random.default_rng(7).random(300_000)),
        to_pod("zbig", np.arange(200_000, dtype=np.int64) % 977),
        to_pod("small", {"a": list(range(100)), "b": "x" * 50}),
    ]


def reads_back(store: Store, checkpoint_id: str) -> None:
    read = store.read_pods(store.read_manifest(checkpoint_id))
    for want in pods():
        got = from_pod(read[want.pod_id])
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, from_pod(want))
        else:
            assert got == from_pod(want)


def keys(store: Store, checkpoint_id: str, prefix: str) -> list[str]:
    """The blobs/ or packs/ objects a checkpoint uses."""
    manifest = store.read_manifest(checkpoint_id)
    return sorted({k for r in chunk_refs(manifest) if (k := _location(r)).startswith(prefix)})


@pytest.fixture(params=["file", "s3"])
def env(request: pytest.FixtureRequest) -> tuple[Store, RawObjects]:
    kind = request.param
    store: Store = request.getfixturevalue(f"{kind}_store")
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    return store, RawObjects(store, endpoint)


def test_damaged_blob_is_moved_aside_and_the_next_checkpoint_stores_it_again(env) -> None:
    store, raw = env
    first = store.write_checkpoint("s", pods())
    blob = keys(store, first.checkpoint_id, "blobs")[0]
    raw.flip(blob, 100, 1)  # same size: only reading finds it

    with pytest.raises(CorruptCheckpointError) as err:
        reads_back(store, first.checkpoint_id)
    message = str(err.value)
    assert blob in message and "is damaged" in message and "moved aside" in message
    assert "nbferry list --session s" in message and "new checkpoint of session 's'" in message
    stored = raw.keys()
    assert blob not in stored
    (moved,) = [k for k in stored if k.startswith(f"{DAMAGED}/")]
    assert moved.endswith(blob) and moved in message

    # Following the advice works: the next checkpoint stores the blob again...
    second = store.write_checkpoint("s", pods())
    assert second.uploaded_bytes > 0
    reads_back(store, second.checkpoint_id)
    # ...and, content addressed, that heals the first checkpoint too.
    reads_back(store, first.checkpoint_id)


def test_lost_pack_is_stored_again_by_the_next_checkpoint_of_the_session(env) -> None:
    store, raw = env
    first = store.write_checkpoint("s", pods())
    (pack,) = keys(store, first.checkpoint_id, "packs")
    raw.delete(pack)
    with pytest.raises(CorruptCheckpointError, match="is missing from the store") as err:
        reads_back(store, first.checkpoint_id)
    assert "new checkpoint of session 's'" in str(err.value)

    # The parent lists the pack, but it is gone: its chunks must be uploaded again.
    second = store.write_checkpoint("s", pods())
    assert second.parent_checkpoint_id == first.checkpoint_id
    assert second.uploaded_bytes > 0
    reads_back(store, second.checkpoint_id)


def test_truncated_blobs_are_stored_again_by_the_next_checkpoint_of_the_session(env) -> None:
    """Both blobs truncated: the reads that find them move them aside, and the
    next checkpoint (whose parent lists them) stores them again."""
    store, raw = env
    first = store.write_checkpoint("s", pods())
    blobs = keys(store, first.checkpoint_id, "blobs")
    for blob in blobs:
        raw.truncate(blob, len(raw.get(blob)) // 2)
    manifest = store.read_manifest(first.checkpoint_id)
    for pod in ("big", "zbig"):  # one blob each
        with pytest.raises(CorruptCheckpointError, match="truncated"):
            store.read_pods(manifest, pod_ids=[pod])
    stored = raw.keys()
    assert not set(blobs) & set(stored)
    second = store.write_checkpoint("s", pods())
    assert second.parent_checkpoint_id == first.checkpoint_id
    assert second.blobs_written >= 2
    reads_back(store, second.checkpoint_id)
    reads_back(store, first.checkpoint_id)


def test_truncated_blob_without_a_parent_is_repaired_after_a_read_finds_it(env) -> None:
    """With no parent, a writer trusts an existing blob (checking it would mean
    encoding every chunk); the read that finds it truncated moves it aside, and
    the next checkpoint stores it again."""
    store, raw = env
    first = store.write_checkpoint("s", pods())
    blob = keys(store, first.checkpoint_id, "blobs")[0]
    size = len(raw.get(blob))
    raw.truncate(blob, size // 2)
    second = store.write_checkpoint("t", pods(), parent=None)
    assert len(raw.get(blob)) == size // 2  # reused, damage unseen
    with pytest.raises(CorruptCheckpointError, match=r"is damaged.*moved aside"):
        reads_back(store, second.checkpoint_id)
    stored = raw.keys()
    assert blob not in stored
    store.write_checkpoint("t", pods(), parent=None)
    assert len(raw.get(blob)) == size
    for checkpoint in (first, second):
        reads_back(store, checkpoint.checkpoint_id)


def test_a_damaged_chunk_in_a_pack_marks_the_pack_and_spares_its_other_chunks(env) -> None:
    """The pack stays (another pod's intact chunk is in it); a marker stops the
    next writer reusing its chunks, so the next checkpoint reads back whole."""
    store, raw = env
    both = [to_pod("small", {"a": list(range(100))}), to_pod("other", {"b": "y" * 80})]
    first = store.write_checkpoint("s", both)
    manifest = store.read_manifest(first.checkpoint_id)
    (pack,) = keys(store, first.checkpoint_id, "packs")
    (victim,) = [p for p in manifest.pods if p.id == "small"]
    raw.flip(pack, victim.header.chunks[0].offset + 5)
    with pytest.raises(CorruptCheckpointError, match=r"is damaged.*no longer reuse"):
        store.read_pods(manifest)
    stored = raw.keys()
    assert pack in stored and any(k.startswith(DAMAGED) and k.endswith(pack) for k in stored)
    intact = store.read_pods(manifest, pod_ids=["other"])["other"]
    assert from_pod(intact) == {"b": "y" * 80}

    second = store.write_checkpoint("s", both)
    assert second.parent_checkpoint_id == first.checkpoint_id
    assert second.uploaded_bytes > 0  # its chunks stored again, not reused
    for checkpoint in (second, first):  # same chunks, same pack: that heals the first
        read = store.read_pods(store.read_manifest(checkpoint.checkpoint_id))
        assert [from_pod(read[p.pod_id]) for p in both] == [from_pod(p) for p in both]


def test_a_store_that_cannot_move_the_object_aside_still_says_it_is_damaged(
    file_store: Store,
) -> None:
    store = file_store
    first = store.write_checkpoint("s", pods())
    raw = RawObjects(store, None)
    blob = keys(store, first.checkpoint_id, "blobs")[0]
    raw.flip(blob, 100, 1)
    (Path(store.backend.root) / DAMAGED).write_text("in the way")  # the move fails
    with pytest.raises(CorruptCheckpointError) as err:
        reads_back(store, first.checkpoint_id)
    message = str(err.value)
    assert blob in message and "does not match its hash" in message
    assert "could not be moved aside" in message
    stored = raw.keys()
    assert blob in stored


def test_a_read_only_s3_store_still_says_it_is_damaged(s3_store: Store, s3_endpoint: str) -> None:
    first = s3_store.write_checkpoint("s", pods())
    raw = RawObjects(s3_store, s3_endpoint)
    blob = keys(s3_store, first.checkpoint_id, "blobs")[0]
    raw.flip(blob, 100, 1)
    with FaultyProxy(s3_endpoint) as proxy:
        proxy.fail("PUT", "/", 403, times=100)  # no writes (the move is a copy)
        proxy.fail("DELETE", "/", 403, times=100)
        reader = open_store(s3_store.url, {"endpoint_url": proxy.url})
        with pytest.raises(CorruptCheckpointError) as err:
            reads_back(reader, first.checkpoint_id)
    assert "does not match its hash" in str(err.value)
    assert "could not be moved aside" in str(err.value)
    stored = raw.keys()
    assert blob in stored and not [k for k in stored if k.startswith(DAMAGED)]


def test_an_intact_pack_is_not_moved_aside_for_a_wrong_reference(file_store: Store) -> None:
    """A writer that passed wrong chunk hashes made the manifest wrong, not the pack."""
    pod = to_pod("small", {"a": 1})
    pod.chunk_hashes = [[b"\x01" * 32]] + [[] for _ in pod.buffers]
    bad = file_store.write_checkpoint("s", [pod])
    (pack,) = keys(file_store, bad.checkpoint_id, "packs")
    with pytest.raises(CorruptCheckpointError, match="pack itself is intact"):
        file_store.read_pods(file_store.read_manifest(bad.checkpoint_id))
    assert pack in file_store.backend.list("packs")


def test_gc_neither_counts_nor_restores_damaged_objects_and_deletes_them_after_grace(
    env,
) -> None:
    store, raw = env
    first = store.write_checkpoint("s", pods())
    blob = keys(store, first.checkpoint_id, "blobs")[0]
    raw.flip(blob, 100, 1)
    with pytest.raises(CorruptCheckpointError):
        reads_back(store, first.checkpoint_id)
    (moved,) = store.backend.list(DAMAGED)
    size = len(raw.get(moved))

    report = collect(store, grace=HOUR)
    assert (report.blobs_restored, report.damaged_deleted) == (0, 0)
    assert store.backend.list(DAMAGED) == [moved]
    assert blob not in store.backend.list("blobs")  # not moved back

    later = datetime.now(timezone.utc) + 2 * HOUR
    dry = collect(store, grace=HOUR, now=later, dry_run=True)
    assert dry.damaged_deleted == 1 and store.backend.list(DAMAGED) == [moved]
    report = collect(store, grace=HOUR, now=later)
    assert report.damaged_deleted == 1 and report.bytes_freed >= size
    assert store.backend.list(DAMAGED) == []
    if store.backend.local:  # its empty run folder went too
        assert not list((Path(store.backend.root) / DAMAGED).iterdir())


# -- a missing bucket ------------------------------------------------------------


def test_missing_bucket_is_an_error_for_listing_showing_and_gc(s3_endpoint: str) -> None:
    url = "s3://no-such-bucket-nbf-typo/p"
    store = open_store(url, {"endpoint_url": s3_endpoint})
    for call in (store.list_checkpoints, lambda: store.backend.subfolders("trash")):
        with pytest.raises(StoreAccessError, match=r"bucket does not exist.*create it"):
            call()
    for args in (["list"], ["show", "latest", "--session", "s"], ["gc", "--dry-run"]):
        out = subprocess.run(
            [NBFERRY, *args, "--store", url, "--store-option", f"endpoint_url={s3_endpoint}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode != 0, (args, out.stdout)
        assert "bucket does not exist" in out.stderr and url in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# -- showing needs no key ----------------------------------------------------------


def test_show_creates_no_signing_key(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    open_store(url).write_checkpoint("s", pods())  # signed with the suite's key
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFERRY_SIGNING_KEY")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    out = subprocess.run(
        [NBFERRY, "show", "latest", "--session", "s", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "no signing key on this host" in out.stdout
    assert not home.exists() or not list(home.rglob("signing.key"))


def test_a_blob_that_is_intact_when_read_again_is_not_moved_aside(env) -> None:
    """Two readers find the same damaged blob; the first moves it and a writer
    stores it again before the second gets to move it: the second must leave
    the good blob alone (the race, played in order)."""
    store, raw = env
    first = store.write_checkpoint("s", pods())
    blob = keys(store, first.checkpoint_id, "blobs")[0]
    fate = store._quarantine(blob, blob)  # the second reader, after the re-upload
    stored = raw.keys()
    assert "intact" in fate and blob in stored
    reads_back(store, first.checkpoint_id)
