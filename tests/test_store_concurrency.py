"""Concurrent writers: four processes checkpoint overlapping data into one store at once.

Each writer (tests/helpers/store_writer.py) writes four checkpoints, started
together. The checkpoints overlap on purpose: every one holds the same shared
array; the first is identical in all four writers (the same blobs and the same
pack, uploaded by four processes at the same moment, into one shared session);
the third is identical in pairs of writers; the fourth repeats the per-process
arrays of another writer's second checkpoint. Sessions are both shared (so each
writer's parent may be another writer's checkpoint) and per-writer. Afterwards
the store must list exactly the checkpoints the writers acknowledged, and each
must read back byte-exact, as its writer wrote it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.store_check import Ledger, WriterProcess, check_objects, temp_files

from nbferry.storage import Store

WRITERS = 4
SCALE = {"file": 1.0, "s3": 0.4}


def plan_of(w: int) -> list[tuple[int, str]]:
    return [
        (1000, "shared"),  # the same checkpoint in every writer
        (100 + w, f"own-{w}"),  # this writer's alone
        (2000 + w // 2, "shared" if w % 2 else f"pair-{w // 2}"),  # the same in pairs
        (100 + (w + 1) % WRITERS, f"own-{w}"),  # another writer's arrays, again
    ]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_four_processes_checkpoint_overlapping_data_at_once(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store: Store = request.getfixturevalue(f"{kind}_store")
    options = {"endpoint_url": request.getfixturevalue("s3_endpoint")} if kind == "s3" else {}
    scale = SCALE[kind]

    writers = [
        WriterProcess(store.url, options, plan_of(w), scale=scale, name=f"w{w}", wait=True)
        for w in range(WRITERS)
    ]
    for writer in writers:
        writer.wait_for("ready", timeout=60)
    for writer in writers:  # all at once
        writer.go()
    results = [writer.finish(timeout=120) for writer in writers]

    acknowledged: dict[str, tuple[int, int, str]] = {}  # id -> (writer, seed, session)
    for w, events in enumerate(results):
        done = [ev for ev in events if ev["event"] == "committed"]
        assert [(ev["seed"], ev["session"]) for ev in done] == plan_of(w)
        for ev in done:
            acknowledged[ev["id"]] = (w, ev["seed"], ev["session"])
    assert len(acknowledged) == WRITERS * len(plan_of(0)), "checkpoint ids collided"

    refs = store.list_checkpoints()
    assert {r.checkpoint_id for r in refs} == set(acknowledged)
    for ref in refs:
        assert ref.session_id == acknowledged[ref.checkpoint_id][2]
    sessions = {"shared", *(f"own-{w}" for w in range(WRITERS)), "pair-0", "pair-1"}
    assert set(store.sessions()) == sessions
    assert len(store.list_checkpoints("shared")) == WRITERS + WRITERS // 2

    # Every checkpoint reads back whole and as its writer wrote it (Ledger also checks
    # that each parent is an earlier checkpoint of the same session).
    ledger = Ledger(store)
    assert len(ledger.check()) == len(acknowledged)
    for cid, (w, seed, _) in acknowledged.items():
        labels = ledger.labels[cid]
        assert (labels["writer"], int(labels["seed"])) == (f"w{w}", seed)
    # Every blob and pack is whole, and each is used: nothing was written twice under
    # two names, nor left behind.
    objects: set[str] = set()
    check_objects(store, objects)
    assert objects == referenced_objects(store)
    if kind == "file":
        assert temp_files(Path(store.backend.root)) == [], "a finished write left a temp file"

    # The store is still fine for the next writer, in a shared session.
    writer = WriterProcess(store.url, options, [(1000, "shared"), (3000, "shared")], scale=scale)
    writer.finish()
    assert len(ledger.check()) == 2


def referenced_objects(store: Store) -> set[str]:
    keys = set()
    for ref in store.list_checkpoints():
        for pod in store.read_manifest(ref).pods:
            for buf in [pod.header, *pod.buffers]:
                for chunk in buf.chunks:
                    h = (chunk.pack or chunk.hash).hex()
                    keys.add(f"{'packs' if chunk.pack else 'blobs'}/{h[:2]}/{h}")
    return keys
