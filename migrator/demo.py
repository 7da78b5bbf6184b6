"""`nbferry demo`: checkpoint a sample session's objects to a store and read them back.

Until the in-kernel agent lands this exercises the storage path a session
takes (pickle protocol 5 pods, chunking, dedup, verified reads) without a kernel.
"""

from __future__ import annotations

import getpass
import pickle
import time
from typing import Any

from nbferry.migrator.progress import Progress
from nbferry.migrator.report import human_size, table
from nbferry.storage import PodData, Store


def sample_state() -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(42)
    n = 200_000
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "price": rng.gamma(2.0, 10.0, n),
            "city": pd.Categorical(rng.choice(["Lima", "Oslo", "Pune", "Kyiv"], n)),
            "when": pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC"),
        }
    )
    return {
        "df": df,
        "weights": rng.standard_normal((2048, 4096)),  # 64 MiB of random floats
        "counts": np.tile(np.arange(1000, dtype=np.int64), 4096),  # 32 MiB, compressible
        "config": {"model": "ridge", "alpha": 0.5, "features": ["price", "city"]},
    }


def _pods(state: dict[str, Any]) -> list[PodData]:
    pods = []
    for i, (name, value) in enumerate(state.items()):
        buffers: list[pickle.PickleBuffer] = []
        header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        pods.append(PodData(f"p{i}", header, buffers, [name]))
    return pods


def _equal(a: Any, b: Any) -> bool:
    import numpy as np
    import pandas as pd

    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def run_demo(store: Store) -> dict[str, Any]:
    session = f"demo-{getpass.getuser()}"
    state = sample_state()
    progress = Progress("checkpoint 1")
    first = store.write_checkpoint(session, _pods(state), message="demo", progress=progress)
    progress.close()
    state["weights"][:128] += 1.0  # change 4 MiB in place, as a notebook cell would
    progress = Progress("checkpoint 2")
    second = store.write_checkpoint(
        session, _pods(state), message="demo, after an edit", progress=progress
    )
    progress.close()

    started = time.perf_counter()
    progress = Progress("restore")
    manifest = store.read_manifest(second.checkpoint_id)
    pods = store.read_pods(manifest, progress=progress)
    progress.close()
    restored = {}
    for pod in pods.values():
        value = pickle.loads(pod.header, buffers=pod.buffers)
        restored[pod.variables[0]] = value
    read_seconds = time.perf_counter() - started
    variables = [
        {
            "name": name,
            "type": type(value).__name__,
            "equal": _equal(value, restored[name]),
            "raw_bytes": sum(len(memoryview(b).cast("B")) for b in pods[f"p{i}"].buffers)
            + len(pods[f"p{i}"].header),
        }
        for i, (name, value) in enumerate(state.items())
    ]
    return {
        "store": store.url,
        "session_id": session,
        "checkpoints": [
            {
                "checkpoint_id": r.checkpoint_id,
                "raw_bytes": r.raw_bytes,
                "stored_bytes": r.stored_bytes,
                "uploaded_bytes": r.uploaded_bytes,
                "chunks_uploaded": r.chunks_uploaded,
                "chunks": r.chunks,
                "seconds": round(r.seconds, 3),
            }
            for r in (first, second)
        ],
        "restore_seconds": round(read_seconds, 3),
        "variables": variables,
        "all_equal": all(v["equal"] for v in variables),
    }


def render(result: dict[str, Any]) -> str:
    rows = [
        (
            c["checkpoint_id"],
            human_size(c["raw_bytes"]),
            human_size(c["stored_bytes"]),
            f"{human_size(c['uploaded_bytes'])} ({c['chunks_uploaded']}/{c['chunks']} chunks)",
            f"{c['seconds']:.2f} s",
        )
        for c in result["checkpoints"]
    ]
    var_rows = [
        (v["name"], v["type"], human_size(v["raw_bytes"]), "yes" if v["equal"] else "NO")
        for v in result["variables"]
    ]
    return "\n".join(
        [
            f"store    {result['store']}",
            f"session  {result['session_id']}",
            "",
            table(rows, ("CHECKPOINT", "RAW", "STORED", "UPLOADED", "TIME")),
            "",
            f"restored the second checkpoint in {result['restore_seconds']:.2f} s:",
            table(var_rows, ("VARIABLE", "TYPE", "SIZE", "EQUAL")),
            "",
            "all variables equal" if result["all_equal"] else "SOME VARIABLES DIFFER",
            "next: nbferry list; nbferry show latest --session " + result["session_id"],
        ]
    )
