"""Garbage collection: mark and sweep over the manifests, through a trash, with a grace period.

    report = collect(store, grace=timedelta(hours=24), policy=Policy(last=10))

One run does, in order:

1. retention (with a policy): checkpoints the policy does not keep are deleted,
   which moves their manifests to `trash/<run>/sessions/...`;
2. purge: objects that have sat in the trash longer than `grace` go for good,
   except blobs that a manifest (live, or in the trash and not expiring) still
   uses: those move back to their live key;
3. sweep: list the live blobs and packs (with their modification times) first,
   then read every manifest, live and trashed (mark); move each blob that none
   uses and that was last modified more than `grace` ago to `trash/<run>/<key>`,
   and move back every trashed blob that a manifest uses (repair); delete
   `probe/` objects and local `.tmp-` files older than `grace`, and objects that
   readers moved aside as damaged (`damaged/<run>/<key>`) longer than `grace` ago.

Objects under damaged/ are never counted as live nor moved back: their chunks
are stored again by the next writer that needs them (see Store._quarantine).

Readers that miss a blob under its live key look in the trash (Store._with_trash).
A manifest GC cannot parse (damaged, newer format) stops it with GcError: it
cannot know which blobs that checkpoint uses. Found at the start, nothing has
changed yet; found by the sweep, nothing is swept. One whose signature does
not verify (another host's key) still counts, by the references it lists.

Why no blob a committed checkpoint uses is ever deleted. Assume a checkpoint
commits within W = Store.max_write_seconds of starting (the writer enforces it),
W + clock skew + the seconds a move takes < grace, and a move to the trash
stamps the object with the time it moved. Only purge deletes a blob B, at a time t with
B in the trash since before t - grace and no manifest live at t (or trashed
later than t - grace) using B. Suppose checkpoint M uses B and commits at c.
If c < t, M is live at t (or was deleted, which is allowed). If c > t, M's
writer began at s > t - W > t - grace and learned of B after s, in one of
three ways: it uploaded B (then B is newer than s and a sweep could not have
trashed it before t - grace); it saw B live (then B moved to the trash after s,
not before t - grace); or its parent manifest P listed B. P was live when read,
after s; so at t, P is live, or in the trash since after s > t - grace, hence
still counted. Every case contradicts B being deleted at t.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from nbferry.storage.backend import TMP_MARK, _protocols
from nbferry.storage.errors import CorruptCheckpointError, FormatVersionError, StoreError
from nbferry.storage.manifest import decode_manifest
from nbferry.storage.retention import Policy, doomed
from nbferry.storage.store import (
    DAMAGED,
    MANIFEST_SUFFIX,
    TRASH,
    CheckpointRef,
    Store,
    _location,
    chunk_refs,
    trash_run_name,
)

DEFAULT_GRACE = timedelta(hours=24)
# S3 lists modification times to the second: an object may be up to this much
# younger than its listed time says. Ages there are measured from listed time +
# slack; local and memory:// times are exact.
MTIME_SLACK = 1.0
Progress = Callable[[str, int, int], None]  # (phase, done, total)

_LIVE_BLOB = re.compile(r"^(blobs|packs)/[0-9a-f]{2}/[0-9a-f]{64}$")
_RUN = re.compile(r"^(\d{8}T\d{6}\.\d{3})Z-[0-9a-f]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class GcError(StoreError):
    """Garbage collection stopped before deleting anything; the message says why and the fix."""


@dataclass
class GcReport:
    store: str
    dry_run: bool
    grace_seconds: float
    policy: str = ""  # retention policy applied, '' for none
    checkpoints_deleted: list[str] = field(default_factory=list)  # by retention, to the trash
    manifests_read: int = 0
    blobs_live: int = 0  # blobs and packs left under their live keys (in use, or young)
    bytes_live: int = 0
    blobs_trashed: int = 0  # unreferenced blobs moved to the trash by this run
    bytes_trashed: int = 0
    blobs_restored: int = 0  # trashed blobs a checkpoint uses, moved back
    blobs_deleted: int = 0  # trashed blobs deleted for good
    manifests_purged: int = 0  # deleted checkpoints' manifests deleted for good
    leftovers_deleted: int = 0  # probe objects and temp files of interrupted writes
    damaged_deleted: int = 0  # objects readers moved aside as damaged, deleted for good
    bytes_freed: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def manifests_deleted(self) -> int:
        return len(self.checkpoints_deleted)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out = asdict(self)
        out["manifests_deleted"] = self.manifests_deleted
        out["seconds"] = round(self.seconds, 4)
        return out


def duration(text: str) -> timedelta:
    """'90s', '30m', '24h', '7d', '2w' or plain seconds ('3600')."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a duration: use a number with s, m, h, d or w (90s, 30m, 24h, 7d)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def human_duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class _Object:
    key: str  # where it is now
    size: int
    mtime: float | None

    def older_than(self, cutoff: float) -> bool:
        """Last modified before cutoff (never, when the store gives no time)."""
        return self.mtime is not None and self.mtime < cutoff


