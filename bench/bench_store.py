"""Benchmark: nbferry's pod store against dill + zstd and against the raw disk.

    .venv/bin/python bench/bench_store.py                      # 1 GiB state, 3 reps, file + s3
    .venv/bin/python bench/bench_store.py --size-mib 128 --reps 1 --json bench/results/quick.json

What is measured (all in one run, side by side)
-----------------------------------------------
State: a dict of 4 numpy arrays, SIZE in total: half random float64
(``default_rng(seed).random``, incompressible) and half compressible int64
(``arange(n) % 1000`` plus a counter bumped every 512 KiB, and small random
integers in [0, 16)). No two 4 MiB slices of it are equal, so nbferry's chunk
deduplication gains nothing (the table prints reused bytes to show it).

* nbferry write: pickle each variable (protocol 5, out-of-band buffers, as the
  agent does) into its own pod, then ``write_checkpoint`` into a fresh, empty
  store. nbferry read: ``read_manifest`` + ``read_pods`` + ``pickle.loads`` of
  every pod (each chunk is hash-verified by read_pods).
* dill+zstd write: ``dill.dump(state)`` (dill's default protocol) through a
  ``zstandard`` stream writer, as a typical user would: ``ZstdCompressor()``
  (level 3, one thread) and, to be fair to multi-threaded zstd, a second
  variant ``ZstdCompressor(level=3, threads=-1)``. file://: a local file,
  fsync'd before the timer stops; s3: ``s3fs`` ``fs.open(path, "wb")``, closed
  (multipart upload completed) before the timer stops. Read: zstd stream reader
  + ``dill.load``.
* raw: write SIZE of pre-generated random bytes in 32 MiB blocks to one file on
  the same file system and fsync (the ceiling for any file:// writer); a cold
  sequential read of that file is reported for context.

Every timer includes serialization and opening the store / file system object,
and stops only when the data is durable (fsync'd locally, acknowledged by S3).

Stores: file:// in a temp folder under bench/results/tmp (the same file system
as /work; checked with st_dev and recorded in the JSON)
and s3:// on a moto ThreadedMotoServer on 127.0.0.1 run by this (parent)
process, reached over HTTP through s3fs by both methods. Moto is told to keep
objects of any size in memory (MOTO_S3_DEFAULT_KEY_BUFFER_SIZE), so nbferry's
4 MiB objects and dill's 50 MiB multipart parts are treated alike; otherwise
moto would spill dill's parts (not nbferry's) to temp files.

Fairness
--------
* Every measurement runs in a fresh subprocess (write: build the state, then
  time; read: time, then verify the loaded arrays against BLAKE3 digests taken
  at write time), so no side keeps warm Python objects, allocator arenas or
  fsspec instances from an earlier step.
* On this VM, guest memory that is freed is handed back to the host within
  ~2 s (virtio-balloon free page reporting), and touching it again costs
  ~3-4 s per GiB instead of ~0.1 s (measured: touch 2 GiB right after another
  process freed 2 GiB: 0.18 s; 3 s later: 3.3 s; 12 s later: 8.1 s). That hits
  every fresh buffer and every page-cache page, so it would swamp the numbers
  and favour whichever method allocates less, at random. So each child first
  touches and holds a block of memory (write: SIZE + 256 MiB, read:
  2 x SIZE + 256 MiB, the same for every method; see ``Warm``), builds its
  input, then frees the block and drops caches just before starting its timer:
  the step's allocations then land on backed pages, as on an ordinary machine.
  The time to touch the block is recorded (warm_touch_s in the JSON) but not
  counted. ``--no-warm`` measures without it. In addition the order of methods
  is rotated across repetitions, so any leftover cost falls on each in turn.
  What warming cannot remove, and is left in on purpose as a real cost of the
  code under test: faulting in 4 KiB pages is itself slow here (~0.7 s per GiB
  for a fresh ``bytearray(1 GiB)`` even on backed memory, against ~0.1-0.2 s
  for a numpy array, which gets transparent huge pages via madvise).
* Before each timed step the child runs ``sync`` and writes 3 to
  /proc/sys/vm/drop_caches (root only): reads come from disk for both methods,
  and no dirty pages from an earlier step are flushed during a later one. The
  output says whether this was permitted; ``--no-drop-caches`` turns it off.
* Temp data is deleted after each method's read (disk use stays around one
  copy of the state plus one compressed copy), and every write goes into an
  empty store or a new object.

Reported: medians over --reps repetitions (min-max in brackets), ratios of
medians dill+zstd / nbferry (target >= 2x), nbferry's file:// write throughput
as a fraction of raw write+fsync (target >= 0.6), bytes stored per method, and
time per phase (nbferry: pickle vs write_checkpoint; read_manifest vs
read_pods vs loads) with the client's CPU seconds and, for s3, the moto
server's (the parent process's CPU time during the step), to show where the
time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GIB = 1 << 30
MIB = 1 << 20
METHODS = ("nbferry", "dill-zstd", "dill-zstd-mt")
LABELS = {"nbferry": "nbferry", "dill-zstd": "dill+zstd", "dill-zstd-mt": "dill+zstd mt"}
SESSION = "bench"
SEED = 20240601
RAW_BLOCK = 32 * MIB
RATIO_TARGET = 2.0
RAW_FRACTION_TARGET = 0.6

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NBFERRY_SIGNING_KEY": "nbferry-bench-key",
    # moto: keep every object in memory, whatever its size (see the docstring).
    "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(64 * GIB),
}


# -- helpers shared by parent and children --------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def drop_caches() -> bool:
    """sync, then drop the page cache, dentries and inodes; False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def make_state(size: int, seed: int = SEED) -> dict[str, Any]:
    """Half random float64, half compressible int64, in 4 variables."""
    import numpy as np

    n = size // 4 // 8
    rng = np.random.default_rng(seed)
    return {
        "floats_a": rng.random(n),
        "floats_b": rng.random(n),
        # Period 1000 (8000 bytes) plus a step every 64 Ki elements: compressible,
        # yet no two 4 MiB chunks are equal at any size (no dedup within the state).
        "ints_mod": np.arange(n, dtype=np.int64) % 1000 + (np.arange(n, dtype=np.int64) >> 16),
        "ints_small": rng.integers(0, 16, n, dtype=np.int64),
    }


