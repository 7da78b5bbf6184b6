"""Deterministic checkpoint contents for the store's crash and concurrency tests.

Shared by the test process and the writer subprocesses it starts
(tests/helpers/store_writer.py), so that a reader can recompute, from the seed
stored in a checkpoint's labels, exactly the bytes the writer stored.

Each checkpoint holds pods of every shape the store handles differently:
  shared  4 MiB + 40 KiB of random float64, the same for every seed: a 4 MiB blob that
          later writers find already in the store, plus a small tail that is packed
  big     random float64 unique to the seed, spanning several 4 MiB chunks (raw blobs)
  zbig    compressible int64 unique to the seed (zstd-coded blobs)
  meta    a pickle header and no buffers
  small*  small random arrays, packed together into one pack
"""

from __future__ import annotations

import functools
import pickle
from typing import Any

import blake3
import numpy as np

from nbferry.storage import PodData

MIB = 1 << 20
SHARED_SEED = 424242


def to_pod(pod_id: str, obj: object) -> PodData:
    """Pickle protocol 5 with out-of-band buffers, as the agent does."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return PodData(pod_id, header, buffers, [pod_id])


@functools.lru_cache(maxsize=4)
def _shared_array(shared_seed: int) -> np.ndarray:
    arr = np.random.default_rng(shared_seed).random((4 * MIB + 40 * 1024) // 8)
    arr.flags.writeable = False
    return arr


def make_pods(seed: int, scale: float = 1.0, shared_seed: int = SHARED_SEED) -> list[PodData]:
    """The pods of checkpoint `seed`; `scale` sizes the per-seed big arrays."""
    rng = np.random.default_rng(seed)
    big_n = int(scale * (13 * MIB + 123_456)) // 8  # scale 1: 4 chunks, the last partial
    zbig_n = int(scale * 6 * MIB) // 8
    pods = [
        to_pod("shared", {"arr": _shared_array(shared_seed), "what": "shared"}),
        to_pod("big", {"arr": rng.random(big_n), "seed": seed}),
        to_pod("zbig", {"arr": np.arange(zbig_n, dtype=np.int64) % 977 + seed}),
        to_pod("meta", {"seed": seed, "scale": scale, "text": f"checkpoint of seed {seed}" * 7}),
    ]
    for i in range(5):
        size = int(rng.integers(1, 96 * 1024))
        arr = rng.integers(0, 256, size=size, dtype=np.uint8)
        pods.append(to_pod(f"small{i}", {"i": i, "seed": seed, "arr": arr}))
    return pods


def digests(pods: dict[str, PodData] | list[PodData]) -> dict[str, list[tuple[int, bytes]]]:
    """(size, BLAKE3) of every header and buffer, by pod id: compact, byte-exact."""
    items = pods.values() if isinstance(pods, dict) else pods
    out: dict[str, list[tuple[int, bytes]]] = {}
    for pod in items:
        views = [memoryview(pod.header)] + [_view(b) for b in pod.buffers]
        out[pod.pod_id] = [(v.nbytes, blake3.blake3(v).digest()) for v in views]
    return out


@functools.lru_cache(maxsize=256)
def expected_digests(
    seed: int, scale: float = 1.0, shared_seed: int = SHARED_SEED
) -> dict[str, list[tuple[int, bytes]]]:
    return digests(make_pods(seed, scale, shared_seed))


def labels_for(seed: int, scale: float, writer: str, shared_seed: int = SHARED_SEED) -> dict:
    return {
        "seed": str(seed),
        "scale": repr(scale),
        "shared_seed": str(shared_seed),
        "writer": writer,
    }


def expected_from_labels(labels: Any) -> dict[str, list[tuple[int, bytes]]]:
    """What a checkpoint must hold, from the labels its writer put on it."""
    return expected_digests(int(labels["seed"]), float(labels["scale"]), int(labels["shared_seed"]))


def _view(buf: Any) -> memoryview:
    view = buf.raw() if isinstance(buf, pickle.PickleBuffer) else memoryview(buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
