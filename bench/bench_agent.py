"""Benchmark: nbferry's in-kernel agent against dill.dump_session + zstd, in real kernels.

    .venv/bin/python bench/bench_agent.py                        # 100m, 1g, small; 3 reps
    .venv/bin/python bench/bench_agent.py --sessions small,100m --reps 1
    .venv/bin/python bench/bench_agent.py --sessions 1g --reps 1 --profile   # + phase times

What is measured (all in one run, side by side)
-----------------------------------------------
Every kernel is a real ipykernel started through ``migrator.kernels.Kernel``
(NBFERRY_SIGNING_KEY is set in this process's environment, so kernels inherit
it). Wall times are taken in this process around one cell (``Kernel.run``:
execute request until the kernel is idle again), so they include the ~1 ms
round trip; in-kernel times are reported next to them.

Sessions, built in a source kernel by untimed cells:

* ``100m`` / ``1g``: four numpy arrays of SIZE/4 each: ``floats_a``,
  ``floats_b`` (``default_rng().random``, incompressible float64), ``ints_mod``
  (``arange % 1000``) and ``ints_small`` (random ints in [0, 16)), both int64 and
  compressible; plus ``df``, a 10,000-row pandas DataFrame (float, int, string
  and datetime columns), and the module bindings ``np`` and ``pd``.
* ``small-objs``: ``records``, one dict of 50,000 small objects (small dicts,
  tuples, strings, ints and lists, in turn).
* ``small-vars``: 2,000 separate variables ``v0000`` .. ``v1999`` of the same
  kinds. ``--sessions small`` runs both small variants.

Operations, per session and repetition (the order of the two methods is
rotated across repetitions):

* checkpoint, in the one source kernel: ``r = %nbferry checkpoint --store
  file://STORE --session S`` (STORE is a new, empty folder every repetition, so
  nothing is deduplicated against an earlier run) vs ``dill.dump_session`` of
  the same namespace through ``zstandard.ZstdCompressor(level=3).stream_writer``
  into ``STORE/dill-session.pkl.zst``, flushed and fsync'd (nbferry's file
  store fsyncs every object). The checkpoint cell's wall time is how long the
  kernel is blocked: today the whole checkpoint (capture and upload) runs in
  the cell. ``r['capture_seconds']`` (namespace capture, before the upload) and
  ``r['seconds']`` are reported too.
* restore, each method in its own fresh target kernel: ``r = %nbferry restore
  ID --store file://STORE`` (the extension is loaded by an earlier, untimed
  cell, and its start-up thread has finished: the gRPC endpoint, then the
  import of the checkpoint and restore code, as in a kernel that loaded the
  agent at start and that someone then types into; its cost is measured
  separately) vs ``dill.load_session`` through a ``zstandard`` stream reader
  (wrapped in ``io.BufferedReader``: dill must peek at the stream to find the
  module, and a bare zstd reader cannot seek back). dill's cell pays for
  importing dill and zstandard (~0.02 s); nbferry's storage code was imported
  by the agent's start-up thread. Then every variable is checked in the target
  against the source: present, and equal checksums (arrays: dtype, shape and
  sum; frames: ``hash_pandas_object``; other values: SHA-1 of their repr).
* extension load: ``%time %load_ext nbferry.agent`` as the first cell of each
  of ``--ext-kernels`` fresh kernels (wall time from here minus an empty cell's
  round trip, and %time's own figure), then how long its start-up thread runs
  on after the load returns.

The helper code the cells call lives in a module ``_nbf_bench`` put in the
kernel's ``sys.modules``, so it never appears in the namespace either method
saves. dill saves what ``dump_session`` saves in a kernel: everything in
IPython's user namespace (``__main__``), including ``In``/``Out`` and
``get_ipython``; that is what a user of it gets.

Fairness on this VM
-------------------
Guest memory that is freed is handed back to the host within ~2 s
(virtio-balloon free page reporting) and touching it again costs ~3-4 s per
GiB instead of ~0.2 s. That would swamp the numbers and penalise whichever
method allocates more at random. So before every timed cell the kernel touches
and holds a block (checkpoint: SIZE + 256 MiB; restore: 2 x SIZE + 256 MiB;
the same for both methods) and frees it in a cell just before the timed one;
the timed cell's allocations (its buffers and the page cache) then land on
backed pages, as on an ordinary machine. ``--no-warm`` turns this off. Before
the timed cell the kernel also runs ``sync`` and drops the page cache (root
only; ``--no-drop-caches``), so restores read from disk and no earlier dirty
pages are flushed during a later step.

Temp data lives in a folder under --tmp (default: the system temp dir) and is
deleted after each repetition; peak disk use is one nbferry store and one dill
file of the largest session (~1.2 GiB for 1g).

Targets: numeric sessions dill+zstd / nbferry >= 2 for checkpoint and restore;
small-object sessions >= 1 (nbferry no slower); extension load < 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
SEED = 20240601
SESSION = "bench"
DILL_FILE = "dill-session.pkl.zst"
METHODS = ("nbferry", "dill")
LABELS = {"nbferry": "nbferry", "dill": "dill+zstd"}
NUMERIC_TARGET = 2.0
SMALL_TARGET = 1.0
EXT_TARGET_MS = 150.0
WARM_EXTRA = 256 * MIB

SESSIONS: dict[str, dict[str, Any]] = {
    "100m": {"kind": "numeric", "size": 100 * MIB, "target": NUMERIC_TARGET},
    "1g": {"kind": "numeric", "size": GIB, "target": NUMERIC_TARGET},
    "small-objs": {"kind": "objs", "count": 50_000, "size": 0, "target": SMALL_TARGET},
    "small-vars": {"kind": "vars", "count": 2_000, "size": 0, "target": SMALL_TARGET},
}
ALIASES = {"small": ["small-objs", "small-vars"]}

# Installed as module _nbf_bench in every kernel (never in the user namespace).
HELPER = r'''
import hashlib, json, os, sys, time

HOLD = None
LAST = None


def user_ns():
    from IPython import get_ipython
    return get_ipython().user_ns


def kind_of(i):
    k = i % 5
    if k == 0:
        return {"id": i, "name": f"item{i}", "ok": i % 2 == 0}
    if k == 1:
        return (i, f"s{i}", i * 0.5)
    if k == 2:
        return f"string-{i}"
    if k == 3:
        return i * 7919
    return [i, i + 1, i + 2]


def make_session(kind, size, count, seed):
    ns = user_ns()
    if kind == "numeric":
        import numpy as np
        import pandas as pd
        n = size // 4 // 8
        rng = np.random.default_rng(seed)
        ns["np"], ns["pd"] = np, pd
        ns["floats_a"] = rng.random(n)
        ns["floats_b"] = rng.random(n)
        ns["ints_mod"] = np.arange(n, dtype=np.int64) % 1000
        ns["ints_small"] = rng.integers(0, 16, n, dtype=np.int64)
        rows = 10_000
        ns["df"] = pd.DataFrame({
            "x": rng.random(rows),
            "n": np.arange(rows, dtype=np.int64),
            "label": [f"row-{i % 97}" for i in range(rows)],
            "when": pd.date_range("2024-01-01", periods=rows, freq="min"),
        })
        names = ["np", "pd", "floats_a", "floats_b", "ints_mod", "ints_small", "df"]
    elif kind == "objs":
        ns["records"] = {f"k{i}": kind_of(i) for i in range(count)}
        names = ["records"]
    else:
        names = [f"v{i:04d}" for i in range(count)]
        for i, name in enumerate(names):
            ns[name] = kind_of(i)
    return names


def _summary(value):
    mod = type(value).__module__
    if type(value).__name__ == "module":
        return "module " + value.__name__
    if mod == "numpy" and type(value).__name__ == "ndarray":
        return f"{value.dtype}{value.shape}:{float(value.sum())!r}"
    if mod.startswith("pandas") and type(value).__name__ == "DataFrame":
        import pandas as pd
        h = int(pd.util.hash_pandas_object(value, index=True).sum())
        return f"DataFrame{value.shape}:{list(value.dtypes.astype(str))}:{h}"
    return type(value).__name__ + ":" + hashlib.sha1(repr(value).encode()).hexdigest()


def checksum(names):
    """{name: summary} of the variables (missing ones: None), folded when many."""
    ns = user_ns()
    out = {n: (_summary(ns[n]) if n in ns else None) for n in names}
    if len(out) <= 50:
        return out
    missing = [n for n, s in out.items() if s is None]
    digest = hashlib.sha1(json.dumps(out, sort_keys=True).encode()).hexdigest()
    return {"count": len(out), "missing": missing[:20], "digest": digest}


def warm(nbytes):
    """Touch and hold nbytes (see the benchmark's docstring)."""
    global HOLD
    HOLD = None
    t = time.perf_counter()
    HOLD = bytearray(nbytes)  # memset: every page is touched
    return time.perf_counter() - t


def release(drop):
    """sync and drop the page cache (if asked and permitted), then free the held block."""
    global HOLD
    dropped = False
    if drop:
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            dropped = True
        except OSError:
            pass
    HOLD = None
    return dropped


def dill_save(path):
    global LAST
    t = time.perf_counter()
    import dill
    import zstandard
    with open(path, "wb") as f:
        with zstandard.ZstdCompressor(level=3).stream_writer(f, closefd=False) as w:
            dill.dump_session(w)
        f.flush()
        os.fsync(f.fileno())
    LAST = time.perf_counter() - t


def dill_load(path):
    global LAST
    t = time.perf_counter()
    import io
    import dill
    import zstandard
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as rd:
        dill.load_session(io.BufferedReader(rd, 1 << 20))
    LAST = time.perf_counter() - t


# -- phase timers for --profile (monkeypatched in this kernel only) -------------

PHASES = {}
_PATCHED = []


def _timed(owner, attr, label):
    import functools
    import threading
    original = getattr(owner, attr, None)
    if original is None:  # renamed since this list was written: time the rest
        PHASES[f"(no timer: {label})"] = 0.0
        return
    depth = threading.local()  # count only the outermost call (imports nest)

    @functools.wraps(original)
    def wrapper(*a, **kw):
        level = getattr(depth, "n", 0)
        depth.n = level + 1
        t = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            depth.n = level
            if level == 0:
                dt = time.perf_counter() - t
                main = threading.current_thread() is threading.main_thread()
                key = label if main else label + " [sum over threads]"
                PHASES[key] = PHASES.get(key, 0.0) + dt

    setattr(owner, attr, wrapper)
    _PATCHED.append((owner, attr, original))


def _unpatch():
    while _PATCHED:
        owner, attr, original = _PATCHED.pop()
        setattr(owner, attr, original)


def _patch_common():
    import importlib
    from nbferry.agent import capture, magics, pickling, restore
    from nbferry.storage import backend, chunks, store
    _timed(magics, "render_checkpoint", "render_checkpoint (report text)")
    _timed(magics, "render_restore", "render_restore (report text)")
    _timed(capture, "checkpoint", "capture.checkpoint")
    _timed(restore, "restore", "restore.restore")
    _timed(importlib, "import_module", "  restore: import module bindings")
    _timed(capture, "capture_namespace", "capture_namespace")
    _timed(capture, "fingerprint", "  capture: fingerprint (canonical pickle + blake3)")
    _timed(pickling, "encode", "  capture: pickling.encode")
    _timed(pickling, "rebuildable_views", "  capture: rebuildable_views")
    _timed(capture, "_state_pod", "  capture: random-state pod")
    _timed(capture, "environment", "environment()")
    _timed(capture, "history", "history()")
    _timed(store.Store, "write_checkpoint", "Store.write_checkpoint")
    _timed(store.Store, "_parent_manifest", "  write: parent manifest lookup")
    _timed(store.Store, "_lay_out", "  write: _lay_out (split + blake3 chunk hashes)")
    _timed(store.Store, "_upload", "  write: _upload (size checks, zstd, put)")
    _timed(store.Store, "_commit", "  write: _commit (sign + put manifest)")
    _timed(chunks, "encode", "    chunk encode (zstd or raw)")
    _timed(backend.Backend, "put", "    backend.put (write + fsync)")
    _timed(backend.Backend, "size", "    backend.size (exists check)")
    _timed(store.Store, "resolve", "  restore: resolve")
    _timed(store.Store, "read_manifest", "  restore: read_manifest (+ signature)")
    _timed(restore, "preflight", "  restore: preflight")
    _timed(store.Store, "read_pods", "  restore: read_pods (read, decode, verify)")
    _timed(backend.Backend, "get", "    backend.get (file read)")
    _timed(chunks, "decode_into", "    chunk decode_into")
    _timed(chunks, "chunk_hash", "    chunk_hash (blake3)")
    _timed(pickling, "decode", "  restore: pickling.decode (unpickle)")
    _timed(restore, "_restore_history", "  restore: history")


def profile(op, store_url, arg, top):
    """Run `%nbferry checkpoint` (arg: session) or `%nbferry restore` (arg: checkpoint
    id) with phase timers and cProfile; the agent's modules are imported first."""
    import cProfile
    import io
    import pstats
    PHASES.clear()
    _patch_common()
    shell = __import__("IPython").get_ipython()
    if op == "checkpoint":
        line = f"checkpoint --store {store_url} --session {arg}"
    else:
        line = f"restore {arg} --store {store_url}"
    prof = cProfile.Profile()
    try:
        t = time.perf_counter()
        prof.enable()
        result = shell.run_line_magic("nbferry", line)
        sys.stdout.flush()
        prof.disable()
        total = time.perf_counter() - t
    finally:
        _unpatch()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return {
        "total": total,
        "phases": dict(PHASES),
        "failed": result.get("failed", []),
        "cprofile_tottime": buf.getvalue(),
    }


def profile_dill(op, path, modules):
    """dill_save / dill_load (no profiler: dill's pickler is pure Python and cProfile
    would inflate it); for load, `modules` are imported first and timed apart."""
    imports = import_time(modules) if op == "restore" else 0.0
    (dill_save if op == "checkpoint" else dill_load)(path)
    return {"total": LAST, "imports_first_s": imports}


def import_time(modules):
    t = time.perf_counter()
    for m in modules:
        __import__(m)
    return time.perf_counter() - t
'''

INSTALL = (
    f"exec({HELPER!r}, __import__('sys').modules.setdefault('_nbf_bench', "
    "__import__('types').ModuleType('_nbf_bench')).__dict__)"
)
H = "__import__('_nbf_bench')"


def code_revision() -> str:
    """The commit measured, with '+dirty' when agent/ or storage/ differ from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=root, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "agent", "storage")
    return head + ("+dirty" if dirty else "")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start_kernel(cwd: Path) -> Any:
    from nbferry.migrator.kernels import Kernel

    k = Kernel(cwd)
    k.run(INSTALL, store_history=False)
    return k


AGENT_STARTING = "any(t.name == 'nbferry-agent-start' for t in __import__('threading').enumerate())"


def load_agent(k: Any) -> None:
    """`%load_ext nbferry.agent`, then wait for its start-up thread (gRPC endpoint, imports).

    A kernel loads the agent at start (`nbferry install`); by the time someone
    types a command that thread is long done. Without the wait, a timed cell run
    a few hundred ms after loading would share the CPUs and the disk with it.
    """
    k.run("%load_ext nbferry.agent")
    wait_for_agent_start(k)


def wait_for_agent_start(k: Any, timeout: float = 60) -> float:
    """Seconds until the agent's start-up thread ends (polled every 10 ms)."""
    started = time.perf_counter()
    while k.value(AGENT_STARTING):
        if time.perf_counter() - started > timeout:
            raise RuntimeError("the nbferry agent's start-up thread did not finish")
        time.sleep(0.01)
    return time.perf_counter() - started


def timed(k: Any, code: str, timeout: float = 600) -> tuple[float, str]:
    t = time.perf_counter()
    out = k.run(code, timeout=timeout)
    return time.perf_counter() - t, out


def prepare(k: Any, warm_bytes: int, drop: bool) -> dict[str, Any]:
    """Touch a block, then (in a separate cell, just before the timed one) free it."""
    info: dict[str, Any] = {"warm_bytes": warm_bytes}
    if warm_bytes:
        info["warm_touch_s"] = k.value(f"{H}.warm({warm_bytes})")
    info["caches_dropped"] = k.value(f"{H}.release({drop!r})")
    return info


def dir_bytes(path: Path, exclude: str = "") -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != exclude)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- measurements ------------------------------------------------------------------


def measure_ext(n_kernels: int, tmp: Path) -> dict[str, Any]:
    """Cold `%load_ext nbferry.agent` in fresh kernels, and how long its start-up thread runs."""
    rows = []
    for i in range(n_kernels):
        with start_kernel(tmp) as k:
            k.run("pass")
            roundtrip, _ = timed(k, "pass")
            before = k.value("len(__import__('sys').modules)")
            wall, out = timed(k, "%time %load_ext nbferry.agent")
            after = k.value("len(__import__('sys').modules)")
            startup = wait_for_agent_start(k)
            rows.append(
                {
                    "wall_s": wall,
                    "roundtrip_s": roundtrip,
                    "added_s": max(wall - roundtrip, 0.0),
                    "inner_s": _parse_time(out),
                    "modules_added": after - before,
                    "startup_thread_s": startup,
                }
            )
            log(
                f"  ext kernel {i + 1}: load_ext {wall * 1e3:.1f} ms wall "
                f"(round trip {roundtrip * 1e3:.1f} ms, %time {rows[-1]['inner_s'] * 1e3:.1f} ms,"
                f" +{after - before} modules); start-up thread done {startup * 1e3:.0f} ms later"
            )
    summary = {
        key: med([r[key] for r in rows])
        for key in rows[0]
        if isinstance(rows[0][key], (int, float))
    }
    summary["pass"] = summary["added_s"] * 1e3 < EXT_TARGET_MS
    return {"runs": rows, "median": summary}


def _parse_time(out: str) -> float:
    m = re.search(r"Wall time:\s*([\d.]+)\s*(ns|µs|us|ms|s)", out)
    if not m:
        return float("nan")
    scale = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def measure_session(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    spec = SESSIONS[name]
    size = spec["size"]
    warm_ckpt = (size + WARM_EXTRA) if args.warm else 0
    warm_rest = (2 * size + WARM_EXTRA) if args.warm else 0
    reps: list[dict[str, Any]] = []
    src_dir = tmp / f"{name}-src"
    src_dir.mkdir()
    log(f"session {name}: building in the source kernel")
    with start_kernel(src_dir) as src:
        t = time.perf_counter()
        names = src.value(
            f"{H}.make_session({spec['kind']!r}, {size}, {spec.get('count', 0)}, {SEED})",
            timeout=600,
        )
        build_s = time.perf_counter() - t
        load_agent(src)
        expected = src.value(f"{H}.checksum({names!r})", timeout=600)
        log(f"  built {len(names)} variables in {build_s:.1f} s")
        for rep in range(args.reps):
            order = METHODS if rep % 2 == 0 else METHODS[::-1]
            store = tmp / f"{name}-store-{rep}"
            store.mkdir()
            url = f"file://{store}"
            row: dict[str, Any] = {"rep": rep, "order": list(order)}
            # checkpoint, both methods in the one source kernel
            for method in order:
                prep = prepare(src, warm_ckpt, args.drop_caches)
                if method == "nbferry":
                    wall, _ = timed(
                        src, f"r = %nbferry checkpoint --store {url} --session {SESSION}"
                    )
                    r = src.value(
                        "{k: r[k] for k in ('checkpoint_id', 'seconds', 'capture_seconds',"
                        " 'raw_bytes', 'stored_bytes', 'bytes_uploaded', 'skipped', 'notes')}"
                    )
                    src.run("del r")
                    if r["skipped"]:
                        raise SystemExit(f"nbferry skipped variables: {r['skipped']}")
                    row["nbferry_checkpoint"] = {
                        "wall_s": wall,
                        "inner_s": r["seconds"],
                        "capture_s": r["capture_seconds"],
                        "checkpoint_id": r["checkpoint_id"],
                        "raw_bytes": r["raw_bytes"],
                        "stored_bytes": r["stored_bytes"],
                        "notes": r["notes"],
                        **prep,
                    }
                else:
                    path = store / DILL_FILE
                    wall, _ = timed(src, f"{H}.dill_save({str(path)!r})")
                    row["dill_checkpoint"] = {
                        "wall_s": wall,
                        "inner_s": src.value(f"{H}.LAST"),
                        **prep,
                    }
                log(
                    f"  rep {rep + 1} checkpoint {LABELS[method]}: {wall:.3f} s"
                    + (f" (warm touch {prep['warm_touch_s']:.1f} s)" if warm_ckpt else "")
                )
            row["nbferry_checkpoint"]["disk_bytes"] = dir_bytes(store, exclude=DILL_FILE)
            row["dill_checkpoint"]["disk_bytes"] = (store / DILL_FILE).stat().st_size
            # restore, each method in its own fresh kernel
            for method in order:
                dst_dir = tmp / f"{name}-dst-{rep}-{method}"
                dst_dir.mkdir()
                with start_kernel(dst_dir) as dst:
                    if method == "nbferry":
                        load_agent(dst)
                    prep = prepare(dst, warm_rest, args.drop_caches)
                    if method == "nbferry":
                        cid = row["nbferry_checkpoint"]["checkpoint_id"]
                        wall, _ = timed(dst, f"r = %nbferry restore {cid} --store {url}")
                        r = dst.value("{k: r[k] for k in ('seconds', 'failed', 'warnings')}")
                        dst.run("del r")
                        if r["failed"]:
                            raise SystemExit(f"nbferry restore failed: {r['failed']}")
                        res = {"wall_s": wall, "inner_s": r["seconds"], **prep}
                    else:
                        wall, _ = timed(dst, f"{H}.dill_load({str(store / DILL_FILE)!r})")
                        res = {"wall_s": wall, "inner_s": dst.value(f"{H}.LAST"), **prep}
                    got = dst.value(f"{H}.checksum({names!r})", timeout=600)
                    if got != expected:
                        bad = {
                            k: (expected.get(k), got.get(k))
                            for k in expected
                            if expected.get(k) != got.get(k)
                        }
                        raise SystemExit(f"{LABELS[method]} restore of {name} differs: {bad}")
                    res["verified"] = True
                    row[f"{method}_restore"] = res
                shutil.rmtree(dst_dir, ignore_errors=True)
                log(f"  rep {rep + 1} restore {LABELS[method]}: {wall:.3f} s (verified)")
            reps.append(row)
            shutil.rmtree(store, ignore_errors=True)
        profile = None
        if args.profile:
            profile = measure_profile(src, name, names, args, tmp, warm_ckpt, warm_rest)
    shutil.rmtree(src_dir, ignore_errors=True)
    return {
        "session": name,
        "spec": spec,
        "variables": len(names),
        "build_s": build_s,
        "reps": reps,
        "profile": profile,
    }


def measure_profile(
    src: Any,
    name: str,
    names: list[str],
    args: argparse.Namespace,
    tmp: Path,
    warm_ckpt: int,
    warm_rest: int,
) -> dict[str, Any]:
    """One more checkpoint and restore with phase timers and cProfile (not in the table)."""
    store = tmp / f"{name}-profile"
    store.mkdir()
    url = f"file://{store}"
    prepare(src, warm_ckpt, args.drop_caches)
    ckpt = src.value(f"{H}.profile('checkpoint', {url!r}, {SESSION!r}, 20)", timeout=600)
    cid = src.value(
        f"__import__('nbferry.storage', fromlist=['x']).open_store({url!r})"
        f".latest({SESSION!r}).checkpoint_id"
    )
    dill_path = str(store / DILL_FILE)
    prepare(src, warm_ckpt, args.drop_caches)
    dill_ckpt = src.value(f"{H}.profile_dill('checkpoint', {dill_path!r}, [])", timeout=600)
    mods = ["numpy", "pandas"] if SESSIONS[name]["kind"] == "numeric" else []
    dst_dir = tmp / f"{name}-profile-dst"
    dst_dir.mkdir()
    with start_kernel(dst_dir) as dst:
        prepare(dst, warm_rest, args.drop_caches)
        dill_rest = dst.value(
            f"{H}.profile_dill('restore', {dill_path!r}, {[*mods, 'dill', 'zstandard']!r})",
            timeout=600,
        )
    with start_kernel(dst_dir) as dst:
        load_agent(dst)
        prepare(dst, warm_rest, args.drop_caches)
        rest = dst.value(f"{H}.profile('restore', {url!r}, {cid!r}, 20)", timeout=600)
    # What every restore of this session pays before any data: importing its modules.
    imports = {}
    for extra in ([], ["dill", "zstandard"]):
        if mods + extra:
            with start_kernel(dst_dir) as k:
                prepare(k, warm_rest, args.drop_caches)  # as before a timed restore
                imports["+".join(mods + extra)] = k.value(f"{H}.import_time({mods + extra!r})")
    rest["fresh_kernel_import_s"] = imports
    shutil.rmtree(dst_dir, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    return {
        "checkpoint": ckpt,
        "restore": rest,
        "dill_checkpoint": dill_ckpt,
        "dill_restore": dill_rest,
    }


# -- report ------------------------------------------------------------------------


def fmt_s(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{med(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def fmt_bytes(n: float) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


def summarize(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    reps = result["reps"]
    target = result["spec"]["target"]
    for op in ("checkpoint", "restore"):
        nb = [r[f"nbferry_{op}"]["wall_s"] for r in reps]
        dl = [r[f"dill_{op}"]["wall_s"] for r in reps]
        ratio = med(dl) / med(nb)
        rows.append(
            {
                "session": result["session"],
                "operation": op,
                "nbferry_s": nb,
                "dill_s": dl,
                "nbferry_inner_s": [r[f"nbferry_{op}"]["inner_s"] for r in reps],
                "dill_inner_s": [r[f"dill_{op}"]["inner_s"] for r in reps],
                "capture_s": [r["nbferry_checkpoint"]["capture_s"] for r in reps]
                if op == "checkpoint"
                else [],
                "nbferry_bytes": med([r["nbferry_checkpoint"]["disk_bytes"] for r in reps]),
                "dill_bytes": med([r["dill_checkpoint"]["disk_bytes"] for r in reps]),
                "ratio": ratio,
                "target": target,
                "pass": ratio >= target,
            }
        )
    return rows


def render(rows: list[dict[str, Any]], ext: dict[str, Any] | None, reps: int) -> str:
    out = [
        f"Wall time of the timed cell, median of {reps} (min-max); ratio = dill+zstd / nbferry "
        "(medians). Bytes: on disk per method.",
        "",
        "| session | operation | nbferry s | dill+zstd s | dill/nbferry | nbferry bytes "
        "| dill+zstd bytes | target | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['session']} | {r['operation']} | {fmt_s(r['nbferry_s'])} "
            f"| {fmt_s(r['dill_s'])} | {r['ratio']:.2f}x | {fmt_bytes(r['nbferry_bytes'])} "
            f"| {fmt_bytes(r['dill_bytes'])} | >= {r['target']:g}x "
            f"| {'PASS' if r['pass'] else 'FAIL'} |"
        )
    out += [
        "",
        "In-kernel seconds (medians): nbferry's r['seconds'] and r['capture_seconds']; "
        "dill's time inside the cell. Kernel blocked = the checkpoint cell's wall time.",
        "",
        "| session | operation | nbferry kernel blocked s | nbferry r['seconds'] "
        "| nbferry capture_seconds | dill+zstd in-kernel s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        blocked = f"{med(r['nbferry_s']):.3f}" if r["operation"] == "checkpoint" else "-"
        cap = f"{med(r['capture_s']):.3f}" if r["capture_s"] else "-"
        out.append(
            f"| {r['session']} | {r['operation']} | {blocked} | {med(r['nbferry_inner_s']):.3f} "
            f"| {cap} | {med(r['dill_inner_s']):.3f} |"
        )
    if ext:
        m = ext["median"]
        n = len(ext["runs"])
        out += [
            "",
            f"Extension load, median of {n} fresh kernels: `%load_ext nbferry.agent` "
            f"{m['wall_s'] * 1e3:.1f} ms wall from the client, {m['added_s'] * 1e3:.1f} ms "
            f"over an empty cell's round trip ({m['roundtrip_s'] * 1e3:.1f} ms), "
            f"%time {m['inner_s'] * 1e3:.1f} ms, +{m['modules_added']:.0f} modules; "
            f"target < {EXT_TARGET_MS:.0f} ms: {'PASS' if m['pass'] else 'FAIL'}. "
            f"Its start-up thread (gRPC endpoint, then importing the checkpoint and "
            f"restore code, off the main thread) ended {m['startup_thread_s'] * 1e3:.0f} ms "
            "after the load returned.",
        ]
    return "\n".join(out)


def _top(text: str) -> list[str]:
    lines = text.strip().splitlines()
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return ["```", *lines[start:], "```"]


def render_profile(results: list[dict[str, Any]]) -> str:
    out = [
        "",
        "## Where the time goes (one extra checkpoint and restore per session, "
        "with phase timers; not in the table above)",
        "",
        "nbferry: `%nbferry checkpoint|restore` run through `run_line_magic` with the agent "
        "already imported; phases in worker threads are summed over threads (4 workers "
        "on 2 CPUs), so they can exceed the wall time.",
    ]
    for res in results:
        prof = res.get("profile")
        if not prof:
            continue
        for op in ("checkpoint", "restore"):
            p = prof[op]
            out += [
                "",
                f"### {res['session']} {op}: nbferry {p['total']:.3f} s in the kernel, by phase",
                "",
                "```",
            ]
            for label, secs in p["phases"].items():
                out.append(f"{secs:8.3f} s  {label}")
            for label, secs in p.get("fresh_kernel_import_s", {}).items():
                out.append(f"(import {label} in another fresh kernel: {secs:.3f} s)")
            d = prof[f"dill_{op}"]
            if op == "restore":
                out.append(
                    f"dill+zstd restore, fresh kernel: imports first {d['imports_first_s']:.3f} s, "
                    f"then dill_load {d['total']:.3f} s"
                )
            else:
                out.append(f"dill+zstd checkpoint: {d['total']:.3f} s")
            out += ["```", "", "nbferry cProfile (main thread, by own time):", ""]
            out += _top(p["cprofile_tottime"])
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sessions",
        default="100m,1g,small",
        help="comma-separated: 100m, 1g, small (= small-objs,small-vars), small-objs, small-vars",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument(
        "--ext-kernels",
        type=int,
        default=5,
        help="fresh kernels for the extension-load measurement (0: skip)",
    )
    parser.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        help="do not pre-touch memory before timed cells (see docstring)",
    )
    parser.add_argument("--no-drop-caches", dest="drop_caches", action="store_false")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time the phases of one extra checkpoint and restore",
    )
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    names: list[str] = []
    for item in args.sessions.split(","):
        item = item.strip()
        for n in ALIASES.get(item, [item]):
            if n not in SESSIONS:
                parser.error(f"unknown session {n!r}; choose from {', '.join(SESSIONS)}, small")
            if n not in names:
                names.append(n)
    os.environ.setdefault("NBFERRY_SIGNING_KEY", "nbferry-bench-agent-key")

    started = time.perf_counter()
    load_start = os.getloadavg()
    revision = code_revision()
    tmp = Path(tempfile.mkdtemp(prefix="nbferry-bench-agent-", dir=args.tmp))
    try:
        ext = None
        if args.ext_kernels:
            log(f"extension load: {args.ext_kernels} fresh kernels")
            ext = measure_ext(args.ext_kernels, tmp)
        results = [measure_session(n, args, tmp) for n in names]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [row for res in results for row in summarize(res)]
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    print(
        f"## nbferry agent vs dill.dump_session + zstd ({platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; nbferry {revision}; "
        f"warm={'on' if args.warm else 'off'}, "
        f"drop caches={'on' if args.drop_caches else 'off'}; {elapsed:.0f} s; "
        f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end)\n"
    )
    print(render(rows, ext, args.reps))
    if args.profile:
        print(render_profile(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        run = run_facts(revision, args, elapsed, load_start, load_end)
        run.update(extension=ext, sessions=results, table=rows)
        args.json.write_text(json.dumps(run, indent=1, default=str))
        log(f"wrote {args.json}")


def run_facts(revision: str, args: Any, elapsed: float, load_start: Any, load_end: Any) -> dict:
    """What a --json result records about the run itself (shared with bench_planner.py)."""
    return {
        "argv": sys.argv,
        "revision": revision,
        "platform": {
            "node": platform.node(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "warm": args.warm,
        "drop_caches": args.drop_caches,
        "elapsed_s": elapsed,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
    }


if __name__ == "__main__":
    main()