def digests(state: dict[str, Any]) -> dict[str, str]:
    import blake3
    import numpy as np

    out = {}
    for name, arr in state.items():
        arr = np.ascontiguousarray(arr)
        digest = blake3.blake3(arr.reshape(-1).view(np.uint8)).hexdigest()
        out[name] = f"{arr.dtype}:{arr.shape}:{digest}"
    return out


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    t = os.times()
    return t.user + t.system


def s3fs_for(endpoint: str) -> Any:
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False)


def local_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- children: one timed step each ----------------------------------------------


class Warm:
    """Hold `nbytes` of touched memory; release it (and drop caches) right before a timer.

    This VM returns freed guest memory to the host after ~2 s (virtio-balloon free
    page reporting), and touching such memory again costs ~3-4 s per GiB. Memory
    touched here and freed just before the timer is at the head of the kernel's
    free lists, so the timed step's allocations (its buffers, the page cache) are
    served from backed pages, as on an ordinary machine, whichever method runs.
    """

    def __init__(self, nbytes: int) -> None:
        import numpy as np

        t0 = time.perf_counter()
        self.hold = np.ones(nbytes, dtype=np.uint8) if nbytes else None
        self.info: dict[str, Any] = {"warm_bytes": nbytes, "warm_touch_s": time.perf_counter() - t0}

    def release(self, drop: bool) -> dict[str, Any]:
        self.info["caches_dropped"] = drop_caches() if drop else False
        self.hold = None
        return self.info


