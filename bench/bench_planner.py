"""Benchmark: the store-vs-recompute planner on six data-science notebooks, in real kernels.

    .venv/bin/python bench/bench_planner.py                         # all six notebooks, 1 rep
    .venv/bin/python bench/bench_planner.py --notebooks features,model_fit --reps 3
    .venv/bin/python bench/bench_planner.py --json bench/results/planner.json

Notebooks (bench/notebooks/*.ipynb, written by bench/notebooks/make_notebooks.py;
synthetic data from seeded generators, no network):

* load_clean: writes a 1M-row CSV into the kernel's cwd (that cell is unsafe to
  rerun), reads it back, cleans it, derives a large frame.  [large derived data]
* features: rolling statistics, calendar one-hots and a design matrix over a
  1M-row sensor log, about 1 GB of cheap derived data.     [large derived data]
* model_fit: a random forest, a logistic regression with cross-validation and
  k-means on 30,000 x 40 synthetic rows; ~20 s, small results. [compute-heavy]
* simulation: a 400 MB landscape (cheap) feeding an agent-based epidemic loop
  and a pure-Python queue simulation; small results.  [large derived, compute-heavy]
* plotting: matplotlib (Agg) figures and axes of derived market data.
* text_pipeline: synthetic documents, tokens, Counters, a vocabulary dict, a set
  of stop words, TF-IDF and a truncated SVD.

What is measured, per notebook and repetition (all in one run)
--------------------------------------------------------------
Kernels are real ipykernels (``migrator.kernels.Kernel``) with bench_agent.py's
``_nbf_bench`` helper module (warm/release, dill) plus this file's ``_nbf_plan``
(fingerprints, reports) in ``sys.modules``, never in the user namespace.
Wall times are taken in this process around one cell.

* Recording overhead: the notebook's cells run in two fresh kernels, one plain
  and one that ran ``%load_ext nbferry.agent`` first, alternating cell by cell
  (which kernel goes first alternates too, so drift on this shared 2-core VM
  hits both). Ratio = sum of the recorded kernel's cell times / the plain
  kernel's. Once per run, ``x = 1`` runs ``--trivial-cells`` (200) times in a
  plain and a recording kernel, alternating: median per-cell overhead.
* Checkpoint, in the recording kernel (the source), each method into a fresh
  empty store folder (nothing is deduplicated), order rotated per repetition:
  - planner: ``r = %nbferry checkpoint --store file://DIR --session S``;
  - store-all: the same with ``--store-all`` (every variable stored). Until the
    planner lands, ``--store-all`` is not accepted and this row is the plain
    checkpoint, which stores everything (the output says which ran);
  - dill+zstd: ``dill.dump_session`` through a zstd stream writer, fsync'd
    (bench_agent.py's baseline);
  - rerun-all: nothing (0 bytes, 0 s).
  Reported: the checkpoint cell's wall time, ``stored_bytes`` and
  ``bytes_uploaded`` (dill: the file size), ``%nbferry plan``'s prediction when
  the magic has ``plan``.
* Restore, each method in its own fresh kernel (nbferry kernels load the
  extension in an untimed cell first): the restore cell's wall time (for the
  planner it includes rerunning cells); rerun-all's restore is the plain
  kernel's run of every cell (sum of its cell times).
* Correctness: after each restore, ``nbferry.agent.fingerprint.fingerprint`` of
  every user variable (``namespace.user_variables``) in the target is compared
  with the source's. A variable counts as *equal*, *equal by value*, *reported*
  or *unreported* (a mismatch or a missing variable nobody reported). Equal by
  value: the fingerprints differ but a second, order-insensitive digest agrees
  (sets and dicts compared as sorted items; matplotlib figures and artists by a
  fresh Agg rendering of their figure): fingerprints of sets of strings depend
  on the hash seed, and a figure's pickle holds object ids, so those never match
  across kernels even when the values are equal. Reported: named in the restore
  report's ``differs``, ``lost`` or ``failed``, or skipped at checkpoint. Both
  digests of a source variable are taken after its checkpoints (rendering a
  figure changes it). Mismatches are printed with the columns, dict entries or
  attributes that differ. The second digest also ignores an array's read-only
  flag (a pickle round trip makes arrays writable, and the fingerprint of a
  read-only array differs), compares pandas objects by ``hash_pandas_object``
  plus dtypes and labels, and other objects by their attributes.

Fairness on this VM: as in bench_agent.py, the kernel touches and frees a block
before each timed cell (notebook runs: a per-notebook size; checkpoint: RSS +
256 MiB; restore: 2 x RSS + 256 MiB, at most 4 GiB), because freed memory is
handed back to the host and costs ~2-4 s/GiB to touch again. Page cache: the
libraries a notebook imports are read once in a throwaway process before its
kernels start and before each restore, so no timed kernel is the one that
reads them from disk (rerun-all and the restores see the same warm libraries);
the page cache is dropped before each checkpoint (root only), and the
checkpoint's own files are evicted (posix_fadvise) before its restore, so
restores read them from disk. ``--no-warm`` and ``--no-drop-caches`` turn
these off. Temp data (a CSV, stores, dill files) lives under --tmp and is
deleted per notebook. ``%nbferry plan`` runs once, untimed, against the
planner's empty store before the checkpoints (store speeds are probed once per
store URL and cached; the cache is a temp folder here, NBFERRY_SPEED_CACHE).

Huge pages: numpy asks for transparent huge pages (MADV_HUGEPAGE) on every
array of 4 MiB and more. This VM's balloon driver reports free 2 MiB blocks
(page_reporting_order 9) to the host, which takes their memory back, and those
are the blocks a huge-page fault takes: a cell that fills 600 MB of new arrays
runs 3x slower with numpy's default (1.0-1.5 s against 0.43-0.55 s for
simulation's landscape cell, alternating in one process), while 4 KiB pages
come from blocks the host never took. So every kernel, plain or not, source or
target, runs with NUMPY_MADVISE_HUGEPAGE=0 unless ``--numpy-hugepage``; the
cost of making large data afresh then reflects the computation, not this VM.

Targets: planner checkpoint wall time <= 0.5 x store-all on the notebooks with
large derived data; planner restore >= 10 x faster than rerun-all on the
compute-heavy ones; planner and store-all: every variable equal or reported.
Output: a markdown table per notebook and a summary, printed and written to
bench/results/planner.md (``--out``); ``--json PATH`` keeps every measurement.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agent import (
    DILL_FILE,
    H,
    code_revision,
    dir_bytes,
    load_agent,
    log,
    med,
    prepare,
    run_facts,
    start_kernel,
    timed,
)

MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "bench" / "notebooks"
SESSION = "bench-planner"
WARM_EXTRA = 256 * MIB
WARM_MAX = 4 << 30
CKPT_TARGET = 0.5  # planner checkpoint / store-all checkpoint, large derived data
RESTORE_TARGET = 10.0  # rerun-all restore / planner restore, compute-heavy
# Seconds the recorder's cell hooks have spent in the kernel (they time themselves).
HOOKS_EXPR = (
    "__import__('nbferry.agent.recorder', fromlist=['_']).recorder_of(get_ipython()).overhead"
)
METHODS = ("planner", "store-all", "dill")  # rerun-all is measured by the plain kernel
ALL_METHODS = ("planner", "store-all", "rerun-all", "dill")
LABELS = {
    "planner": "planner",
    "store-all": "store-all",
    "rerun-all": "rerun-all",
    "dill": "dill+zstd",
}

NOTEBOOKS: dict[str, dict[str, Any]] = {
    "load_clean": {"large_derived": True, "compute_heavy": False, "warm_mib": 700},
    "features": {"large_derived": True, "compute_heavy": False, "warm_mib": 1300},
    "model_fit": {"large_derived": False, "compute_heavy": True, "warm_mib": 300},
    "simulation": {"large_derived": True, "compute_heavy": True, "warm_mib": 800},
    "plotting": {"large_derived": False, "compute_heavy": False, "warm_mib": 500},
    "text_pipeline": {"large_derived": False, "compute_heavy": False, "warm_mib": 600},
}

# Installed as module _nbf_plan in every kernel (never in the user namespace).
PLAN_HELPER = r'''
import hashlib, math, sys, time, types

RENDERED = {}


def _shell():
    from IPython import get_ipython
    return get_ipython()


def user_vars():
    from nbferry.agent.namespace import user_variables
    sh = _shell()
    return user_variables(sh.user_ns, getattr(sh, "user_ns_hidden", None))


def type_name(v):
    c = type(v)
    m = getattr(c, "__module__", "")
    return c.__qualname__ if m in ("builtins", "__main__") else f"{m}.{c.__qualname__}"


def _fp(v):
    from nbferry.agent.fingerprint import fingerprint
    if isinstance(v, types.ModuleType):
        return "module:" + v.__name__
    return fingerprint(v, sets=True).hex()


def fingerprints():
    """{name: {type, fp}} of every user variable; fp None (and error) when it fails."""
    t = time.perf_counter()
    out = {}
    for name, v in user_vars().items():
        row = {"type": type_name(v)}
        try:
            row["fp"] = _fp(v)
        except Exception as exc:
            row["fp"] = None
            row["error"] = f"{type(exc).__name__}: {exc}"[:200]
        out[name] = row
    return {"vars": out, "seconds": time.perf_counter() - t}


def _render(fig):
    """SHA-1 of a fresh Agg rendering of a figure (replaces its canvas)."""
    if id(fig) not in RENDERED:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        RENDERED[id(fig)] = hashlib.sha1(bytes(canvas.buffer_rgba())).hexdigest()
    return RENDERED[id(fig)]


_SCALARS = (str, bytes, int, float, complex, bool, type(None))


def _digest(text):
    return hashlib.sha1(text.encode()).hexdigest()


def _sem(v, depth=0):
    """A value digest that ignores what pickles but does not matter for equality:
    set and dict order, array flags and layout (read-only, strides), object ids
    inside figures (drawn instead). Objects are compared by their attributes."""
    if isinstance(v, _SCALARS):
        return type(v).__name__ + ":" + repr(v)
    if depth > 40:
        return "too-deep:" + type_name(v)
    if "matplotlib.figure" in sys.modules:
        from matplotlib.artist import Artist
        from matplotlib.figure import Figure
        if isinstance(v, Figure):
            return "figure:" + _render(v)
        if isinstance(v, Artist):
            fig = getattr(v, "figure", None)
            if fig is None or not isinstance(fig, Figure):
                return "artist:" + type_name(v)
            fig = fig.get_figure(root=True) if hasattr(fig, "get_figure") else fig
            where = fig.axes.index(v) if v in fig.axes else -1
            return f"{type_name(v)}@{_render(fig)}#{where}"
    if isinstance(v, (set, frozenset)):
        items = sorted(_sem(x, depth + 1) for x in v)
        return type_name(v) + "{" + ",".join(items) + "}"
    if isinstance(v, dict):
        items = sorted(_sem(k, depth + 1) + ":" + _sem(x, depth + 1) for k, x in v.items())
        return type_name(v) + "{" + ",".join(items) + "}"
    if isinstance(v, (list, tuple)):
        return type_name(v) + "[" + ",".join(_sem(x, depth + 1) for x in v) + "]"
    np = sys.modules.get("numpy")
    if np is not None and isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            return f"ndarray{v.shape}[" + ",".join(_sem(x, depth + 1) for x in v.ravel()) + "]"
        import blake3
        data = np.ascontiguousarray(v).reshape(-1).view(np.uint8)
        h = blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
        return f"ndarray{v.dtype.str}{v.shape}:{h}"
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(v, (pd.DataFrame, pd.Series, pd.Index)):
        try:
            hashes = pd.util.hash_pandas_object(v, index=not isinstance(v, pd.Index))
            meta = [type_name(v), v.shape, str(v.dtypes if hasattr(v, "dtypes") else v.dtype)]
            if isinstance(v, pd.DataFrame):
                meta += [list(v.columns), list(v.index.names), str(v.index.dtype)]
            elif isinstance(v, pd.Series):
                meta += [v.name, list(v.index.names), str(v.index.dtype)]
            else:
                meta.append(list(v.names))
            return repr(meta) + _sem(hashes.to_numpy(), depth + 1)
        except Exception:
            pass
    if (
        hasattr(v, "__dict__")
        and not isinstance(v, (type, types.FunctionType, types.ModuleType))
        and type(v).__module__ != "builtins"
        and vars(v)
    ):
        return type_name(v) + "(" + _sem(vars(v), depth + 1) + ")"
    try:
        return _fp(v)
    except Exception as exc:
        return "error:" + type(exc).__name__


def semantic(names):
    """{name: value digest (see _sem)}; None for a name that is not there."""
    ns = user_vars()
    out = {}
    for name in names:
        if name not in ns:
            out[name] = None
            continue
        try:
            out[name] = _digest(_sem(ns[name]))
        except Exception as exc:
            out[name] = "error:" + type(exc).__name__
    return out


def parts(names):
    """{name: {part: digest}}: columns, dict entries or attributes, to say what differs."""
    ns = user_vars()
    pd = sys.modules.get("pandas")
    out = {}
    for name in names:
        v = ns.get(name)
        d = {}
        try:
            if pd is not None and isinstance(v, pd.DataFrame):
                d["index"] = _digest(_sem(v.index))
                d["columns"] = repr(list(v.columns))
                for i, col in enumerate(v.columns):
                    d[f"[{col!r}]"] = _digest(_sem(v.iloc[:, i]))
            elif isinstance(v, dict):
                d["keys in order"] = _digest(repr(list(v)[:100000]))
                for k in list(v)[:2000]:
                    d[f"[{k!r}]"] = _digest(_sem(v[k]))
            elif hasattr(v, "__dict__") and not isinstance(v, (type, types.ModuleType)):
                for k, x in vars(v).items():
                    d["." + k] = _digest(_sem(x))
            else:
                d["value"] = _digest(_sem(v))
        except Exception as exc:
            d["error"] = type(exc).__name__
        out[name] = d
    return out


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * __import__("os").sysconf("SC_PAGE_SIZE")


def capabilities():
    """Which planner options this kernel's %nbferry accepts."""
    from nbferry.agent import magics
    argvs = {
        "store_all": ["checkpoint", "--store-all"],
        "plan": ["plan"],
    }
    out = {}
    try:
        parser = magics._parser()
        for key, argv in argvs.items():
            try:
                parser.parse_args(argv)
                out[key] = True
            except (ValueError, SystemExit):
                out[key] = False
    except Exception:  # parser reorganised: look at the source
        import inspect
        src = inspect.getsource(magics)
        out = {"store_all": "--store-all" in src, "plan": '"plan"' in src}
    return out


