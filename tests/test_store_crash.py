"""Crash consistency under real SIGKILL.

A writer subprocess (tests/helpers/store_writer.py) writes checkpoints of
deterministic pods (tests/helpers/store_data.py: shared and per-seed arrays over
several 4 MiB chunks, compressible and not, plus small pods that are packed),
and the test kills it with SIGKILL at a random moment, timed from the events it
prints so that kills land in every phase: before writing, while hashing and
uploading blobs, in the last uploads (the pack) and the manifest commit, and just
after the commit. After every kill:

  * every listed checkpoint reads back whole and equal, byte for byte, to what its
    seed (in its labels and message) says it holds;
  * every checkpoint listed before the kill is still listed, with the same manifest
    file, and still reads back byte-identical;
  * every checkpoint the writer acknowledged is listed;
  * every blob and pack under its final name is whole (its name is its hash), since
    later writers trust any existing blob without reading it;
  * temp files of interrupted local writes ('.tmp-' in the name) are never listed.

The next writer starts with the seed whose checkpoint the kill interrupted, so it
writes over whatever the killed one left behind and must dedup against it safely.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import blake3
import pytest
from helpers.store_check import Ledger, WriterProcess, check_objects, temp_files
from helpers.store_data import digests, expected_digests, labels_for, make_pods

from nbferry.storage import Store

# (number of kills, scale of the per-seed arrays)
CAMPAIGNS = {"file": (25, 0.7), "s3": (8, 0.5)}
PLANNED = 3  # checkpoints of the first, uninterrupted writer
HEADROOM = 6  # checkpoints planned for each killed writer; kills land in the first two


def session_of(seed: int) -> str:
    return "crash-even" if seed % 2 == 0 else "crash-odd"


def plan(start: int, n: int = PLANNED) -> list[tuple[int, str]]:
    return [(seed, session_of(seed)) for seed in range(start, start + n)]


def phase_of(events: list[dict], committed_seeds: set[int]) -> str:
    """Where the kill landed, from the events the writer printed before it."""
    began = [ev["seed"] for ev in events if ev["event"] == "begin"]
    if not began:
        return "starting"
    last = events[-1]["event"]
    if began[-1] in committed_seeds:
        return "between checkpoints" if last == "committed" else "committed, not acknowledged"
    return {"begin": "hashing/blob uploads", "uploaded": "last uploads/pack/commit"}[last]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_sigkill_at_random_moments_never_damages_checkpoints(
    kind: str, request: pytest.FixtureRequest
) -> None:
    kills, scale = CAMPAIGNS[kind]
    store: Store = request.getfixturevalue(f"{kind}_store")
    options = {"endpoint_url": request.getfixturevalue("s3_endpoint")} if kind == "s3" else {}
    rng = random.Random(f"nbferry-crash-{kind}")
    ledger = Ledger(store)
    objects: set[str] = set()

    # An uninterrupted run: the checkpoints every later kill must leave alone, and
    # the timings that spread the kills over the phases of a write.
    writer = WriterProcess(store.url, options, plan(0), scale=scale)
    writer.finish()
    at = {(ev["event"], ev.get("seed")): t for t, ev in writer.events}
    write_s = at["committed", 2] - at["begin", 2]
    tail_s = at["committed", 2] - at["uploaded", 2]
    assert len(ledger.check()) == PLANNED
    check_objects(store, objects)

    next_seed = PLANNED
    phases: Counter[str] = Counter()
    strays: set[Path] = set()
    for n in range(kills):
        anchor = rng.choices(["ready", "begin", "uploaded"], weights=[1, 5, 4])[0]
        limit = {"ready": 0.3 * write_s, "begin": 1.05 * write_s, "uploaded": 1.5 * tail_s}
        delay = rng.uniform(0, limit[anchor])
        todo = plan(next_seed, HEADROOM)
        target = todo[rng.choice([0, 0, 1])][0]

        writer = WriterProcess(store.url, options, todo, scale=scale)
        t0 = writer.wait_for(anchor, None if anchor == "ready" else target)
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        assert writer.kill(), f"kill {n}: the writer finished before it: plan more checkpoints"

        new = ledger.check()
        listed = {r.checkpoint_id for r in store.list_checkpoints()}
        acknowledged = {ev["id"] for ev in writer.committed()}
        assert acknowledged <= listed, f"kill {n}: acknowledged checkpoints are not listed"
        began = {ev["seed"] for _, ev in writer.events if ev["event"] == "begin"}
        new_seeds = [int(ledger.labels[r.checkpoint_id]["seed"]) for r in new]
        assert set(new_seeds) <= began, f"kill {n}: checkpoints of seeds never written"
        all_seeds = list(ledger.seeds().values())
        assert len(all_seeds) == len(set(all_seeds)), "a seed was committed twice"
        check_objects(store, objects)
        if kind == "file":
            leftovers = temp_files(Path(store.backend.root))
            strays.update(leftovers)

        phases[phase_of([ev for _, ev in writer.events], set(new_seeds))] += 1
        # Start the next writer with the interrupted checkpoint, over its leftovers.
        unwritten = [seed for seed, _ in todo if seed not in new_seeds]
        assert unwritten, f"kill {n}: the writer wrote all it was asked before the kill"
        next_seed = unwritten[0]

    print(f"\n{kind}: write {write_s:.3f}s, tail {tail_s:.3f}s")
    print(f"{kind}: {kills} kills landed in {dict(phases)}; {len(strays)} temp files left")
    lost = phases["hashing/blob uploads"] + phases["last uploads/pack/commit"]
    assert lost >= 2, f"too few kills interrupted a write: {dict(phases)}"
    assert len(ledger.manifests) >= PLANNED + kills // 8, "too few checkpoints were committed"

    # Writes after all that still work, in this process and in a new writer.
    seed = 10_000
    if kind == "file":
        plant_stray_temp_files(store, ledger, seed, scale)
    pods = make_pods(seed, scale)
    result = store.write_checkpoint(
        session_of(seed), pods, message=f"seed={seed}", labels=labels_for(seed, scale, "final")
    )
    assert digests(store.read_pods(store.read_manifest(result.checkpoint_id))) == (
        expected_digests(seed, scale)
    )
    writer = WriterProcess(store.url, options, plan(next_seed, 1), scale=scale)
    writer.finish()
    assert len(ledger.check()) == 2
    check_objects(store, objects)


def plant_stray_temp_files(store: Store, ledger: Ledger, seed: int, scale: float) -> None:
    """Temp files as a kill leaves them, some for exactly the objects the next write
    needs: they must not be listed, nor trusted, nor get in the way."""
    root = Path(store.backend.root)
    before = store.list_checkpoints()

    big = make_pods(seed, scale)[1].buffers[0].raw()[: store.chunk_size]
    digest = blake3.blake3(big).hexdigest()
    blob = root / "blobs" / digest[:2] / digest
    assert not blob.exists()
    blob.parent.mkdir(parents=True, exist_ok=True)
    (blob.parent / f"{digest}.tmp-99999-0badf00d").write_bytes(b"\x00" + bytes(big[:1000]))
    (blob.parent / f"{digest}.tmp-99999-00000000").write_bytes(b"")

    ref = before[-1]
    manifest = root / ref.key
    data = manifest.read_bytes()
    # os.link done, unlink of the temp file not: a complete copy under a temp name.
    (manifest.parent / f"{manifest.name}.tmp-99999-feedbeef").write_bytes(data)
    # A manifest being written when the kill came: partial, for an id never committed.
    unborn = manifest.parent / f"{ref.checkpoint_id[:-1]}Z.ckpt.tmp-99999-12345678"
    unborn.write_bytes(data[: len(data) // 2])
    (root / "sessions" / "crash-only-temp").mkdir()
    (root / "sessions" / "crash-only-temp" / f"{ref.checkpoint_id}.ckpt.tmp-1-2").write_bytes(data)

    assert store.list_checkpoints() == before
    assert "crash-only-temp" not in store.sessions()
    assert ref.checkpoint_id in {r.checkpoint_id for r in store.list_checkpoints(ref.session_id)}
    ledger.check()