def child_raw(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    size, path = spec["size"], Path(spec["path"])
    warm = Warm(spec["warm"])
    rng = np.random.default_rng(SEED + 1)
    blocks = [rng.bytes(min(RAW_BLOCK, size - off)) for off in range(0, size, RAW_BLOCK)]
    out = warm.release(spec["drop"])
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for block in blocks:
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write_s = time.perf_counter() - t0
    del blocks
    Warm(size + RAW_BLOCK).release(spec["drop"])
    buf = bytearray(RAW_BLOCK)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    read_s = time.perf_counter() - t0
    path.unlink()
    return {**out, "write_s": write_s, "read_s": read_s}


def child_write(spec: dict[str, Any]) -> dict[str, Any]:
    import pickle

    method, store, target = spec["method"], spec["store"], spec["target"]
    if method == "nbferry":
        from nbferry.storage import PodData, open_store
    else:
        import dill
        import zstandard
    warm = Warm(spec["warm"])
    state = make_state(spec["size"])
    out: dict[str, Any] = {"digests": digests(state)}
    out.update(warm.release(spec["drop"]))

    if method == "nbferry":
        c0, t0 = cpu_seconds(), time.perf_counter()
        pods = []
        for i, (name, obj) in enumerate(state.items()):
            bufs: list[pickle.PickleBuffer] = []
            header = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
            pods.append(PodData(f"p{i}", header, bufs, [name]))
        t1 = time.perf_counter()
        st = open_store(target, spec["options"])
        result = st.write_checkpoint(SESSION, pods)
        t2 = time.perf_counter()
        out.update(
            seconds=t2 - t0,
            cpu_s=cpu_seconds() - c0,
            phases={"pickle": t1 - t0, "write_checkpoint": t2 - t1},
            checkpoint_id=result.checkpoint_id,
            write_result={k: v for k, v in vars(result).items() if isinstance(v, int | float)},
        )
    else:
        cctx = (
            zstandard.ZstdCompressor()
            if method == "dill-zstd"
            else zstandard.ZstdCompressor(level=3, threads=-1)
        )
        c0, t0 = cpu_seconds(), time.perf_counter()
        if store == "file":
            with open(target, "wb") as f:
                with cctx.stream_writer(f, closefd=False) as w:
                    dill.dump(state, w)
                t1 = time.perf_counter()
                f.flush()
                os.fsync(f.fileno())
        else:
            fs = s3fs_for(spec["endpoint"])
            with fs.open(target, "wb") as f:
                with cctx.stream_writer(f, closefd=False) as w:
                    dill.dump(state, w)
                t1 = time.perf_counter()
        t2 = time.perf_counter()
        out.update(
            seconds=t2 - t0,
            cpu_s=cpu_seconds() - c0,
            phases={"dump": t1 - t0, "flush/fsync/close": t2 - t1},
            dill_protocol=dill.settings["protocol"],
        )

    if store == "file":
        out["stored_bytes"] = local_bytes(Path(spec["local_path"]))
    else:
        fs = s3fs_for(spec["endpoint"])
        fs.invalidate_cache()
        out["stored_bytes"] = int(fs.du(target))
    return out


def child_read(spec: dict[str, Any]) -> dict[str, Any]:
    import pickle

    method, store, target = spec["method"], spec["store"], spec["target"]
    if method == "nbferry":
        from nbferry.storage import open_store
    else:
        import dill
        import zstandard
    out: dict[str, Any] = Warm(spec["warm"]).release(spec["drop"])

    if method == "nbferry":
        c0, t0 = cpu_seconds(), time.perf_counter()
        st = open_store(target, spec["options"])
        manifest = st.read_manifest(spec["checkpoint_id"])
        t1 = time.perf_counter()
        pods = st.read_pods(manifest)
        t2 = time.perf_counter()
        state = {}
        for pod in pods.values():
            obj = pickle.loads(pod.header, buffers=pod.buffers)
            state[pod.variables[0]] = obj
        t3 = time.perf_counter()
        phases = {"read_manifest": t1 - t0, "read_pods": t2 - t1, "loads": t3 - t2}
        out.update(cpu_s=cpu_seconds() - c0, seconds=t3 - t0, phases=phases)
    else:
        dctx = zstandard.ZstdDecompressor()
        c0, t0 = cpu_seconds(), time.perf_counter()
        if store == "file":
            with open(target, "rb") as f, dctx.stream_reader(f) as r:
                state = dill.load(r)
        else:
            fs = s3fs_for(spec["endpoint"])
            with fs.open(target, "rb") as f, dctx.stream_reader(f) as r:
                state = dill.load(r)
        t1 = time.perf_counter()
        out.update(cpu_s=cpu_seconds() - c0, seconds=t1 - t0, phases={"load": t1 - t0})

    got = digests(state)
    out["verified"] = got == spec["digests"]
    if not out["verified"]:
        raise SystemExit(f"read back wrong data: {got} != {spec['digests']}")
    return out


CHILDREN = {
    "raw": child_raw,
    "write": child_write,
    "read": child_read,
}


def run_child(spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run one step in a fresh interpreter; its result comes back through a JSON file."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        result_path = tmp.name
    try:
        spec = {**spec, "result": result_path}
        parent_cpu = cpu_seconds()  # the moto server's threads (the parent is idle)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"child {spec['op']} {spec.get('method', '')} {spec.get('store', '')} failed "
                f"(rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        with open(result_path) as f:
            result = json.load(f)
        result["server_cpu_s"] = cpu_seconds() - parent_cpu
        return result
    finally:
        os.unlink(result_path)


# -- parent ---------------------------------------------------------------------


class S3Server:
    def __init__(self) -> None:
        os.environ.update(ENV)
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.bucket = f"nbf-bench-{uuid.uuid4().hex[:8]}"
        self.fs = s3fs_for(self.endpoint)
        self.fs.mkdir(self.bucket)

    def clear(self, path: str) -> None:
        self.fs.invalidate_cache()
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache()

    def stop(self) -> None:
        self.server.stop()


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def cell(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    size = args.size_mib * MIB
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for s in stores:
        if s not in ("file", "s3"):
            raise SystemExit(f"unknown store {s!r}: use file, s3 or file,s3")
    tmp_root = Path(args.tmp_dir).resolve()
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_root))
    same_fs = {
        "work_dev": os.stat("/work").st_dev,
        "tmp_dir_dev": os.stat(work).st_dev,
        "slash_tmp_dev": os.stat(tempfile.gettempdir()).st_dev,
    }
    if same_fs["work_dev"] != same_fs["tmp_dir_dev"]:
        log(f"warning: {work} is not on the same file system as /work")
    drop = not args.no_drop_caches
    caches_dropped = drop and drop_caches()
    info: dict[str, Any] = {
        "size_bytes": size,
        "reps": args.reps,
        "stores": stores,
        "tmp_dir": str(work),
        "same_filesystem": same_fs,
        "caches_dropped": caches_dropped,
        "drop_caches_requested": drop,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg()[0],
    }
    try:
        import dill
        import numpy
        import s3fs
        import zstandard

        info["versions"] = {
            "numpy": numpy.__version__,
            "dill": dill.__version__,
            "zstandard": zstandard.__version__,
            "s3fs": s3fs.__version__,
        }
    except ImportError as exc:
        raise SystemExit(f"missing benchmark dependency: {exc} (pip install -e '.[test]')") from exc
    if info["loadavg_start"] > 0.5:
        log(
            f"warning: 1-min load average {info['loadavg_start']:.1f} at start: something else "
            "is (or was just) running; if it still is, the timings will show it"
        )
    if drop and not caches_dropped:
        log("note: cannot write /proc/sys/vm/drop_caches (not root?): page cache not dropped")
    # Memory each child touches and frees right before its timer (see Warm).
    warm_write = 0 if args.no_warm else size + 256 * MIB
    warm_read = 0 if args.no_warm else 2 * size + 256 * MIB
    info["warm_bytes"] = {"write": warm_write, "read": warm_read}

    server = S3Server() if "s3" in stores else None
    runs: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    try:
        for rep in range(args.reps):
            r = run_child(
                {
                    "op": "raw",
                    "size": size,
                    "path": str(work / "raw.bin"),
                    "drop": drop,
                    "warm": warm_write,
                }
            )
            raw.append(r)
            log(
                f"rep {rep + 1}: raw write+fsync {size / GIB / r['write_s']:.2f} GiB/s, "
                f"cold read {size / GIB / r['read_s']:.2f} GiB/s"
            )
            order = METHODS[rep % len(METHODS) :] + METHODS[: rep % len(METHODS)]
            for store in stores:
                for method in order:
                    runs += measure_one(
                        rep, store, method, size, work, server, drop, (warm_write, warm_read)
                    )
    finally:
        info["loadavg_end"] = os.getloadavg()[0]
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"config": info, "raw": raw, "runs": runs}


