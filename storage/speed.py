"""How fast a store moves bytes: measured once with a small probe, then cached.

The planner weighs storing a value (bytes over this bandwidth, plus request
latency) against rerunning the cells that made it. The probe writes and reads
four 4 MiB chunks (random, text-like, two float-like) in parallel through the
same code path pods use (hash, codec choice, upload; download, verify), plus
one tiny object for latency, under `probe/` in the store, and deletes them.
Results are cached for a week in the user's cache folder, per disk for local
folders and per bucket for S3, so a checkpoint never pays for the probe twice;
real checkpoints and restores then refine them (`observe`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nbferry.storage import chunks as ck
from nbferry.storage.ids import new_checkpoint_id

if TYPE_CHECKING:
    from nbferry.storage.store import Store

MAX_AGE = 7 * 24 * 3600.0
_PROBE_CHUNKS = 4
PROBE_VERSION = 2  # 2: float-like chunks. Cached speeds of another probe are measured again.


@dataclass(frozen=True)
class StoreSpeed:
    write_bytes_per_second: float  # raw bytes through hashing, compression and upload
    read_bytes_per_second: float  # raw bytes through download, verification and decoding
    latency_seconds: float  # one small request
    measured_at: float = 0.0  # Unix time; 0 for the built-in guess
    probe: int = 0  # PROBE_VERSION of the measurement

    def write_seconds(self, size: int) -> float:
        return size / self.write_bytes_per_second + self.latency_seconds * _requests(size)

    def read_seconds(self, size: int) -> float:
        return size / self.read_bytes_per_second + self.latency_seconds * _requests(size)


def _requests(size: int) -> float:
    # Big values take one request per chunk; small ones share packs (~1/32 of one each).
    return max(size / ck.DEFAULT_CHUNK_SIZE, 1 / 32)


def cache_path() -> Path:
    cached = os.environ.get("NBFERRY_SPEED_CACHE")
    if cached:
        return Path(cached)
    import platformdirs

    return platformdirs.user_cache_path("nbferry")


def _load() -> dict:
    try:
        return json.loads((cache_path() / "store-speed.json").read_text())
    except (OSError, ValueError):
        return {}


def _save(cached: dict) -> None:
    path = cache_path() / "store-speed.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cached, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still plans, it just measures again next time


def speed_key(store: Store) -> str:
    """What a speed belongs to: the disk for local folders, the bucket for S3, else the URL.

    Folders on one disk move bytes alike, so a new folder starts from what the
    disk's earlier checkpoints taught.
    """
    backend = store.backend
    if backend.local:
        path = backend.root
        while path and not os.path.exists(path):
            path = os.path.dirname(path)
        try:
            return f"file:device={os.stat(path or '/').st_dev}"
        except OSError:
            return store.url
    if backend.s3:
        bucket = backend.root.split("/", 1)[0]
        endpoint = (getattr(backend.fs, "client_kwargs", None) or {}).get("endpoint_url")
        return f"s3://{bucket}@{endpoint or 'aws'}"
    return store.url


def cached_speed(store: Store, max_age: float = MAX_AGE) -> StoreSpeed | None:
    """The cached speed of `store`, or None when there is none or it is stale."""
    entry = _load().get(speed_key(store))
    fresh = entry and time.time() - entry.get("measured_at", 0) < max_age
    if fresh and entry.get("probe") == PROBE_VERSION:
        try:
            return StoreSpeed(**entry)
        except TypeError:
            pass  # written by another version
    return None


def store_speed(store: Store, max_age: float = MAX_AGE, refresh: bool = False) -> StoreSpeed:
    """The cached speed of `store`, measuring it when there is none or it is stale."""
    cached = None if refresh else cached_speed(store, max_age)
    if cached is not None:
        return cached
    speed = measure(store)
    cached = _load()
    cached[speed_key(store)] = asdict(speed)
    _save(cached)
    return speed


OBSERVE_MIN_BYTES = 16 << 20


def observe(store: Store, *, written: int = 0, read: int = 0, seconds: float) -> None:
    """Blend a real checkpoint's (or restore's) throughput into the cached speed.

    The probe moves 16 MiB; a checkpoint of gigabytes meets disk flushes,
    memory pressure and compression the probe never sees. Half-and-half
    blending lets real work correct the estimate within a few checkpoints.
    """
    moved = written or read
    if moved < OBSERVE_MIN_BYTES or seconds <= 0:
        return
    cached = _load()
    entry = cached.get(speed_key(store))
    if not entry:
        return
    key = "write_bytes_per_second" if written else "read_bytes_per_second"
    entry[key] = (entry[key] + moved / seconds) / 2
    _save(cached)


def _float_like(size: int) -> bytes:
    """Bytes shaped like float64 data: random mantissas under a few exponents."""
    data = bytearray(os.urandom(size))
    data[7::8] = b"\x40" * (size // 8)
    data[6::8] = data[6::8].translate(bytes(0x8F + (i & 0x03) for i in range(256)))
    data[5::8] = data[5::8].translate(bytes(i & 0x0F for i in range(256)))
    return bytes(data)


def measure(store: Store) -> StoreSpeed:
    """Probe the store: about 16 MiB written and read back, then removed."""
    backend = store.backend
    backend.prepare_write()
    prefix = f"probe/{new_checkpoint_id()}"
    # Every code path: random bytes (stored raw), text-like (compressed quickly)
    # and two chunks shaped like float arrays, which zstd compresses by only ~10%
    # at a few hundred MB/s per core: the bulk of most sessions. Without them
    # the probe saw 1.2 GB/s where big numeric checkpoints moved 0.4.
    size = ck.DEFAULT_CHUNK_SIZE
    data = [os.urandom(size), bytes(range(256)) * (size // 256)]
    data += [_float_like(size) for _ in range(_PROBE_CHUNKS - len(data))]
    keys = [f"{prefix}-{i}" for i in range(_PROBE_CHUNKS)]

    def write(i: int) -> None:
        view = memoryview(data[i])
        ck.chunk_hash(view)
        codec, stored = ck.encode(view)
        backend.put(keys[i], [bytes([codec]), stored])

    def read(i: int) -> None:
        stored = backend.get(keys[i])
        out = bytearray(ck.DEFAULT_CHUNK_SIZE)
        ck.decode_into(stored[0], memoryview(stored)[1:], memoryview(out))
        ck.chunk_hash(out)

    total = _PROBE_CHUNKS * ck.DEFAULT_CHUNK_SIZE
    try:
        with ThreadPoolExecutor(min(store.workers, _PROBE_CHUNKS)) as pool:
            t0 = time.perf_counter()
            list(pool.map(write, range(_PROBE_CHUNKS)))
            t1 = time.perf_counter()
            list(pool.map(read, range(_PROBE_CHUNKS)))
            t2 = time.perf_counter()
        tiny = f"{prefix}-latency"
        backend.put(tiny, [b"x"])
        t3 = time.perf_counter()
        backend.size(tiny)
        backend.get(tiny)
        latency = (time.perf_counter() - t3) / 2
    finally:
        for key in [*keys, f"{prefix}-latency"]:
            with contextlib.suppress(Exception):
                backend.delete(key)
    return StoreSpeed(
        write_bytes_per_second=total / max(t1 - t0, 1e-6),
        read_bytes_per_second=total / max(t2 - t1, 1e-6),
        latency_seconds=latency,
        measured_at=time.time(),
        probe=PROBE_VERSION,
    )