@dataclass(frozen=True)
class _Trashed(_Object):
    run: str = ""
    live_key: str = ""  # where it was: blobs/..., packs/..., sessions/...
    run_time: float | None = None  # from the run's name; None for a folder not ours

    @property
    def is_manifest(self) -> bool:
        return self.live_key.endswith(MANIFEST_SUFFIX)


class _Marker:
    """Reads manifests (live or trashed) for the blobs they use; caches by checkpoint,
    since a manifest never changes, only moves to the trash."""

    def __init__(self, store: Store, progress: Progress | None) -> None:
        self.store = store
        self.progress = progress
        self.cache: dict[str, frozenset[str]] = {}  # sessions/<s>/<id>.ckpt -> blob keys
        self.read_count = 0

    def refs(self, manifests: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
        """(object key, live key) pairs -> {live key: blob keys}. Raises GcError for
        a manifest that cannot be parsed; skips one that is gone (purged meanwhile)."""
        todo = [(k, live) for k, live in manifests if live not in self.cache]
        done = 0
        with ThreadPoolExecutor(self.store.workers) as pool:
            for live, refs in pool.map(lambda item: (item[1], self._read(*item)), todo):
                done += 1
                if refs is not None:
                    self.cache[live] = refs
                    self.read_count += 1
                if self.progress:
                    self.progress("read manifests", done, len(todo))
        return {live: self.cache[live] for _, live in manifests if live in self.cache}

    def _read(self, key: str, live: str) -> frozenset[str] | None:
        get = self.store.backend.get
        try:
            data = get(key)  # where it was listed
        except FileNotFoundError:  # moved since, to the trash or back
            try:
                key, data = self.store._with_trash(live, get)
            except FileNotFoundError:
                return None  # deleted for good (by another GC, or by hand)
        where = f"manifest {self.store.url}/{key}"
        try:
            manifest = decode_manifest(data, where).manifest
        except FormatVersionError as exc:
            raise GcError(
                f"garbage collection of {self.store.url} stopped before sweeping: {exc}. "
                "It cannot tell which blobs that checkpoint uses, so it deleted nothing on "
                "that account; run gc with an nbferry as new as that checkpoint's writer"
            ) from exc
        except CorruptCheckpointError as exc:
            raise GcError(
                f"garbage collection of {self.store.url} stopped before sweeping: {exc}. "
                "It cannot tell which blobs that checkpoint uses, so it deleted nothing on "
                f"that account. If the checkpoint is beyond use, remove {self.store.url}/{key} "
                "(move it out of the store to keep it) and run gc again"
            ) from exc
        # The signature is not checked: a checkpoint signed with another host's key
        # is still a checkpoint, and its blobs are not ours to delete.
        return frozenset(_location(ref) for ref in chunk_refs(manifest))


def _run_time(match: re.Match[str]) -> float:
    stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f")
    return stamp.replace(tzinfo=timezone.utc).timestamp()


class _Clock:
    """Wall time in UTC, starting from an injected `now` when given (tests)."""

    def __init__(self, now: datetime | None) -> None:
        self.offset = (now.timestamp() - time.time()) if now is not None else 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self(), tz=timezone.utc)