def measure_one(
    rep: int,
    store: str,
    method: str,
    size: int,
    work: Path,
    server: S3Server | None,
    drop: bool,
    warm: tuple[int, int],
) -> list[dict[str, Any]]:
    spec: dict[str, Any] = {"method": method, "store": store, "size": size, "drop": drop}
    if store == "file":
        local = work / ("nbferry-store" if method == "nbferry" else f"state-{method}.dill.zst")
        spec["local_path"] = str(local)
        spec["target"] = local.as_uri() if method == "nbferry" else str(local)
        spec["options"] = {}
    else:
        assert server is not None
        name = "nbferry-store" if method == "nbferry" else f"state-{method}.dill.zst"
        spec["target"] = f"s3://{server.bucket}/{name}"
        spec["endpoint"] = server.endpoint
        spec["options"] = {"endpoint_url": server.endpoint}
    try:
        w = run_child({**spec, "op": "write", "warm": warm[0]})
        log(
            f"rep {rep + 1}: {store:4} {LABELS[method]:13} write {w['seconds']:6.2f} s "
            f"({size / GIB / w['seconds']:.2f} GiB/s), stored {w['stored_bytes'] / MIB:.0f} MiB"
        )
        read_spec = {**spec, "op": "read", "digests": w["digests"], "warm": warm[1]}
        read_spec["checkpoint_id"] = w.get("checkpoint_id")
        r = run_child(read_spec)
        log(
            f"rep {rep + 1}: {store:4} {LABELS[method]:13} read  {r['seconds']:6.2f} s "
            f"({size / GIB / r['seconds']:.2f} GiB/s), verified"
        )
    finally:
        if store == "file":
            p = Path(spec["local_path"])
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        else:
            assert server is not None
            server.clear(spec["target"])
    common = {"rep": rep, "store": store, "method": method}
    w.pop("digests", None)
    return [{**common, "op": "write", **w}, {**common, "op": "read", **r}]