def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    try:
        f = float(v)
        return f if math.isfinite(f) else str(f)
    except Exception:
        return str(v)


def report(name):
    """A magic's report (a dict in the user namespace) as JSON-able data."""
    return jsonable(dict(_shell().user_ns[name]))
'''

PLAN_INSTALL = (
    f"exec({PLAN_HELPER!r}, __import__('sys').modules.setdefault('_nbf_plan', "
    "__import__('types').ModuleType('_nbf_plan')).__dict__)"
)
P = "__import__('_nbf_plan')"


def kernel(cwd: Path) -> Any:
    cwd.mkdir(parents=True, exist_ok=True)
    k = start_kernel(cwd)  # with bench_agent's _nbf_bench
    k.run(PLAN_INSTALL, store_history=False)
    return k


def names_of(items: Any) -> set[str]:
    """Names from a report list: plain names or dicts with a 'name' key."""
    out = set()
    for item in items or []:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict) and "name" in item:
            out.add(item["name"])
    return out


def warm_sizes(rss: int, args: argparse.Namespace) -> tuple[int, int]:
    if not args.warm:
        return 0, 0
    return rss + WARM_EXTRA, min(2 * rss + WARM_EXTRA, WARM_MAX)


# -- correctness -------------------------------------------------------------------


def compare(
    src: Any, dst: Any, src_fp: dict[str, Any], dst_fp: dict[str, Any], reported: set[str]
) -> dict[str, Any]:
    """Classify every source variable as equal, equal by value, reported or unreported."""
    equal, by_value, rep, bad = [], [], [], []
    differ = []  # compared by the second digest: fingerprints differ, or one has none
    for name, row in src_fp.items():
        got = dst_fp.get(name)
        if got is None:
            if name in reported:
                rep.append(name)
            else:
                bad.append({"name": name, "type": row["type"], "why": "missing in the target"})
        elif row["fp"] is not None and got["fp"] == row["fp"]:
            equal.append(name)
        else:
            # No fingerprint (matplotlib objects are Unstable by design) or a
            # different one: only the value digest can tell equal from not.
            differ.append(name)
    if differ:
        a = src.value(f"{P}.semantic({differ!r})", timeout=600)
        b = dst.value(f"{P}.semantic({differ!r})", timeout=600)
        for name in differ:
            if a[name] is not None and a[name] == b[name] and not a[name].startswith("error:"):
                by_value.append(name)
            elif name in reported:
                rep.append(name)
            else:
                bad.append({"name": name, "type": src_fp[name]["type"], "why": ""})
        wrong = [b["name"] for b in bad if not b["why"]]
        if wrong:
            pa = src.value(f"{P}.parts({wrong!r})", timeout=600)
            pb = dst.value(f"{P}.parts({wrong!r})", timeout=600)
            for item in bad:
                if item["why"]:
                    continue
                name = item["name"]
                diff = [k for k in pa[name] if pa[name][k] != pb[name].get(k)]
                diff += [k for k in pb[name] if k not in pa[name]]
                item["why"] = f"differs (target type {dst_fp[name]['type']}); in: " + (
                    ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
                    if diff
                    else "no part found"
                )
    return {
        "variables": len(src_fp),
        "equal": equal,
        "equal_by_value": by_value,
        "reported": rep,
        "unreported": bad,
        "extra_in_target": sorted(set(dst_fp) - set(src_fp)),
    }


# -- measurements ------------------------------------------------------------------


def measure_trivial(n: int, tmp: Path) -> dict[str, Any]:
    """Per-cell cost of recording: `x = 1` alternately in a plain and a recording kernel."""
    plain_dir, rec_dir = tmp / "trivial-plain", tmp / "trivial-rec"
    with kernel(plain_dir) as kp, kernel(rec_dir) as kr:
        kr.run("%load_ext nbferry.agent")
        for _ in range(10):
            kp.run("x = 1")
            kr.run("x = 1")
        plain: list[float] = []
        rec: list[float] = []
        for i in range(n):
            for k in (kp, kr) if i % 2 == 0 else (kr, kp):
                wall, _ = timed(k, "x = 1")
                (plain if k is kp else rec).append(wall)
    shutil.rmtree(plain_dir, ignore_errors=True)
    shutil.rmtree(rec_dir, ignore_errors=True)
    pairs = sorted(r - p for p, r in zip(plain, rec, strict=True))
    return {
        "cells": n,
        "plain_ms": med(plain) * 1e3,
        "recorded_ms": med(rec) * 1e3,
        "overhead_ms": (med(rec) - med(plain)) * 1e3,
        "paired_overhead_ms": med(pairs) * 1e3,
        "recorded_p90_ms": sorted(rec)[int(0.9 * (len(rec) - 1))] * 1e3,
        "recorded_last20_ms": med(rec[-20:]) * 1e3,
    }


def warm_imports(cells: list[str]) -> None:
    """Import what the notebook imports in a throwaway process, so that neither timed
    kernel is the one that reads the libraries from disk after a cache drop."""
    lines = ["import nbferry.agent.capture, nbferry.agent.restore, nbferry.storage"]
    for cell in cells:
        try:
            tree = ast.parse(cell)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                lines.append(ast.unparse(node))
    subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, check=False)


def run_cells(ka: Any, kb: Any, cells: list[str], shift: int) -> tuple[list[float], list[float]]:
    """Every cell in the plain kernel ka and the recording kernel kb, alternating which
    goes first (from cell to cell, and by `shift` from notebook to notebook)."""
    plain = [0.0] * len(cells)
    rec = [0.0] * len(cells)
    for i, cell in enumerate(cells):
        for k in (ka, kb) if (i + shift) % 2 == 0 else (kb, ka):
            wall, _ = timed(k, cell, timeout=900)
            (plain if k is ka else rec)[i] = wall
        log(f"    cell {i + 1}/{len(cells)}: plain {plain[i]:.2f} s, recorded {rec[i]:.2f} s")
    return plain, rec


def checkpoint(
    kb: Any, method: str, store: Path, caps: dict[str, bool], planner_flags: str = ""
) -> dict[str, Any]:
    store.mkdir(parents=True, exist_ok=True)  # `%nbferry plan` may have probed it
    url = f"file://{store}"
    if method == "dill":
        path = store / DILL_FILE
        wall, _ = timed(kb, f"{H}.dill_save({str(path)!r})", timeout=900)
        size = path.stat().st_size
        return {
            "wall_s": wall,
            "inner_s": kb.value(f"{H}.LAST"),
            "stored_bytes": size,
            "bytes_uploaded": size,
            "disk_bytes": size,
            "path": str(path),
        }
    flag = " --store-all" if method == "store-all" and caps["store_all"] else ""
    if method == "planner" and planner_flags:
        flag = " " + planner_flags
    wall, _ = timed(kb, f"r = %nbferry checkpoint{flag} --store {url} --session {SESSION}", 900)
    r = kb.value(f"{P}.report('r')")
    kb.run("del r", store_history=False)
    return {
        "wall_s": wall,
        "inner_s": r.get("seconds"),
        "command": f"checkpoint{flag}",
        "checkpoint_id": r["checkpoint_id"],
        "url": url,
        "dir": store,
        "raw_bytes": r.get("raw_bytes", 0),
        "stored_bytes": r.get("stored_bytes", 0),
        "bytes_uploaded": r.get("bytes_uploaded", 0),
        "disk_bytes": dir_bytes(store),
        "stored": sorted(names_of(r.get("stored"))),
        "recomputed": sorted(names_of(r.get("recomputed"))),
        "rerun_cells": r.get("rerun_cells", []),
        "skipped": sorted(names_of(r.get("skipped"))),
        "infeasible": r.get("infeasible", {}),
    }


def evict(path: Path) -> bool:
    """Drop one folder's files from the page cache (they are fsync'd by their writers)."""
    done = False
    for f in path.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                done = True
            finally:
                os.close(fd)
    return done


def restore(
    method: str,
    ckpt: dict[str, Any],
    dst_dir: Path,
    warm_rest: int,
    cells: list[str],
    args: argparse.Namespace,
) -> tuple[Any, dict[str, Any]]:
    """Restore into a fresh kernel; returns the (still running) kernel and the timings.

    Libraries are in the page cache (as for the rerun-all run, which is the plain
    kernel's), the checkpoint's files are not."""
    kd = kernel(dst_dir)
    try:
        if method != "dill":
            load_agent(kd)
        evicted = False
        if args.drop_caches:
            warm_imports(cells)
            evicted = evict(Path(ckpt["path"]).parent if method == "dill" else ckpt["dir"])
        prep = {**prepare(kd, warm_rest, False), "store_evicted": evicted}
        if method == "dill":
            wall, _ = timed(kd, f"{H}.dill_load({ckpt['path']!r})", timeout=900)
            return kd, {"wall_s": wall, "inner_s": kd.value(f"{H}.LAST"), **prep}
        wall, _ = timed(kd, f"r = %nbferry restore {ckpt['checkpoint_id']} --store {ckpt['url']}")
        r = kd.value(f"{P}.report('r')")
        kd.run("del r", store_history=False)
        return kd, {
            "wall_s": wall,
            "inner_s": r.get("seconds"),
            "loaded": sorted(names_of(r.get("loaded"))),
            "recomputed": sorted(names_of(r.get("recomputed"))),
            "differs": sorted(names_of(r.get("differs"))),
            "lost": sorted(names_of(r.get("lost"))),
            "failed": r.get("failed", []),
            "skipped_at_checkpoint": sorted(names_of(r.get("skipped_at_checkpoint"))),
            "warnings": r.get("warnings", []),
            **prep,
        }
    except BaseException:
        kd.shutdown()
        raise


def measure_rep(
    name: str, rep: int, shift: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    spec = NOTEBOOKS[name]
    from nbferry.migrator.kernels import notebook_cells

    cells = notebook_cells(NB_DIR / f"{name}.ipynb")
    base = tmp / f"{name}-{rep}"
    out: dict[str, Any] = {"rep": rep}
    log(f"  rep {rep + 1}: {len(cells)} cells, plain and recording kernels alternating")
    if args.drop_caches:
        warm_imports(cells)
    ka = kernel(base / "plain")
    kb = None
    try:
        kb = kernel(base / "source")
        load_agent(kb)
        caps = kb.value(f"{P}.capabilities()")
        out["capabilities"] = caps
        if args.warm:
            for k in (ka, kb):
                prepare(k, spec["warm_mib"] * MIB, drop=False)
        hooks_before = kb.value(HOOKS_EXPR)
        plain, rec = run_cells(ka, kb, cells, shift + rep)
        out["cells_plain_s"], out["cells_recorded_s"] = plain, rec
        out["hooks_s"] = kb.value(HOOKS_EXPR) - hooks_before
        fp_src = kb.value(f"{P}.fingerprints()", timeout=900)
        fp_plain = ka.value(f"{P}.fingerprints()", timeout=900)
        out["fingerprint_s"] = fp_src["seconds"]
        out["source_vars"] = {n: row["type"] for n, row in fp_src["vars"].items()}
        rss = kb.value(f"{P}.rss()")
        out["source_rss"] = rss
        warm_ckpt, warm_rest = warm_sizes(rss, args)

        if caps["plan"]:
            # Against the planner's (still empty) store: a store's speed is probed once
            # and cached, so the timed checkpoint sees it as on any later checkpoint.
            store = base / "store-planner"
            store.mkdir(parents=True)
            line = f"p = %nbferry plan --store file://{store} --session {SESSION}"
            line += f" {args.planner_flags}" if args.planner_flags else ""
            wall, _ = timed(kb, line, timeout=900)
            out["plan"] = {"wall_s": wall, **kb.value(f"{P}.report('p')")}
            kb.run("del p", store_history=False)

        ckpts: dict[str, dict[str, Any]] = {}
        order = METHODS[rep % len(METHODS) :] + METHODS[: rep % len(METHODS)]
        for method in order:
            prep = prepare(kb, warm_ckpt, args.drop_caches)
            ckpts[method] = {
                **checkpoint(kb, method, base / f"store-{method}", caps, args.planner_flags),
                **prep,
            }
            c = ckpts[method]
            log(
                f"    checkpoint {LABELS[method]}: {c['wall_s']:.2f} s, "
                f"{c['stored_bytes'] / MIB:.1f} MiB stored"
                + (f", recompute {c['recomputed']}" if c.get("recomputed") else "")
            )
        out["checkpoint"] = ckpts

        # rerun-all: the plain kernel ran every cell; compare it now (digests after checkpoints).
        restores: dict[str, dict[str, Any]] = {
            "rerun-all": {
                "wall_s": sum(plain),
                "check": compare(kb, ka, fp_src["vars"], fp_plain["vars"], set()),
            }
        }
        ka.shutdown()
        ka = None
        for method in order:
            ck = ckpts[method]
            dst_dir = base / f"target-{method}"
            kd, res = restore(method, ck, dst_dir, warm_rest, cells, args)
            try:
                fp_dst = kd.value(f"{P}.fingerprints()", timeout=900)
                reported = (
                    set(res.get("differs", []))
                    | set(res.get("lost", []))
                    | names_of(res.get("failed"))
                    | set(res.get("skipped_at_checkpoint", []))
                    | set(ck.get("skipped", []))
                )
                res["check"] = compare(kb, kd, fp_src["vars"], fp_dst["vars"], reported)
            finally:
                kd.shutdown()
            shutil.rmtree(dst_dir, ignore_errors=True)
            restores[method] = res
            chk = res["check"]
            log(
                f"    restore {LABELS[method]}: {res['wall_s']:.2f} s; "
                f"{len(chk['equal'])} equal, {len(chk['equal_by_value'])} equal by value, "
                f"{len(chk['reported'])} reported, {len(chk['unreported'])} unreported"
            )
        out["restore"] = restores
    finally:
        for k in (ka, kb):
            if k is not None:
                k.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    return out


def measure_notebook(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log(f"notebook {name}")
    t = time.perf_counter()
    shift = list(NOTEBOOKS).index(name)
    reps = [measure_rep(name, rep, shift, args, tmp) for rep in range(args.reps)]
    return {"notebook": name, "spec": NOTEBOOKS[name], "reps": reps, "s": time.perf_counter() - t}


# -- report ------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


def fmt_s(values: list[float]) -> str:
    if not any(values):
        return "0"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{med(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Medians over repetitions per method, and the worst correctness seen."""
    reps = res["reps"]
    rows = {}
    for method in ALL_METHODS:
        if method == "rerun-all":
            ck_s = [0.0 for _ in reps]
            stored = uploaded = 0.0
        else:
            ck_s = [r["checkpoint"][method]["wall_s"] for r in reps]
            stored = med([r["checkpoint"][method]["stored_bytes"] for r in reps])
            uploaded = med([r["checkpoint"][method]["bytes_uploaded"] for r in reps])
        rest = [r["restore"][method] for r in reps]
        checks = [x["check"] for x in rest]
        worst = max(checks, key=lambda c: (len(c["unreported"]), len(c["reported"])))
        rows[method] = {
            "checkpoint_s": ck_s,
            "stored_bytes": stored,
            "bytes_uploaded": uploaded,
            "restore_s": [x["wall_s"] for x in rest],
            "check": worst,
        }
    plain = med([sum(r["cells_plain_s"]) for r in reps])
    recorded = med([sum(r["cells_recorded_s"]) for r in reps])
    spec = res["spec"]
    planner, store_all = rows["planner"], rows["store-all"]
    ck_ratio = med(planner["checkpoint_s"]) / med(store_all["checkpoint_s"])
    bytes_ratio = (
        planner["stored_bytes"] / store_all["stored_bytes"] if store_all["stored_bytes"] else 0.0
    )
    rest_ratio = med(rows["rerun-all"]["restore_s"]) / med(planner["restore_s"])
    correct = all(not rows[m]["check"]["unreported"] for m in ("planner", "store-all"))
    return {
        "notebook": res["notebook"],
        "spec": spec,
        "rows": rows,
        "plain_s": plain,
        "recorded_s": recorded,
        "recording_ratio": recorded / plain,
        # The hooks' own time over the cells' time without it: not subject to the
        # two kernels' different speeds, which dominate the ratio above on this VM.
        "hooks_overhead": med(
            [r["hooks_s"] / (sum(r["cells_recorded_s"]) - r["hooks_s"]) for r in reps]
        ),
        "checkpoint_ratio": ck_ratio,
        "bytes_ratio": bytes_ratio,
        "restore_speedup": rest_ratio,
        "checkpoint_pass": ck_ratio <= CKPT_TARGET if spec["large_derived"] else None,
        "restore_pass": rest_ratio >= RESTORE_TARGET if spec["compute_heavy"] else None,
        "correct": correct,
        "store_all_flag": all(r["capabilities"]["store_all"] for r in res["reps"]),
    }


def render_notebook(res: dict[str, Any], s: dict[str, Any]) -> str:
    reps = res["reps"]
    first = reps[0]
    kinds = [k for k in ("large_derived", "compute_heavy") if s["spec"][k]]
    out = [
        f"### {res['notebook']} ({', '.join(k.replace('_', ' ') for k in kinds) or 'mixed'}; "
        f"{len(first['source_vars'])} variables, source RSS {fmt_bytes(first['source_rss'])})",
        "",
        "| method | checkpoint s | stored | uploaded | restore s | equal | equal by value "
        "| reported | unreported |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in ALL_METHODS:
        r = s["rows"][method]
        c = r["check"]
        label = LABELS[method]
        if method == "store-all" and not s["store_all_flag"]:
            label += " (plain checkpoint: no --store-all yet)"
        out.append(
            f"| {label} | {fmt_s(r['checkpoint_s'])} | {fmt_bytes(r['stored_bytes'])} "
            f"| {fmt_bytes(r['bytes_uploaded'])} | {fmt_s(r['restore_s'])} "
            f"| {len(c['equal'])}/{c['variables']} | {len(c['equal_by_value'])} "
            f"| {len(c['reported'])} | {len(c['unreported'])} |"
        )
    out.append("")
    plain = [sum(r["cells_plain_s"]) for r in reps]
    recd = [sum(r["cells_recorded_s"]) for r in reps]
    out.append(
        f"Recording: cells {fmt_s(plain)} s plain, {fmt_s(recd)} s recorded "
        f"({s['recording_ratio']:.2f}x); the recorder's hooks timed themselves at "
        f"{s['hooks_overhead']:.1%} of the cells' time. Per cell (plain / recorded s, rep 1): "
        + ", ".join(
            f"{i + 1}: {a:.2f}/{b:.2f}"
            for i, (a, b) in enumerate(
                zip(first["cells_plain_s"], first["cells_recorded_s"], strict=True)
            )
        )
        + "."
    )
    for rep in reps:
        tag = f"rep {rep['rep'] + 1}"
        ck = rep["checkpoint"]["planner"]
        if ck.get("recomputed") or ck.get("rerun_cells"):
            out.append(
                f"Planner ({tag}): recompute {', '.join(ck['recomputed']) or '-'}; "
                f"rerun cells {ck['rerun_cells']}; store {', '.join(ck['stored']) or '-'}."
            )
        else:
            out.append(f"Planner ({tag}): stored everything ({len(ck['stored'])} variables).")
        if ck.get("infeasible"):
            out.append(f"Infeasible ({tag}): {ck['infeasible']}.")
        plan = rep.get("plan")
        if plan:
            out.append(
                f"`%nbferry plan` ({tag}, {plan['wall_s']:.2f} s): predicted checkpoint "
                f"{plan.get('predicted_checkpoint_seconds')} s (measured "
                f"{ck['wall_s']:.2f}), restore {plan.get('predicted_restore_seconds')} s "
                f"(measured {rep['restore']['planner']['wall_s']:.2f})."
            )
        pr = rep["restore"]["planner"]
        if pr.get("recomputed") or pr.get("differs") or pr.get("lost") or pr.get("failed"):
            out.append(
                f"Planner restore report ({tag}): recomputed {pr.get('recomputed')}, "
                f"differs {pr.get('differs')}, lost {pr.get('lost')}, failed {pr.get('failed')}."
            )
    for method in ALL_METHODS:
        c = s["rows"][method]["check"]
        if c["equal_by_value"]:
            out.append(
                f"{LABELS[method]}: equal by value only (fingerprints differ, or matplotlib "
                f"objects have none): "
                f"{', '.join(c['equal_by_value'])}."
            )
        if c["reported"]:
            out.append(f"{LABELS[method]}: reported: {', '.join(c['reported'])}.")
        for bad in c["unreported"]:
            out.append(
                f"**{LABELS[method]}: MISMATCH {bad['name']} ({bad['type']}): {bad['why']}**"
            )
    return "\n".join(out)


def render_summary(summaries: list[dict[str, Any]], trivial: dict[str, Any] | None) -> str:
    out = [
        "| notebook | planner / store-all checkpoint s (bytes) | target | "
        "rerun-all / planner restore s | target | recording overhead (A/B) | hooks' own time "
        "| all equal or reported |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for s in summaries:
        ck = "PASS" if s["checkpoint_pass"] else "FAIL"
        if s["checkpoint_pass"] is None:
            ck = "-"
        rs = "PASS" if s["restore_pass"] else "FAIL"
        if s["restore_pass"] is None:
            rs = "-"
        ok = "yes" if s["correct"] else "NO"
        out.append(
            f"| {s['notebook']} | {s['checkpoint_ratio']:.2f}x ({s['bytes_ratio']:.2f}x) "
            f"| {'<= 0.5x: ' + ck if ck != '-' else '-'} | {s['restore_speedup']:.1f}x "
            f"| {'>= 10x: ' + rs if rs != '-' else '-'} | {s['recording_ratio']:.2f}x "
            f"| {s['hooks_overhead']:.1%} | {ok} |"
        )
        verdicts += [v for v in (s["checkpoint_pass"], s["restore_pass"]) if v is not None]
        verdicts.append(s["correct"])
    out.append("")
    if trivial:
        out.append(
            f"Trivial cell `x = 1`, {trivial['cells']} runs per kernel, alternating: "
            f"{trivial['plain_ms']:.2f} ms plain, {trivial['recorded_ms']:.2f} ms recorded "
            f"(median); overhead {trivial['overhead_ms']:.2f} ms per cell (paired median "
            f"{trivial['paired_overhead_ms']:.2f} ms; recorded p90 "
            f"{trivial['recorded_p90_ms']:.2f} ms, last 20 {trivial['recorded_last20_ms']:.2f} ms)."
        )
    if not all(s["store_all_flag"] for s in summaries):
        out.append(
            "NOTE: this agent has no `--store-all` yet: the store-all rows are the plain "
            "checkpoint, so the checkpoint targets compare a checkpoint with itself."
        )
    out.append(f"Targets: {'ALL PASS' if all(verdicts) else 'SOME FAIL'}.")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", default=",".join(NOTEBOOKS), help="comma-separated")
    parser.add_argument("--reps", type=int, default=1, help="repetitions (medians)")
    parser.add_argument("--trivial-cells", type=int, default=200, help="0: skip")
    parser.add_argument("--json", type=Path, help="write all measurements here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "planner.md")
    parser.add_argument("--no-warm", dest="warm", action="store_false")
    parser.add_argument("--no-drop-caches", dest="drop_caches", action="store_false")
    parser.add_argument(
        "--numpy-hugepage",
        action="store_true",
        help="keep numpy's MADV_HUGEPAGE on big arrays (default: NUMPY_MADVISE_HUGEPAGE=0)",
    )
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--planner-flags",
        default="",
        help="extra options for the planner's checkpoint and plan, e.g. '--restore-weight 0.1'",
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.notebooks.split(",") if n.strip()]
    for n in names:
        if n not in NOTEBOOKS:
            parser.error(f"unknown notebook {n!r}; choose from {', '.join(NOTEBOOKS)}")
    os.environ.setdefault("NBFERRY_SIGNING_KEY", "nbferry-bench-planner-key")
    if not args.numpy_hugepage:
        # Every kernel inherits this (see "Huge pages" in the docstring).
        os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"

    started = time.perf_counter()
    load_start = os.getloadavg()
    revision = code_revision()
    tmp = Path(tempfile.mkdtemp(prefix="nbferry-bench-planner-", dir=args.tmp))
    # Store speeds are cached per store URL; these stores are temporary, keep them apart.
    os.environ["NBFERRY_SPEED_CACHE"] = str(tmp / "speed-cache")
    try:
        trivial = None
        if args.trivial_cells:
            log(f"trivial cell: {args.trivial_cells} x `x = 1` per kernel")
            trivial = measure_trivial(args.trivial_cells, tmp)
        results = [measure_notebook(n, args, tmp) for n in names]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summaries = [summarize(r) for r in results]
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    text = "\n".join(
        [
            f"## nbferry planner: checkpoint and restore of six notebooks ({platform.node()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}; nbferry {revision}; "
            f"{args.reps} rep(s), medians; warm={'on' if args.warm else 'off'}, "
            f"drop caches={'on' if args.drop_caches else 'off'}; "
            f"numpy huge pages={'on' if args.numpy_hugepage else 'off'}; "
            + (f"planner flags `{args.planner_flags}`; " if args.planner_flags else "")
            + f"{elapsed:.0f} s; "
            f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end)",
            "",
            "Checkpoint and restore: wall time of the cell, from this process; stored = "
            "stored_bytes (dill: file size), uploaded = bytes_uploaded; rerun-all restore = "
            "every cell in a fresh kernel. Equal = same fingerprint in source and target.",
            "",
            "### Summary",
            "",
            render_summary(summaries, trivial),
            "",
            *(render_notebook(r, s) + "\n" for r, s in zip(results, summaries, strict=True)),
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    log(f"wrote {args.out}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        run = run_facts(revision, args, elapsed, load_start, load_end)
        run.update(trivial=trivial, notebooks=results, summary=summaries)
        args.json.write_text(json.dumps(run, indent=1, default=str))
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
