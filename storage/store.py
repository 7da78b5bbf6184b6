"""The checkpoint store: write, read, list and delete checkpoints under one URL.

Layout under the store root:

    blobs/<hh>/<hash>              one chunk (codec tag + payload), hash = BLAKE3 of raw bytes
    packs/<hh>/<hash>              many small chunks back to back, hash = BLAKE3 of the pack
    sessions/<session>/<id>.ckpt   a signed manifest: the only commit point
    trash/<run>/<key>              deleted manifests and collected blobs, until the
                                   GC grace period ends (see nbferry.storage.gc)
    damaged/<run>/<key>            blobs and packs a read found damaged, moved aside so
                                   that the next writer stores their chunks again

Blobs and packs are immutable and written before the manifest, which is
created last and create-only. A crash at any instant therefore leaves either no
new manifest or a complete one, and never touches an earlier checkpoint.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import mmap
import platform
import secrets
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import blake3
import zstandard

from nbferry.storage import chunks as ck
from nbferry.storage import nbferry_version
from nbferry.storage.backend import Backend
from nbferry.storage.errors import (
    AmbiguousCheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StoreError,
)
from nbferry.storage.ids import (
    checkpoint_time,
    is_checkpoint_id,
    new_checkpoint_id,
    normalize_id_prefix,
    validate_session_id,
)
from nbferry.storage.location import default_store_url, fsspec_options
from nbferry.storage.manifest import decode_manifest, encode_manifest
from nbferry.storage.retry import RetryPolicy
from nbferry.storage.signing import ENV_KEY, SigningKey, load_signing_key
from nbferry.v1 import manifest_pb2 as pb

PACK_THRESHOLD = 256 << 10  # chunks smaller than this go into packs
PACK_TARGET = 8 << 20  # a pack is flushed once it holds this much
INLINE = ck.INLINE  # chunks smaller than this are hashed and encoded on the calling thread
MANIFEST_SUFFIX = ".ckpt"
TRASH = "trash"  # trash/<run>/<key>: what GC (or a delete) moved out, kept for a grace period
DAMAGED = "damaged"  # damaged/<run>/<key>: objects a read found damaged (never read or reused)
Progress = Callable[[int, int], None]  # (bytes done, bytes total)
T = TypeVar("T")


@dataclass
class PodData:
    """One pod's bytes: a pickle header plus out-of-band buffers.

    `chunk_hashes`, when given, are the BLAKE3 hashes of the chunks of
    [header, *buffers] cut at `chunk_size` (`chunks.buffer_chunks`): a caller
    that hashed them already (the agent, for its pod digests) spares the store
    a second pass over every byte. The store trusts them, so they must describe
    the bytes as they are when written (the agent hashes and writes on the
    kernel's main thread, between cells): a wrong hash makes the chunk fail
    verification when read, or, if the store holds a chunk with that hash,
    stands for that chunk's content instead.
    """

    pod_id: str
    header: bytes | bytearray | memoryview
    buffers: Sequence[Any] = ()
    variables: Sequence[str] = ()
    serializer: str = "pickle"
    chunk_hashes: Sequence[Sequence[bytes]] | None = None
    chunk_size: int = ck.DEFAULT_CHUNK_SIZE


@dataclass(frozen=True)
class CheckpointRef:
    checkpoint_id: str
    session_id: str
    key: str

    @property
    def created(self) -> datetime:
        return checkpoint_time(self.checkpoint_id)


@dataclass
class WriteResult:
    checkpoint_id: str
    session_id: str
    parent_checkpoint_id: str
    raw_bytes: int
    stored_bytes: int
    uploaded_bytes: int
    reused_raw_bytes: int
    chunks: int
    chunks_uploaded: int
    blobs_written: int
    seconds: float
    manifest: pb.Manifest = field(repr=False, default_factory=pb.Manifest)


@dataclass
class _Chunk:
    """A chunk of this checkpoint: where it goes and, once known, where it is."""

    view: memoryview
    hash: bytes = b""
    ref: pb.ChunkRef | None = None
    uses: list[pb.ChunkRef] = field(default_factory=list)  # manifest refs to fill in


class Store:
    """A checkpoint store at an fsspec URL. Thread-safe for concurrent reads."""

    # A checkpoint must commit within this many seconds of starting (reading its
    # parent, checking which blobs exist), or it is not committed: garbage
    # collection may remove blobs it reuses once they have sat unreferenced in
    # the trash for the GC grace period, which must therefore be longer.
    max_write_seconds: float = 6 * 3600.0

    def __init__(
        self,
        url: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        workers: int | None = None,
        chunk_size: int = ck.DEFAULT_CHUNK_SIZE,
        retry: RetryPolicy | None = None,
        fsync: bool = True,
    ) -> None:
        self.url = url or default_store_url()
        self.backend = Backend(
            self.url, fsspec_options(self.url, dict(options or {})), retry=retry, fsync=fsync
        )
        self.workers = workers or (4 if self.backend.local else 16)
        self.chunk_size = chunk_size
        self._key = key
        self._key_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def key(self) -> SigningKey:
        with self._key_lock:
            if self._key is None:
                self._key = load_signing_key()
            return self._key

    # -- listing -------------------------------------------------------------

    def list_checkpoints(self, session_id: str | None = None) -> list[CheckpointRef]:
        """Committed checkpoints, oldest first (ids sort by creation time)."""
        prefix = f"sessions/{validate_session_id(session_id)}/" if session_id else "sessions/"
        refs = []
        for key in self.backend.list(prefix):
            parts = key.split("/")
            if len(parts) != 3 or not parts[2].endswith(MANIFEST_SUFFIX):
                continue
            cid = parts[2][: -len(MANIFEST_SUFFIX)]
            if is_checkpoint_id(cid):
                refs.append(CheckpointRef(cid, parts[1], key))
        return sorted(refs, key=lambda r: r.checkpoint_id)

    def latest(self, session_id: str) -> CheckpointRef | None:
        refs = self.list_checkpoints(session_id)
        return refs[-1] if refs else None

    def sessions(self) -> list[str]:
        return sorted({r.session_id for r in self.list_checkpoints()})

    def resolve(self, id_or_prefix: str, session_id: str | None = None) -> CheckpointRef:
        """A checkpoint by full id, unique prefix, or 'latest' (with a session)."""
        if id_or_prefix == "latest":
            if not session_id:
                raise CheckpointNotFoundError("'latest' needs a session id (--session)")
            ref = self.latest(session_id)
            if ref is None:
                raise CheckpointNotFoundError(
                    f"store {self.url} has no checkpoint for session {session_id!r}"
                )
            return ref
        try:
            prefix = normalize_id_prefix(id_or_prefix)
        except ValueError as exc:
            raise CheckpointNotFoundError(str(exc)) from exc
        matches = [
            r for r in self.list_checkpoints(session_id) if r.checkpoint_id.startswith(prefix)
        ]
        if not matches:
            raise CheckpointNotFoundError(
                f"no checkpoint {id_or_prefix!r} in store {self.url}"
                f"{f' for session {session_id!r}' if session_id else ''}: run `nbferry list` "
                "to see the checkpoints there, or check --store"
            )
        if len({r.checkpoint_id for r in matches}) == 1 and len(matches) > 1:
            sessions = ", ".join(repr(r.session_id) for r in matches)
            raise AmbiguousCheckpointError(
                f"checkpoint {matches[0].checkpoint_id} is in several sessions ({sessions}): "
                "a manifest was copied by hand; name the session (--session)"
            )
        if len(matches) > 1:
            shown = ", ".join(r.checkpoint_id for r in matches[:5])
            raise AmbiguousCheckpointError(
                f"checkpoint prefix {id_or_prefix!r} matches {len(matches)} checkpoints "
                f"({shown}{', ...' if len(matches) > 5 else ''}): type more characters"
            )
        return matches[0]

    # -- manifests -------------------------------------------------------------

    def read_manifest(self, checkpoint: str | CheckpointRef, verify: bool = True) -> pb.Manifest:
        """The manifest of a checkpoint; with verify, its signature must check out.

        Verification is what makes it safe to unpickle the checkpoint's pods;
        listing and showing may skip it.
        """
        ref = checkpoint if isinstance(checkpoint, CheckpointRef) else self.resolve(checkpoint)
        where = f"checkpoint {ref.checkpoint_id} ({self.url}/{ref.key})"
        try:
            data = self.backend.get(ref.key)
        except FileNotFoundError as exc:
            raise CheckpointNotFoundError(f"{where} no longer exists (deleted?)") from exc
        decoded = decode_manifest(data, where)
        if verify:
            self.key.verify(decoded.body, decoded.signature, where)
        manifest = decoded.manifest
        if manifest.checkpoint_id != ref.checkpoint_id or manifest.session_id != ref.session_id:
            raise CorruptCheckpointError(
                f"{where} holds checkpoint {manifest.checkpoint_id} of session "
                f"{manifest.session_id!r}: the file was moved or copied by hand"
            )
        return manifest

    def signature_status(self, checkpoint: str | CheckpointRef) -> str:
        """'verified', or why not (for display; never raises for a bad signature)."""
        ref = checkpoint if isinstance(checkpoint, CheckpointRef) else self.resolve(checkpoint)
        where = f"checkpoint {ref.checkpoint_id}"
        decoded = decode_manifest(self.backend.get(ref.key), where)
        # Showing needs no key: never create one here (load_signing_key would).
        key = self._key
        if key is None:
            try:
                key = load_signing_key(create=False)
            except FileNotFoundError:
                return f"not checked: no signing key on this host (set {ENV_KEY})"
        try:
            key.verify(decoded.body, decoded.signature, where)
        except StoreError as exc:
            return str(exc)
        return "verified"

    def delete_checkpoint(
        self, checkpoint: str | CheckpointRef, *, trash_run: str | None = None
    ) -> CheckpointRef:
        """Remove a checkpoint: its manifest moves to the trash, where garbage
        collection deletes it after the grace period; its blobs go after that.

        A writer that read this manifest as its parent may still reuse its
        chunks; keeping the manifest in the trash for the grace period keeps
        them alive until such a writer has committed (or given up). `trash_run`
        (from trash_run_name) puts several deletions in one trash folder.
        """
        ref = checkpoint if isinstance(checkpoint, CheckpointRef) else self.resolve(checkpoint)
        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile by someone else
            self.backend.move(ref.key, f"{TRASH}/{trash_run or trash_run_name()}/{ref.key}")
        return ref

    # -- writing ---------------------------------------------------------------

    def write_checkpoint(
        self,
        session_id: str,
        pods: Sequence[PodData],
        *,
        variables: Mapping[str, pb.VariableRef] | None = None,
        skipped: Iterable[pb.SkippedVariable] = (),
        modules: Iterable[pb.ModuleBinding] = (),
        plan: pb.Plan | None = None,
        history: pb.History | None = None,
        environment: pb.Environment | None = None,
        message: str = "",
        labels: Mapping[str, str] | None = None,
        parent: str | None = "latest",
        progress: Progress | None = None,
    ) -> WriteResult:
        """Upload the pods' missing chunks, then commit the manifest.

        `parent="latest"` links to (and deduplicates against) the session's
        latest checkpoint; pass an id, or None for no parent.
        """
        started = time.perf_counter()
        begun = (time.monotonic(), time.time())  # for the commit deadline (max_write_seconds)
        validate_session_id(session_id)
        self.backend.prepare_write()
        parent_manifest = self._parent_manifest(session_id, parent)
        if parent == "latest":  # ids sort by time, and `latest` is the last by id
            newest = parent_manifest.checkpoint_id if parent_manifest else ""
        else:
            ref = self.latest(session_id)
            newest = ref.checkpoint_id if ref else ""
        checkpoint_id = new_checkpoint_id(after=newest)
        manifest = pb.Manifest(
            checkpoint_id=checkpoint_id,
            session_id=session_id,
            parent_checkpoint_id=parent_manifest.checkpoint_id if parent_manifest else "",
            producer=pb.Producer(
                nbferry_version=nbferry_version(),
                python_version=platform.python_version(),
                platform=f"{sys.platform}-{platform.machine()}",
                hostname=socket.gethostname(),
            ),
            message=message,
            labels=dict(labels or {}),
        )
        manifest.created.GetCurrentTime()
        manifest.labels.setdefault("user", _user())
        for msg, target in ((plan, manifest.plan), (history, manifest.history)):
            if msg is not None:
                target.CopyFrom(msg)
        if environment is not None:
            manifest.environment.CopyFrom(environment)
        manifest.skipped.extend(skipped)
        manifest.modules.extend(modules)

        table = self._lay_out(manifest, pods)
        for name, ref in (variables or {}).items():
            manifest.variables[name].CopyFrom(ref)
        for pod in pods:
            for name in pod.variables:
                if name not in manifest.variables:
                    manifest.variables[name].pod_id = pod.pod_id

        stats = self._upload(table, _chunk_index(parent_manifest), progress)
        stats.seconds = time.perf_counter() - started
        manifest.stats.CopyFrom(stats)
        self._check_deadline(manifest, begun)
        self._commit(manifest)
        stats.seconds = time.perf_counter() - started
        return WriteResult(
            checkpoint_id=checkpoint_id,
            session_id=session_id,
            parent_checkpoint_id=manifest.parent_checkpoint_id,
            raw_bytes=stats.raw_bytes,
            stored_bytes=stats.stored_bytes,
            uploaded_bytes=stats.uploaded_bytes,
            reused_raw_bytes=stats.reused_raw_bytes,
            chunks=stats.chunks,
            chunks_uploaded=stats.chunks_uploaded,
            blobs_written=stats.blobs_written,
            seconds=stats.seconds,
            manifest=manifest,
        )

    def _parent_manifest(self, session_id: str, parent: str | None) -> pb.Manifest | None:
        if parent is None:
            return None
        ref = self.latest(session_id) if parent == "latest" else self.resolve(parent, session_id)
        if ref is None:
            return None
        try:
            return self.read_manifest(ref)
        except StoreError:
            # An unreadable or foreign parent is not trusted as a dedup index;
            # the new checkpoint is then simply complete on its own.
            return None

    def _lay_out(self, manifest: pb.Manifest, pods: Sequence[PodData]) -> dict[bytes, _Chunk]:
        """Add pods to the manifest and cut their bytes into chunks (no copies)."""
        ordered: list[tuple[memoryview, pb.ChunkRef]] = []
        given_at: dict[int, bytes] = {}  # index in ordered -> hash the caller computed
        seen_ids: set[str] = set()
        for pod in pods:
            if pod.pod_id in seen_ids:
                raise ValueError(f"duplicate pod id {pod.pod_id!r}")
            seen_ids.add(pod.pod_id)
            msg = manifest.pods.add(id=pod.pod_id, serializer=pod.serializer)
            msg.variables.extend(pod.variables)
            parts = [pod.header, *pod.buffers]
            cut = ck.buffer_chunks(parts, self.chunk_size)
            given = pod.chunk_hashes if pod.chunk_size == self.chunk_size else None
            if given is not None and [len(h) for h in given] != [len(c) for c in cut]:
                raise ValueError(f"pod {pod.pod_id!r}: chunk_hashes do not match its buffers")
            targets = [msg.header] + [msg.buffers.add() for _ in pod.buffers]
            for i, (pieces, target) in enumerate(zip(cut, targets, strict=True)):
                target.size = sum(len(piece) for piece in pieces)
                for n, piece in enumerate(pieces):
                    if given is not None:
                        given_at[len(ordered)] = given[i][n]
                    ordered.append((piece, target.chunks.add(raw_size=len(piece))))
        todo = [i for i in range(len(ordered)) if i not in given_at]
        fresh = ck.chunk_hashes([ordered[i][0] for i in todo], self.workers)
        given_at.update(zip(todo, fresh, strict=True))
        hashes = [given_at[i] for i in range(len(ordered))]
        table: dict[bytes, _Chunk] = {}
        for (view, ref), digest in zip(ordered, hashes, strict=True):
            ref.hash = digest
            table.setdefault(digest, _Chunk(view, digest)).uses.append(ref)
        return table

    def _upload(
        self, table: dict[bytes, _Chunk], known: dict[bytes, pb.ChunkRef], progress: Progress | None
    ) -> pb.WriteStats:
        """Store every chunk the known index lacks; fill in all manifest refs.

        Big chunks are checked for, encoded and uploaded in one task each, so
        existence checks overlap other uploads; small ones are packed. At most
        `workers` encoded chunks (plus one pack) are in memory at once.
        """
        stats = pb.WriteStats(chunks=len(table))
        stats.raw_bytes = sum(len(c.view) * len(c.uses) for c in table.values())
        done = _Counter(stats.raw_bytes, progress)
        big: list[_Chunk] = []
        small: list[_Chunk] = []
        with ThreadPoolExecutor(self.workers) as pool:
            known = self._still_stored({h: known[h] for h in table if h in known})
            for chunk in table.values():
                if chunk.hash in known:
                    chunk.ref = known[chunk.hash]
                    stats.reused_raw_bytes += len(chunk.view) * len(chunk.uses)
                    done.add(len(chunk.view) * len(chunk.uses))
                else:
                    (big if len(chunk.view) >= PACK_THRESHOLD else small).append(chunk)
            for chunk, uploaded in zip(
                big, _bounded_map(pool, self._store_big, big, self.workers), strict=True
            ):
                if uploaded:
                    stats.chunks_uploaded += 1
                    stats.blobs_written += 1
                    stats.uploaded_bytes += uploaded
                else:  # already in the store, written by someone else
                    stats.reused_raw_bytes += len(chunk.view) * len(chunk.uses)
                done.add(len(chunk.view) * len(chunk.uses))
            self._store_small(pool, small, stats, done)
        for chunk in table.values():
            assert chunk.ref is not None
            for use in chunk.uses:
                use.stored_size = chunk.ref.stored_size
                use.codec = chunk.ref.codec
                use.pack = chunk.ref.pack
                use.offset = chunk.ref.offset
            stats.stored_bytes += chunk.ref.stored_size
        return stats

    def _still_stored(self, known: dict[bytes, pb.ChunkRef]) -> dict[bytes, pb.ChunkRef]:
        """The parent's refs, minus those into objects a reader found damaged or
        missing (see _flag): their chunks are stored again.

        A parent manifest proves its objects were stored, not that they still
        are: trusting one that was lost or damaged would make every later
        checkpoint of the session unreadable. One LIST of damaged/ (usually
        empty) rather than a size query per object.
        """
        if not known:
            return known
        flagged = {k.split("/", 2)[2] for k in self.backend.list(DAMAGED) if k.count("/") >= 3}
        return {h: ref for h, ref in known.items() if _location(ref) not in flagged}

    def _store_big(self, chunk: _Chunk) -> int:
        """Upload one big chunk as its own blob unless it is there; returns bytes uploaded.

        An existing blob is trusted: reads verify it, and move it aside if it is
        damaged, so that the next writer stores it again.
        """
        key = _blob_key(chunk.hash)
        size = self.backend.size(key)
        if size is not None:
            chunk.ref = pb.ChunkRef(stored_size=size, codec=pb.CODEC_UNSPECIFIED)
            return 0
        codec, payload = ck.encode(chunk.view)
        self.backend.put(key, [bytes([codec]), payload])
        chunk.ref = pb.ChunkRef(stored_size=1 + len(payload), codec=codec)
        return chunk.ref.stored_size

    def _store_small(
        self, pool: ThreadPoolExecutor, todo: list[_Chunk], stats: pb.WriteStats, done: _Counter
    ) -> None:
        """Encode small chunks in the pool and pack them, in order, into pack blobs."""
        pack = _PackBuilder()
        uploads: list[Future[None]] = []

        def flush() -> None:
            while len(uploads) >= 2:  # bounded memory: at most two packs in flight
                uploads.pop(0).result()
            key, parts, size = pack.finish()
            uploads.append(pool.submit(self.backend.put, key, parts))
            stats.uploaded_bytes += size
            stats.blobs_written += 1

        tiny = [c for c in todo if len(c.view) < INLINE]
        rest = [c for c in todo if len(c.view) >= INLINE]
        encoded = _bounded_map(pool, lambda c: ck.encode(c.view), rest, self.workers)
        # Lazily, both: building a list here would encode every chunk before
        # packing any and lose the memory bound.
        pairs = itertools.chain(
            ((c, ck.encode(c.view)) for c in tiny),  # inline: cheaper than a pool task
            zip(rest, encoded, strict=True),
        )
        for chunk, (codec, payload) in pairs:
            chunk.ref = pack.add(bytes([codec]), bytes(payload), codec)
            stats.chunks_uploaded += 1
            if pack.size >= PACK_TARGET:
                flush()
            done.add(len(chunk.view) * len(chunk.uses))
        if pack.size:
            flush()
        for fut in uploads:
            fut.result()

    def _check_deadline(self, manifest: pb.Manifest, begun: tuple[float, float]) -> None:
        """Refuse to commit a checkpoint whose dedup decisions may be stale.

        Both clocks count: the monotonic one misses time spent suspended.
        """
        elapsed = max(time.monotonic() - begun[0], time.time() - begun[1])
        if elapsed > self.max_write_seconds:
            raise StoreError(
                f"store {self.url}: checkpoint {manifest.checkpoint_id} of session "
                f"{manifest.session_id!r} was not committed: writing it took {elapsed:.0f} s, "
                f"more than the {self.max_write_seconds:.0f} s a checkpoint may take "
                "(Store.max_write_seconds), after which garbage collection may have removed "
                "blobs it reuses. Checkpoint again: chunks already uploaded are not sent again"
            )

    def _commit(self, manifest: pb.Manifest) -> None:
        key = f"sessions/{manifest.session_id}/{manifest.checkpoint_id}{MANIFEST_SUFFIX}"
        data = encode_manifest(manifest, self.key)
        try:
            self.backend.put_new(key, data)
        except FileExistsError:
            # A retried create whose first attempt landed is a success.
            if self.backend.get(key) != data:
                raise StoreError(
                    f"store {self.url}: {key} already exists with other content"
                ) from None

    # -- reading ---------------------------------------------------------------

    def read_pods(
        self,
        manifest: pb.Manifest,
        pod_ids: Iterable[str] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, PodData]:
        """Fetch, verify and decode pods into writable buffers (bytearray or mmap).

        Every chunk is checked against its BLAKE3 hash; any failure raises
        CorruptCheckpointError naming the checkpoint, the object and the pod.
        """
        wanted = set(pod_ids) if pod_ids is not None else None
        result: dict[str, PodData] = {}
        # blob key -> [(chunk ref, output view, description)]
        jobs: dict[str, list[tuple[pb.ChunkRef, memoryview, str]]] = defaultdict(list)
        total = 0
        for pod in manifest.pods:
            if wanted is not None and pod.id not in wanted:
                continue
            names = ", ".join(pod.variables) or "-"
            outs = []
            for index, buf in enumerate([pod.header, *pod.buffers]):
                out = _allocate(buf.size)
                outs.append(out)
                view, offset = memoryview(out), 0
                what = "header" if index == 0 else f"buffer {index}"
                for n, ref in enumerate(buf.chunks):
                    if offset + ref.raw_size > buf.size:
                        raise CorruptCheckpointError(
                            f"checkpoint {manifest.checkpoint_id}: pod {pod.id} {what} has "
                            "chunks larger than the buffer (damaged manifest)"
                        )
                    desc = f"chunk {n} of {what} of pod {pod.id} ({names})"
                    jobs[_location(ref)].append((ref, view[offset : offset + ref.raw_size], desc))
                    offset += ref.raw_size
                    total += ref.raw_size
                if offset != buf.size:
                    raise CorruptCheckpointError(
                        f"checkpoint {manifest.checkpoint_id}: pod {pod.id} {what} is missing "
                        "chunks (damaged manifest)"
                    )
            result[pod.id] = PodData(pod.id, outs[0], outs[1:], list(pod.variables), pod.serializer)
        if wanted is not None and wanted - result.keys():
            raise CheckpointNotFoundError(
                f"checkpoint {manifest.checkpoint_id} has no pod {sorted(wanted - result.keys())}"
            )
        done = _Counter(total, progress)
        with ThreadPoolExecutor(self.workers) as pool:
            for _ in _bounded_map(
                pool,
                lambda item: self._fetch_blob(manifest, item[0], item[1], done),
                list(jobs.items()),
                2 * self.workers,
            ):
                pass
        return result

    def _fetch_blob(
        self,
        manifest: pb.Manifest,
        key: str,
        items: list[tuple[pb.ChunkRef, memoryview, str]],
        done: _Counter,
    ) -> None:
        is_pack = key.startswith("packs/")
        if self.backend.local and not is_pack:
            self._read_local_blob(manifest, key, items, done)
            return
        # A chunk blob is read whole (no Range header); a pack only as far as needed.
        start = min(ref.offset for ref, _, _ in items) if is_pack else None
        end = max(ref.offset + ref.stored_size for ref, _, _ in items) if is_pack else None
        try:
            where, data = self._with_trash(key, lambda k: self.backend.get(k, start, end))
        except FileNotFoundError:
            raise self._missing(manifest, key, items[0][2]) from None
        whole = memoryview(data)
        for ref, out, desc in items:
            lo = ref.offset - (start or 0)
            # A blob is its whole object: a writer with another zstd may have
            # encoded the chunk to another size (the hash check is what counts).
            entry = whole[lo : lo + ref.stored_size] if is_pack else whole
            problem = ""
            if (is_pack and len(entry) != ref.stored_size) or not len(entry):
                problem = f"truncated: {len(entry)} of {ref.stored_size} bytes"
            else:
                try:
                    ck.decode_into(entry[0], entry[1:], out)
                except ValueError as exc:
                    problem = _undecodable(exc, len(entry), ref)
            self._verify(manifest, key, where, desc, ref, out, problem)
            done.add(ref.raw_size)

    def _read_local_blob(
        self,
        manifest: pb.Manifest,
        key: str,
        items: list[tuple[pb.ChunkRef, memoryview, str]],
        done: _Counter,
    ) -> None:
        """A local chunk blob, raw chunks read straight into their output (no copies)."""
        try:
            where, f = self._with_trash(key, self.backend.open_local)
        except FileNotFoundError:
            raise self._missing(manifest, key, items[0][2]) from None
        with f:
            for ref, out, desc in items:
                f.seek(0)
                tag = f.read(1)
                problem, payload = "", b""
                try:
                    if not tag:
                        problem = f"truncated: 0 of {ref.stored_size} bytes"
                    elif tag[0] == pb.CODEC_RAW:
                        n = f.readinto(out)
                        if n != len(out):
                            problem = f"truncated: {1 + n} of {ref.stored_size} bytes"
                        elif f.read(1):
                            problem = f"padded: more than {ref.stored_size} bytes"
                    else:  # its size may differ from ref's (see _fetch_blob)
                        payload = f.read()
                        ck.decode_into(tag[0], payload, out)
                except ValueError as exc:
                    problem = _undecodable(exc, 1 + len(payload), ref)
                self._verify(manifest, key, where, desc, ref, out, problem)
                done.add(ref.raw_size)

    def _with_trash(self, key: str, read: Callable[[str], T]) -> tuple[str, T]:
        """(where, read(where)): the object at key, or in the trash where garbage
        collection put it.

        A checkpoint that reused a blob while a concurrent GC moved it to the
        trash commits all the same; its blob is moved back by the next GC. Only
        a missing object pays for this (one LIST, then one try per trash run).
        """
        try:
            return key, read(key)
        except FileNotFoundError:
            pass
        for _ in range(2):  # a concurrent GC may move it back while we look
            runs = sorted(self.backend.subfolders(TRASH), reverse=True)
            for where in [*(f"{TRASH}/{run}/{key}" for run in runs), key]:
                try:
                    return where, read(where)
                except FileNotFoundError:
                    continue
        raise FileNotFoundError(key)

    def _verify(
        self,
        manifest: pb.Manifest,
        key: str,
        where: str,
        desc: str,
        ref: pb.ChunkRef,
        out: memoryview,
        problem: str,
    ) -> None:
        """Raise for a decoding problem, else check the decoded bytes against their hash.

        A damaged object is moved aside first (from `where`, its live or trash
        key), so that writers stop reusing it.
        """
        if not problem and ck.chunk_hash(out) != ref.hash:
            problem = "content does not match its hash"
        if problem:
            raise self._damaged(manifest, key, desc, problem, self._quarantine(key, where))

    def _quarantine(self, key: str, where: str) -> str:
        """Move a damaged blob to damaged/<run>/<key>; says what became of it.

        Writers reuse whatever exists under a blob's key, so a damaged object
        left there spoils every later checkpoint of the same data; once it is
        gone, the next writer stores the chunk again (and, being content
        addressed, a re-uploaded blob heals the checkpoints that use it). Not
        the trash: GC moves trashed objects that a checkpoint uses back. A pack
        stays where it is (other checkpoints may use its intact chunks); a
        marker under the same name stops writers reusing it. A pack whose bytes
        still hash to its name is intact (the manifest is wrong) and is left
        alone, and so is a blob that is intact when read again (another reader
        moved the damaged one and a writer stored it again meanwhile). Best
        effort: on a read-only store the caller's error is enough.
        """
        target = _damaged_key(key)
        try:
            if key.startswith("blobs/") and _intact_blob(self.backend.get(where), key):
                return "The blob under that key is intact now (stored again meanwhile)."
            if key.startswith("packs/"):
                data = self.backend.get(where)
                if blake3.blake3(data).hexdigest() == key.rsplit("/", 1)[-1]:
                    return "The pack itself is intact: the manifest lists a wrong hash."
                # Other checkpoints may use its other chunks: mark it, do not move it.
                self.backend.put(target, [b"damaged chunk(s) in this pack; it stays in place\n"])
                return f"Writers no longer reuse it (marked in {self.url}/{target})."
            self.backend.move(where, target)
        except (StoreError, OSError):
            return "It could not be moved aside (read-only store?): delete it from the store."
        return f"It was moved aside to {self.url}/{target}."

    def _missing(self, manifest: pb.Manifest, key: str, desc: str) -> CorruptCheckpointError:
        # A marker, as for a damaged pack: writers that would reuse it store it again.
        with contextlib.suppress(StoreError, OSError):
            self.backend.put(_damaged_key(key), [b"missing\n"])
        return CorruptCheckpointError(
            f"checkpoint {manifest.checkpoint_id} ({self.url}): {key} ({desc}) is missing from "
            "the store: it was deleted by hand or by a garbage collection, or moved aside as "
            f"damaged. {_repair_advice(manifest.session_id)}"
        )

    def _damaged(
        self, manifest: pb.Manifest, key: str, desc: str, problem: str, fate: str
    ) -> CorruptCheckpointError:
        return CorruptCheckpointError(
            f"checkpoint {manifest.checkpoint_id} ({self.url}): {key} ({desc}) is damaged: "
            f"{problem}. {fate} {_repair_advice(manifest.session_id)}"
        )


# -- helpers -------------------------------------------------------------------


def open_store(
    url: str | None = None, options: Mapping[str, Any] | None = None, **kw: Any
) -> Store:
    """Open the store at `url` (default: $NBFERRY_STORE or a local folder)."""
    return Store(url, options, **kw)


def trash_run_name(when: datetime | None = None) -> str:
    """A new trash run folder name: its UTC time (sortable), then random, for uniqueness."""
    when = when or datetime.now(timezone.utc)
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z-{secrets.token_hex(4)}"


HUGE_PAGES_MIN = 64 << 20


def _allocate(size: int) -> bytearray | mmap.mmap:
    """A writable output buffer. Big ones are private anonymous mappings:
    bytearray() zero-fills on the calling thread (~0.6 s/GiB here), a mapping's
    pages are zero-filled lazily, in the worker that first writes them. Private
    (not mmap's default, shared) so the kernel may back it with transparent huge
    pages. Asking for them (MADV_HUGEPAGE) pays only for very big buffers: first
    writes fault 2 MiB at a time, ~2x faster than 4 KiB pages for 256 MiB
    arrays, but the kernel may stop to compact memory for each 2 MiB page,
    which made 25 MiB arrays restore 1.5x slower, and erratically, here.
    """
    if size < (1 << 20):
        return bytearray(size)
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows
        return mmap.mmap(-1, size)
    out = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20))
    if size >= HUGE_PAGES_MIN and hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            out.madvise(mmap.MADV_HUGEPAGE)
    return out


def _blob_key(digest: bytes) -> str:
    h = digest.hex()
    return f"blobs/{h[:2]}/{h}"


def _pack_key(digest: bytes) -> str:
    h = digest.hex()
    return f"packs/{h[:2]}/{h}"


def _location(ref: pb.ChunkRef) -> str:
    return _pack_key(ref.pack) if ref.pack else _blob_key(ref.hash)


def chunk_refs(manifest: pb.Manifest) -> Iterator[pb.ChunkRef]:
    """Every chunk reference of every pod of a manifest (repeats included)."""
    for pod in manifest.pods:
        for buf in [pod.header, *pod.buffers]:
            yield from buf.chunks


def _chunk_index(manifest: pb.Manifest | None) -> dict[bytes, pb.ChunkRef]:
    """Chunks a (trusted) earlier manifest says it stored, by hash (Store._still_stored
    checks that they still are)."""
    index: dict[bytes, pb.ChunkRef] = {}
    if manifest is not None:
        for ref in chunk_refs(manifest):
            index.setdefault(ref.hash, ref)
    return index


def _damaged_key(key: str) -> str:
    """Where a reader moves a damaged blob, or marks a damaged pack or a missing object."""
    return f"{DAMAGED}/{trash_run_name()}/{key}"


def _intact_blob(data: bytes, key: str) -> bool:
    """Whether a blob decodes to the content its key names (no manifest needed)."""
    view = memoryview(data)
    if not view.nbytes:
        return False
    try:
        if view[0] == pb.CODEC_RAW:
            raw: bytes | memoryview = view[1:]
        elif view[0] == pb.CODEC_ZSTD:
            raw = zstandard.ZstdDecompressor().decompress(view[1:])
        else:
            return False
    except zstandard.ZstdError:
        return False
    return ck.chunk_hash(raw).hex() == key.rsplit("/", 1)[-1]


def _undecodable(exc: ValueError, size: int, ref: pb.ChunkRef) -> str:
    if size < ref.stored_size:
        return f"truncated: {size} of {ref.stored_size} bytes"
    return f"cannot be decoded ({exc})"


def _repair_advice(session_id: str) -> str:
    """What a user can do about a missing or damaged object: both ways work."""
    return (
        f"A new checkpoint of session {session_id!r} (from a kernel that still holds the "
        "data) stores that data again; or restore an earlier checkpoint that does not use "
        f"this object: see `nbferry list --session {session_id}`"
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


class _PackBuilder:
    """Accumulates small encoded chunks into one pack blob."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.refs: list[pb.ChunkRef] = []
        self.size = 0

    def add(self, tag: bytes, payload: bytes, codec: int) -> pb.ChunkRef:
        ref = pb.ChunkRef(stored_size=1 + len(payload), codec=codec, offset=self.size)
        self.parts += [tag, payload]
        self.refs.append(ref)
        self.size += ref.stored_size
        return ref

    def finish(self) -> tuple[str, list[bytes], int]:
        data = b"".join(self.parts)
        digest = blake3.blake3(data).digest()
        for ref in self.refs:
            ref.pack = digest
        size = self.size
        self.parts, self.refs, self.size = [], [], 0
        return _pack_key(digest), [data], size


class _Counter:
    """Thread-safe progress counter that forwards to a callback."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total, self.value, self.callback = total, 0, callback
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        if self.callback is None:
            return
        with self.lock:
            self.value += n
            value = self.value
        self.callback(value, self.total)


def _bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list[Any], window: int
) -> Iterator[Any]:
    """Like pool.map, in order, but with at most `window` tasks started ahead."""
    pending: list[Future[Any]] = []
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            break
    while pending:
        fut = pending.pop(0)
        try:
            result = fut.result()
        except BaseException:
            for other in pending:
                other.cancel()
            raise
        nxt = next(it, _END)
        if nxt is not _END:
            pending.append(pool.submit(fn, nxt))
        yield result


_END = object()