def summarize(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cfg, runs = results["config"], results["runs"]
    size = cfg["size_bytes"]
    gib = size / GIB

    def times(op: str, store: str, method: str, key: str = "seconds") -> list[float]:
        return [r[key] for r in runs if (r["op"], r["store"], r["method"]) == (op, store, method)]

    raw_w = [size / GIB / r["write_s"] for r in results["raw"]]
    raw_r = [size / GIB / r["read_s"] for r in results["raw"]]
    raw_gibs = median(raw_w)
    lines: list[str] = []
    checks: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"raw_write_fsync_gibs": raw_gibs, "rows": [], "checks": checks}

    lines.append(
        f"## nbferry pod store vs dill+zstd: {gib:g} GiB state "
        f"(1/2 random float64, 1/2 compressible int64; 4 variables), "
        f"median of {cfg['reps']} (min-max)"
    )
    lines.append("")
    dropped = cfg["caches_dropped"]
    lines.append(
        f"- machine: {cfg['cpus']} CPUs, Python {cfg['python']}; "
        + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
        + f"; 1-min load average {cfg['loadavg_start']:.2f} at start, "
        f"{cfg['loadavg_end']:.2f} at end (the benchmark itself adds ~1-2)"
    )
    lines.append(
        "- page cache: "
        + (
            "dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every timed step"
            if dropped
            else (
                "NOT dropped (not permitted)"
                if cfg["drop_caches_requested"]
                else "NOT dropped (--no-drop-caches)"
            )
        )
        + "; every step in a fresh process; method order rotated per repetition"
        + (
            "; memory warmed right before each timer (write "
            f"{cfg['warm_bytes']['write'] / GIB:.2f} GiB, read "
            f"{cfg['warm_bytes']['read'] / GIB:.2f} GiB; see Warm)"
            if cfg["warm_bytes"]["write"]
            else "; memory NOT warmed (--no-warm)"
        )
    )
    lines.append(
        f"- raw sequential write+fsync ({RAW_BLOCK // MIB} MiB blocks, same file system): "
        f"{cell(raw_w)} GiB/s; cold sequential read: {cell(raw_r)} GiB/s"
    )
    lines.append("")
    head = (
        "| operation | store | nbferry s | dill+zstd s | dill+zstd mt s "
        "| dill+zstd / nbferry | dill+zstd mt / nbferry | nbferry GiB/s | vs raw write+fsync |"
    )
    lines += [head, "|" + "---|" * 9]
    for store in cfg["stores"]:
        for op in ("write", "read"):
            nb = times(op, store, "nbferry")
            d1 = times(op, store, "dill-zstd")
            d2 = times(op, store, "dill-zstd-mt")
            nb_m = median(nb)
            r1, r2 = median(d1) / nb_m, median(d2) / nb_m
            thr = gib / nb_m
            frac = thr / raw_gibs if (store == "file" and op == "write") else None
            lines.append(
                f"| {op} | {store} | {cell(nb)} | {cell(d1)} | {cell(d2)} | {r1:.2f}x | "
                f"{r2:.2f}x | {thr:.2f} | {f'{frac:.2f}' if frac is not None else '-'} |"
            )
            summary["rows"].append(
                {
                    "op": op,
                    "store": store,
                    "nbferry_s": nb_m,
                    "dill_zstd_s": median(d1),
                    "dill_zstd_mt_s": median(d2),
                    "ratio_dill_zstd": r1,
                    "ratio_dill_zstd_mt": r2,
                    "nbferry_gibs": thr,
                    "fraction_of_raw_write": frac,
                }
            )
            for label, ratio in (("dill+zstd", r1), ("dill+zstd mt", r2)):
                checks.append(
                    {
                        "name": f"{op} {store}: {label} / nbferry = {ratio:.2f}x "
                        f">= {RATIO_TARGET:g}x",
                        "pass": ratio >= RATIO_TARGET,
                    }
                )
            if frac is not None:
                checks.append(
                    {
                        "name": f"write file: nbferry {thr:.2f} GiB/s = {frac:.2f} of raw "
                        f"write+fsync {raw_gibs:.2f} GiB/s >= {RAW_FRACTION_TARGET}",
                        "pass": frac >= RAW_FRACTION_TARGET,
                    }
                )
    lines.append("")
    lines.append("### Targets")
    lines.append("")
    for c in checks:
        lines.append(f"- {'PASS' if c['pass'] else 'FAIL'}: {c['name']}")
    summary["all_pass"] = all(c["pass"] for c in checks)

    lines.append("")
    lines.append("### Bytes stored")
    lines.append("")
    lines.append("| store | method | bytes stored | MiB | of state size |")
    lines.append("|---|---|---|---|---|")
    summary["stored_bytes"] = {}
    for store in cfg["stores"]:
        for method in METHODS:
            b = times("write", store, method, "stored_bytes")
            if not b:
                continue
            n = int(median(b))
            summary["stored_bytes"][f"{store}/{method}"] = n
            lines.append(f"| {store} | {LABELS[method]} | {n:,} | {n / MIB:.1f} | {n / size:.3f} |")

    lines.append("")
    lines.append("### Where the time goes (medians, seconds)")
    lines.append("")
    lines.append(
        "| operation | store | method | wall s | phases | client CPU s | moto server CPU s |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for store in cfg["stores"]:
        for op in ("write", "read"):
            for method in METHODS:
                sel = [r for r in runs if (r["op"], r["store"], r["method"]) == (op, store, method)]
                if not sel:
                    continue
                phases = ", ".join(
                    f"{k} {median([r['phases'][k] for r in sel]):.2f}" for k in sel[0]["phases"]
                )
                wall = median([r["seconds"] for r in sel])
                cpu = median([r["cpu_s"] for r in sel])
                server = median([r["server_cpu_s"] for r in sel]) if store == "s3" else None
                lines.append(
                    f"| {op} | {store} | {LABELS[method]} | {wall:.2f} | {phases} | {cpu:.2f} | "
                    f"{f'{server:.2f}' if server is not None else '-'} |"
                )
    nb_writes = [r for r in runs if r["op"] == "write" and r["method"] == "nbferry"]
    if nb_writes:
        wr = nb_writes[-1]["write_result"]
        lines.append("")
        lines.append(
            "nbferry write_checkpoint (last run): "
            + ", ".join(f"{k}={wr[k]}" for k in ("chunks", "chunks_uploaded", "blobs_written"))
            + "; reused (deduplicated) bytes in all runs: "
            + str(max(r["write_result"]["reused_raw_bytes"] for r in nb_writes))
        )
    protos = {r.get("dill_protocol") for r in runs if r.get("dill_protocol") is not None}
    if protos:
        lines.append(f"dill pickle protocol (dill's default): {', '.join(map(str, protos))}")
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="state size (default 1024)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--stores", default="file,s3", help="comma list of file, s3")
    ap.add_argument("--json", metavar="PATH", help="also write all results as JSON here")
    ap.add_argument(
        "--tmp-dir",
        default=str(HERE / "results" / "tmp"),
        help="where file:// data goes (default bench/results/tmp; deleted afterwards)",
    )
    ap.add_argument(
        "--no-warm",
        action="store_true",
        help="do not touch and free memory right before each timer (see Warm)",
    )
    ap.add_argument("--no-drop-caches", action="store_true", help="do not drop the page cache")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        os.environ.update(ENV)
        result = CHILDREN[spec["op"]](spec)
        with open(spec["result"], "w") as f:
            json.dump(result, f)
        return 0

    if args.size_mib < 4 or args.reps < 1:
        ap.error("--size-mib must be >= 4 and --reps >= 1")
    started = time.perf_counter()
    results = measure(args)
    table, summary = summarize(results)
    results["summary"] = summary
    results["config"]["wall_seconds"] = time.perf_counter() - started
    print(table)
    print(f"\n(total wall time {results['config']['wall_seconds']:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