def collect(
    store: Store,
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    policy: Policy | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> GcReport:
    """Garbage-collect the store: retention (with a policy), purge, then sweep.

    `grace` must exceed Store.max_write_seconds of every writer (default 6 h)
    for collection to be safe while checkpoints are being written; a shorter
    one is for stores nobody writes to meanwhile (a warning says so). With
    dry_run nothing changes and the report says what would have. `now` shifts
    the clock (tests).
    """
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative (got {grace})")
    started = time.perf_counter()
    clock = _Clock(now)
    report = GcReport(store=store.url, dry_run=dry_run, grace_seconds=grace.total_seconds())
    if grace.total_seconds() <= Store.max_write_seconds:
        report.warnings.append(
            f"grace {human_duration(grace)} is not longer than the "
            f"{human_duration(timedelta(seconds=Store.max_write_seconds))} a checkpoint may "
            "take to write: a checkpoint written during this collection could lose blobs. "
            "Use such a grace only while no checkpoint is being written"
        )
    marker = _Marker(store, progress)
    gc = _Run(store, clock, grace.total_seconds(), dry_run, marker, report, progress)

    # Mark before retention: retention only moves manifests to the trash, where
    # they still count, so the references it sees are the same afterwards.
    purge_now = clock()
    live = gc.live_manifests()
    trash = gc.trash()
    marks = marker.refs(
        [(k, k) for k in live] + [(t.key, t.live_key) for t in trash if t.is_manifest]
    )

    if policy is not None and policy.enabled:
        report.policy = str(policy)
        refs = store.list_checkpoints()
        run = trash_run_name(clock.datetime())
        for ref in doomed(refs, policy, clock.datetime()):
            if not dry_run:
                store.delete_checkpoint(ref, trash_run=run)
            report.checkpoints_deleted.append(ref.checkpoint_id)
    gone = gc.purge(purge_now, live, trash, marks)
    gc.sweep(gone)
    report.manifests_read = marker.read_count
    report.seconds = time.perf_counter() - started
    return report


class _Run:
    """One collection's state and phases."""

    def __init__(
        self,
        store: Store,
        clock: _Clock,
        grace: float,
        dry_run: bool,
        marker: _Marker,
        report: GcReport,
        progress: Progress | None,
    ) -> None:
        self.store, self.backend = store, store.backend
        self.clock, self.grace, self.dry_run = clock, grace, dry_run
        self.marker, self.report, self.progress = marker, report, progress
        exact = self.backend.local or "memory" in _protocols(self.backend.fs)
        self.slack = 0.0 if exact else MTIME_SLACK
        self.leftovers: dict[str, _Object] = {}  # temp files met while listing, by key

    # -- listing ---------------------------------------------------------------

    def live_manifests(self) -> list[str]:
        """Every manifest file under sessions/ (not only well-named ones: be conservative)."""
        keys = []
        for key, size, mtime in self.backend.list_info("sessions", temp=True):
            if TMP_MARK in key.rsplit("/", 1)[-1]:
                self.leftovers[key] = _Object(key, size, mtime)
            elif key.endswith(MANIFEST_SUFFIX):
                keys.append(key)
        return keys

    def trash(self) -> list[_Trashed]:
        items = []
        for key, size, mtime in self.backend.list_info(TRASH):
            parts = key.split("/", 2)
            if len(parts) < 3:
                continue  # not in a run folder: not ours
            match = _RUN.match(parts[1])
            run_time = _run_time(match) if match else None
            items.append(_Trashed(key, size, mtime, parts[1], parts[2], run_time))
        return items

    # -- purge -----------------------------------------------------------------

    def purge(
        self,
        now: float,
        live: list[str],
        trash: list[_Trashed],
        marks: dict[str, frozenset[str]],
    ) -> set[str]:
        """Delete what sat in the trash longer than the grace period, moving back the
        blobs that a manifest still uses. Returns the trash keys it removed."""
        cutoff = now - self.grace
        expiring = [
            t
            for t in trash
            if t.run_time is not None and t.run_time < cutoff and t.older_than(cutoff - self.slack)
        ]
        if not self.dry_run:  # runs moved back or purged earlier leave empty folders
            for run in self.backend.subfolders(TRASH):
                match = _RUN.match(run)
                if match and _run_time(match) < cutoff:
                    self.backend.remove_empty_folders(f"{TRASH}/{run}")
        if not expiring:
            return set()
        expiring_keys = {t.key for t in expiring}
        used: set[str] = set()
        for key in live:
            used |= marks.get(key, frozenset())
        for t in trash:
            if t.is_manifest and t.key not in expiring_keys:
                used |= marks.get(t.live_key, frozenset())

        def purge_one(t: _Trashed) -> tuple[str, _Trashed, bool]:
            if not t.is_manifest and t.live_key in used:
                return "restored", t, self._move(t.key, t.live_key)
            if not self.dry_run:
                self.backend.delete(t.key)
            return ("purged" if t.is_manifest else "deleted"), t, True

        done = 0
        with ThreadPoolExecutor(self.store.workers) as pool:
            for what, t, ok in pool.map(purge_one, expiring):
                done += 1
                if self.progress:
                    self.progress("purge trash", done, len(expiring))
                if not ok:
                    continue
                if what == "restored":
                    self.report.blobs_restored += 1
                    continue
                if what == "purged":
                    self.report.manifests_purged += 1
                else:
                    self.report.blobs_deleted += 1
                self.report.bytes_freed += t.size
        if not self.dry_run:
            for run in {t.run for t in expiring}:
                self.backend.remove_empty_folders(f"{TRASH}/{run}")
        return expiring_keys

    # -- sweep -----------------------------------------------------------------

    def sweep(self, gone: set[str]) -> None:
        """Trash unreferenced old blobs, move back trashed blobs in use, delete leftovers.

        `gone`: trash keys the purge removed (in a dry run, would have removed).
        """
        now = self.clock()
        cutoff = now - self.grace
        # Blobs first, then manifests: a blob listed here whose checkpoint commits
        # after the listing below is seen as used; one written after this listing
        # is not a candidate at all.
        blobs: list[_Object] = []
        for prefix in ("blobs", "packs"):
            for key, size, mtime in self.backend.list_info(prefix, temp=True):
                if TMP_MARK in key.rsplit("/", 1)[-1]:
                    self.leftovers[key] = _Object(key, size, mtime)
                elif _LIVE_BLOB.match(key):
                    blobs.append(_Object(key, size, mtime))
        live = self.live_manifests()
        trash = [t for t in self.trash() if t.key not in gone]
        marks = self.marker.refs(
            [(k, k) for k in live] + [(t.key, t.live_key) for t in trash if t.is_manifest]
        )
        used: set[str] = set().union(*marks.values()) if marks else set()

        candidates = [b for b in blobs if b.key not in used and b.older_than(cutoff - self.slack)]
        run = trash_run_name(datetime.fromtimestamp(now, tz=timezone.utc))
        repair = [t for t in trash if not t.is_manifest and t.live_key in used]
        moves = [(b.key, f"{TRASH}/{run}/{b.key}", b) for b in candidates] + [
            (t.key, t.live_key, t) for t in repair
        ]
        done = 0
        with ThreadPoolExecutor(self.store.workers) as pool:
            for (src, _, obj), ok in zip(
                moves, pool.map(lambda m: self._move(m[0], m[1]), moves), strict=True
            ):
                done += 1
                if self.progress:
                    self.progress("sweep", done, len(moves))
                if not ok:
                    continue
                if src.startswith(f"{TRASH}/"):
                    self.report.blobs_restored += 1
                else:
                    self.report.blobs_trashed += 1
                    self.report.bytes_trashed += obj.size
        self.report.blobs_live = len(blobs) - self.report.blobs_trashed + len(repair)
        self.report.bytes_live = (
            sum(b.size for b in blobs) - self.report.bytes_trashed + sum(t.size for t in repair)
        )
        self._leftovers(cutoff - self.slack)
        self._damaged(cutoff)

    def _damaged(self, cutoff: float) -> None:
        """Delete objects moved aside as damaged more than the grace period ago.

        They are useless (their chunks fail verification) and kept only so
        that someone may look at them for a while; nothing reads them.
        """
        old: set[str] = set()
        for key, size, mtime in self.backend.list_info(DAMAGED, temp=True):
            parts = key.split("/", 2)
            match = _RUN.match(parts[1]) if len(parts) == 3 else None
            if not (match and _run_time(match) < cutoff):
                continue  # not in a run folder of ours, or recent
            if not _Object(key, size, mtime).older_than(cutoff - self.slack):
                continue
            if not self.dry_run:
                self.backend.delete(key)
            old.add(parts[1])
            self.report.damaged_deleted += 1
            self.report.bytes_freed += size
        if not self.dry_run:
            for run in old:
                self.backend.remove_empty_folders(f"{DAMAGED}/{run}")

    def _leftovers(self, cutoff: float) -> None:
        """Speed-probe objects, and temp files of interrupted local writes, older than grace."""
        probes = [_Object(*item) for item in self.backend.list_info("probe", temp=True)]
        for obj in [*probes, *self.leftovers.values()]:
            if not obj.older_than(cutoff):
                continue
            if not self.dry_run:
                self.backend.delete(obj.key)
            self.report.leftovers_deleted += 1
            self.report.bytes_freed += obj.size

    def _move(self, src: str, dst: str) -> bool:
        """False when src is gone already (another collection moved or deleted it)."""
        if self.dry_run:
            return True
        try:
            self.backend.move(src, dst)
        except FileNotFoundError:
            return False
        return True


__all__ = [
    "DEFAULT_GRACE",
    "CheckpointRef",
    "GcError",
    "GcReport",
    "Policy",
    "collect",
    "duration",
    "human_duration",
]
