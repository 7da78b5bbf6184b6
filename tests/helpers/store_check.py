"""Test-side helpers for the multi-process store tests.

WriterProcess runs store_writer.py as a subprocess and timestamps its events as
they arrive, so a test can SIGKILL it at a chosen moment. Ledger checks that
every checkpoint a store lists reads back whole and byte-exact, and that
checkpoints seen before never change. check_objects checks that every blob and
pack under its final name is complete (its name is the hash of its content).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import blake3
import zstandard

from helpers.store_data import digests, expected_from_labels
from nbferry.storage import CheckpointRef, Store
from nbferry.v1 import manifest_pb2 as pb

WRITER = Path(__file__).with_name("store_writer.py")
Event = dict[str, Any]


class WriterProcess:
    """One store_writer.py subprocess and the events it printed, with arrival times."""

    def __init__(
        self,
        url: str,
        options: Mapping[str, Any],
        plan: Iterable[tuple[int, str]],
        *,
        scale: float = 1.0,
        name: str = "writer",
        wait: bool = False,
        parent: str = "latest",
    ) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (kept as long as the writer)
        cmd = [
            sys.executable,
            str(WRITER),
            url,
            "--options",
            json.dumps(dict(options)),
            "--scale",
            repr(scale),
            "--writer",
            name,
            "--parent",
            parent,
            "--plan",
            *(f"{seed}:{session}" for seed, session in plan),
        ]
        if wait:
            cmd.append("--wait")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if wait else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.events: list[tuple[float, Event]] = []
        self._queue: queue.Queue[tuple[float, Event] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put((time.monotonic(), json.loads(line)))
        self._queue.put(None)

    def wait_for(self, event: str, seed: int | None = None, timeout: float = 60.0) -> float:
        """Arrival time of the first `event` (for `seed`), waiting for it if need be."""

        def match(ev: Event) -> bool:
            return ev["event"] == event and (seed is None or ev.get("seed") == seed)

        for t, ev in self.events:
            if match(ev):
                return t
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(
                    f"writer gave no {event!r} event in {timeout}s: {self.stderr_text()}"
                ) from None
            if item is None:
                self._queue.put(None)
                raise AssertionError(
                    f"writer exited (rc {self.proc.wait()}) before {event!r} "
                    f"(seed {seed}): {self.stderr_text()}"
                )
            self.events.append(item)
            if match(item[1]):
                return item[0]

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def kill(self) -> bool:
        """SIGKILL it now; True when that is what ended it (it had not exited before)."""
        os.kill(self.proc.pid, signal.SIGKILL)  # a zombie not yet waited for is still killable
        self.proc.wait()
        self._drain()
        return self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 60.0) -> list[Event]:
        """Wait for a normal exit (rc 0) and return all events."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"writer still running after {timeout}s: {self.stderr_text()}"
            ) from None
        self._drain()
        assert rc == 0, f"writer failed with rc {rc}: {self.stderr_text()}"
        return [ev for _, ev in self.events]

    def _drain(self) -> None:
        self._reader.join(10)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.events.append(item)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-4000:]

    def committed(self) -> list[Event]:
        return [ev for _, ev in self.events if ev["event"] == "committed"]


def check_pods_equal(
    actual: Mapping[str, list[tuple[int, bytes]]],
    expected: Mapping[str, list[tuple[int, bytes]]],
    what: str,
) -> None:
    assert sorted(actual) == sorted(expected), f"{what}: pods {sorted(actual)}"
    for pod_id, want in expected.items():
        got = actual[pod_id]
        assert [s for s, _ in got] == [s for s, _ in want], f"{what}: pod {pod_id} sizes differ"
        assert got == want, f"{what}: pod {pod_id} bytes differ from what was written"


class Ledger:
    """Every checkpoint of a store, checked whole each time, and never changing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.manifests: dict[str, bytes] = {}  # checkpoint id -> its manifest file, as first seen
        self.refs: dict[str, CheckpointRef] = {}
        self.labels: dict[str, dict[str, str]] = {}

    def check(self, recheck_old: bool = True) -> list[CheckpointRef]:
        """Read back every listed checkpoint (or only new ones); return the new ones."""
        refs = self.store.list_checkpoints()
        ids = [r.checkpoint_id for r in refs]
        assert len(ids) == len(set(ids)), f"a checkpoint id is listed twice: {ids}"
        vanished = sorted(set(self.manifests) - set(ids))
        assert not vanished, f"checkpoints that were listed before are gone: {vanished}"
        by_id = {r.checkpoint_id: r for r in refs}
        new = []
        for ref in refs:
            assert ".tmp-" not in ref.key, f"a temp file is listed as a checkpoint: {ref.key}"
            old = ref.checkpoint_id in self.manifests
            if old and not recheck_old:
                continue
            what = f"checkpoint {ref.checkpoint_id} ({ref.key})"
            raw = self.store.backend.get(ref.key)
            if old:
                assert raw == self.manifests[ref.checkpoint_id], f"{what}: manifest file changed"
                assert ref == self.refs[ref.checkpoint_id]
            manifest = self.store.read_manifest(ref)
            labels = dict(manifest.labels)
            assert manifest.message == f"seed={labels['seed']}", what
            if manifest.parent_checkpoint_id:
                parent = by_id.get(manifest.parent_checkpoint_id)
                assert parent is not None, f"{what}: parent is not a committed checkpoint"
                assert parent.session_id == ref.session_id, f"{what}: parent in another session"
                assert parent.checkpoint_id < ref.checkpoint_id, f"{what}: parent is newer"
            pods = self.store.read_pods(manifest)
            check_pods_equal(digests(pods), expected_from_labels(labels), f"{what} {labels}")
            if not old:
                self.manifests[ref.checkpoint_id] = raw
                self.refs[ref.checkpoint_id] = ref
                self.labels[ref.checkpoint_id] = labels
                new.append(ref)
        return new

    def seeds(self) -> dict[str, int]:
        return {cid: int(labels["seed"]) for cid, labels in self.labels.items()}


def check_objects(store: Store, seen: set[str]) -> int:
    """Every blob and pack not in `seen` must be whole: its name is the BLAKE3 of its
    raw content (blobs: after the codec tag byte is decoded). Returns how many were new."""
    new = 0
    for key in store.backend.list("blobs/") + store.backend.list("packs/"):
        if key in seen:
            continue
        name = key.rsplit("/", 1)[-1]
        assert ".tmp-" not in name, key
        data = store.backend.get(key)
        if key.startswith("packs/"):
            content = data
        else:
            assert data, f"{key} is empty"
            codec, payload = data[0], data[1:]
            if codec == pb.CODEC_ZSTD:
                content = zstandard.ZstdDecompressor().decompress(payload)
            else:
                assert codec == pb.CODEC_RAW, f"{key}: codec tag {codec}"
                content = payload
        assert blake3.blake3(content).hexdigest() == name, f"{key} is not whole"
        seen.add(key)
        new += 1
    return new


def temp_files(root: Path) -> list[Path]:
    """Leftover temp files (interrupted local writes) under a file:// store's root."""
    return sorted(p for p in root.rglob("*") if ".tmp-" in p.name)
