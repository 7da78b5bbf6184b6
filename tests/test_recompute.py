"""Minimal state sets end to end, in real kernels: record, plan, store part, rerun the rest, verify.

Each test runs a session in a source kernel with the agent loaded first (so
every cell is recorded), checkpoints it to a local store, and restores it
into a fresh kernel in another directory, like a second host would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbferry.migrator.kernels import Kernel, KernelError
from nbferry.storage import open_store
from nbferry.storage.store import _location

ENV = {"PYTHONHASHSEED": "0"}


def code(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, str]:
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    return a, b, (tmp_path / "store").as_uri()


@pytest.fixture
def source(dirs: tuple[Path, Path, str]) -> Iterator[Kernel]:
    with Kernel(dirs[0], ENV) as k:
        k.run("%load_ext nbferry.agent")
        yield k


def checkpoint(k: Kernel, store: str, flags: str = "", session: str = "t") -> dict:
    k.run(f"nbf_r = %nbferry checkpoint --store {store} --session {session} {flags}")
    return k.value("{**nbf_r}")


def plan_of(k: Kernel) -> dict:
    k.run("nbf_p = %nbferry plan")
    return k.value("{**nbf_p}")


def restore(cwd: Path, store: str, checks: str) -> tuple[dict, object]:
    """Restore the latest checkpoint in a fresh kernel; return the report and `checks` there."""
    with Kernel(cwd, ENV) as k:
        k.run(f"%load_ext nbferry.agent\nnbf_r = %nbferry restore --store {store} --session t")
        return k.value("{**nbf_r}"), k.value(checks)


def cells(k: Kernel) -> list[dict]:
    return k.value(
        "[{'n': c.execution_count, 'reads': list(c.reads), 'writes': list(c.writes),"
        " 'mutated': list(c.mutated), 'unsafe': c.unsafe,"
        " 'effects': [(e.kind, e.target) for e in c.side_effects]}"
        " for c in get_ipython()._nbferry_recorder.cells]"
    )


def test_big_cheap_array_is_recomputed_and_slow_small_result_stored(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    source.run("import numpy as np")
    source.run("big = np.zeros((20000, 5000))")  # 800 MB, made in milliseconds
    source.run(
        code("""
        total = 0
        for i in range(4_000_000):
            total += i % 7
        """)
    )
    source.run("def countdown(n):\n    yield from range(n, 0, -1)")
    source.run("gen = countdown(5)")
    source.run("big[0, 0] = total % 1000")  # an in-place edit: big now depends on total too
    plan = plan_of(source)
    assert {"store", "recompute", "rerun_cells", "infeasible"} <= plan.keys()
    assert plan["predicted_checkpoint_seconds"] >= 0 and plan["predicted_restore_seconds"] > 0
    assert "big" in plan["recompute"] and "gen" in plan["recompute"]
    assert "total" in plan["store"] and plan["infeasible"] == {}

    ck = checkpoint(source, store)
    assert sorted(ck["recomputed"]) == ["big", "gen"]
    assert {v["name"] for v in ck["stored"]} >= {"total", "countdown"}
    assert ck["stored_bytes"] < 1 << 20  # the 800 MB array never went to the store
    # The loop cell (In[4]) is not rerun: its result was stored.
    rerun = ck["rerun_cells"]
    assert 3 in rerun and 7 in rerun and 4 not in rerun

    report, got = restore(
        b, store, "[big.shape, float(big[0, 0]), float(big.sum()), total, next(gen)]"
    )
    assert sorted(report["recomputed"]) == ["big", "gen"]
    assert report["differs"] == [] and report["lost"] == [] and report["failed"] == []
    assert "total" in report["loaded"]
    total = source.value("total")
    assert got == [[20000, 5000], total % 1000, total % 1000, total, 5]


def test_recorder_sees_in_place_edits(source: Kernel) -> None:
    source.run("import numpy as np, pandas as pd")
    source.run("xs = [1, 2]\nd = {'a': 1}\narr = np.arange(6)\ndf = pd.DataFrame({'a': [1, 2]})")
    source.run("xs.append(3)")
    source.run("d['b'] = 2")
    source.run("arr[2] = 99")
    source.run("df.loc[0, 'a'] = 5")
    source.run("df['c'] = df['a'] * 2")
    source.run("np.add(arr, 1, out=arr)")
    source.run("n = len(xs) + len(d) + int(arr.sum()) + int(df['a'].sum())")  # reads, no edits
    source.run("def push(v):\n    xs.append(v)")
    source.run("push(4)")  # an edit through a notebook function
    source.run("s = df.describe()")  # a method call that changes nothing
    got = {c["n"]: c for c in cells(source)}
    assert got[4]["mutated"] == ["xs"] and got[4]["reads"] == ["xs"]
    assert got[5]["mutated"] == ["d"]
    assert got[6]["mutated"] == ["arr"]
    assert got[7]["mutated"] == ["df"]
    assert got[8]["mutated"] == ["df"]
    assert got[9]["mutated"] == ["arr"] and "np" in got[9]["reads"]
    assert got[10]["mutated"] == [] and got[10]["writes"] == ["n"]
    assert set(got[10]["reads"]) == {"xs", "d", "arr", "df"}
    assert got[12]["mutated"] == ["xs"] and set(got[12]["reads"]) == {"push", "xs"}
    assert got[13]["mutated"] == [] and got[13]["writes"] == ["s"]
    # None of it mutated the user's objects or made them read-only.
    assert source.value("[bool(arr.flags.writeable), bool(df.loc[1, 'a'] == 2)]") == [True, True]


def test_recorder_judges_loops_over_a_list_of_lists_by_what_they_do(source: Kernel) -> None:
    """Reading elements is not an edit (and is not fingerprinted); changing one
    through the loop variable is."""
    source.run("from collections import Counter")
    source.run("tokens = [['a', 'b'], ['b', 'c']]")
    source.run("counts = Counter(t for doc in tokens for t in doc)")
    source.run("n = sum(len(doc) for doc in tokens)")
    source.run("for doc in tokens:\n    doc.append('z')")
    source.run("def Counter(g):\n    return [d.append('y') for d in g]")  # shadows the real one
    source.run("c2 = Counter(doc for doc in tokens)")
    got = {c["n"]: c for c in cells(source)}
    assert got[4]["mutated"] == [] and got[4]["writes"] == ["counts"]
    assert got[5]["mutated"] == [] and got[5]["writes"] == ["n"]
    assert got[6]["mutated"] == ["tokens"]
    assert got[8]["mutated"] == ["tokens"]
    assert source.value("tokens") == [["a", "b", "z", "y"], ["b", "c", "z", "y"]]


def test_recorder_sees_edits_through_enumerate_zip_and_array_rows(source: Kernel) -> None:
    """Builtins that hand out elements, and rows of 2-D arrays, which are views."""
    source.run("import numpy as np")
    source.run("rows = [[1], [2]]\ngrid = np.zeros((2, 3))\nwords = ['a', 'b']")
    source.run("for i, r in enumerate(rows):\n    r.append(i)")
    source.run("for row, w in zip(grid, [1.0, 2.0]):\n    row += w")
    source.run("for i, w in enumerate(words):\n    print(i, w)")  # flat: nothing to change
    got = {c["n"]: c for c in cells(source)}
    assert got[4]["mutated"] == ["rows"]
    assert got[5]["mutated"] == ["grid"]
    assert got[6]["mutated"] == [] and "words" in got[6]["reads"]
    assert source.value("[rows, grid.sum()]") == [[[1, 0], [2, 1]], 9.0]


def test_side_effects_make_cells_unsafe(source: Kernel, dirs: tuple[Path, Path, str]) -> None:
    a, _, _ = dirs
    (a / "in.csv").write_text("x,y\n1,2\n3,4\n")
    source.run("import pandas as pd, numpy as np, random, subprocess")
    source.run("t = pd.read_csv('in.csv')")
    source.run("t.to_csv('out.csv')")
    source.run("r = random.random()")
    source.run("rng = np.random.default_rng(5)\nv = rng.random(3)")
    source.run("u = np.random.default_rng().random(3)")
    source.run("p = subprocess.run(['true']).returncode")
    got = {c["n"]: c for c in cells(source)}
    assert got[3]["effects"] == [["file_read", str(a / "in.csv")]] and got[3]["unsafe"] == ""
    assert got[4]["effects"][0] == ["file_write", str(a / "out.csv")]
    assert "writes" in got[4]["unsafe"]
    assert "randomness" in got[5]["unsafe"]
    assert got[6]["unsafe"] == ""  # seeded
    assert "randomness" in got[7]["unsafe"]
    assert "subprocess" in got[8]["unsafe"]


CSV_SESSION = [
    "import numpy as np, pandas as pd",
    "pd.DataFrame({'a': np.arange(200_000) % 97, 'b': np.arange(200_000)}).to_csv('d.csv')",
    "table = pd.read_csv('d.csv')",
]


def test_csv_cell_is_rerun_only_where_the_file_is(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    a, b, store = dirs
    for cell in CSV_SESSION:
        source.run(cell)
    expected = source.value("int(table['a'].sum())")
    # By default the target may lack d.csv: the table is stored.
    ck = checkpoint(source, store, session="elsewhere")
    assert "table" in {v["name"] for v in ck["stored"]} and ck["recomputed"] == []
    # The target shares the file system: the table is reread, not stored.
    ck = checkpoint(source, store, "--inputs-on-target --restore-weight 0.01")
    assert ck["recomputed"] == ["table"] and ck["rerun_cells"] == [4]
    report, got = restore(b, store, "int(table['a'].sum())")  # cwd follows the source: A
    assert report["recomputed"] == ["table"] and got == expected
    # The file changed since: the table cannot be rebuilt faithfully, and says so.
    (a / "d.csv").write_text("a,b\n1,2\n")
    report, _ = restore(b, store, "'table' in dir()")
    assert report["recomputed"] == []
    assert [x["name"] for x in report["lost"]] == ["table"]
    assert "d.csv" in report["lost"][0]["reason"] and "changed" in report["lost"][0]["reason"]


def test_nondeterminism_the_recorder_cannot_see_is_caught(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    source.run("import os, numpy as np")
    source.run("stamp = np.full((4000, 1000), os.getpid())")  # differs in every process
    source.run("same = np.ones((4000, 1000))")
    ck = checkpoint(source, store, "--restore-weight 0.05")  # favour a fast checkpoint
    assert sorted(ck["recomputed"]) == ["same", "stamp"]
    report, _ = restore(b, store, "1")
    assert report["differs"] == ["stamp"] and report["recomputed"] == ["same"]
    assert any("stamp" in w for w in report["warnings"])


def test_unrestorable_values_stop_the_checkpoint_unless_allowed(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, _, store = dirs
    source.run("import socket")
    source.run("squares = (i * i for i in range(5))")  # unpicklable, its cell safe: recomputed
    source.run("sock = socket.socket()\nsock.connect(('127.0.0.1', 9))", allow_error=True)
    source.run("keep = [1, 2, 3]")
    plan = plan_of(source)
    assert "squares" in plan["recompute"]
    assert set(plan["infeasible"]) == {"sock"}
    assert "network" in plan["infeasible"]["sock"] or "raised" in plan["infeasible"]["sock"]
    with pytest.raises(KernelError, match=r"(?s)sock: cannot be serialized.*--allow-loss"):
        checkpoint(source, store)
    assert open_store(store).list_checkpoints() == []  # nothing was written
    ck = checkpoint(source, store, "--allow-loss")
    assert [s["name"] for s in ck["skipped"]] == ["sock"] and ck["recomputed"] == ["squares"]


def test_a_pod_that_fails_to_load_is_recomputed(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    source.run("xs = [i * i for i in range(1000)]")
    source.run("total = sum(xs)")
    ck = checkpoint(source, store, "--store-all")
    assert ck["recomputed"] == [] and ck["rerun_cells"] == []
    # Damage the pod holding `total`: every blob of the store is one variable's here.
    st = open_store(store)
    manifest = st.read_manifest(ck["checkpoint_id"])
    pod = manifest.variables["total"].pod_id
    ref = next(p for p in manifest.pods if p.id == pod).header.chunks[0]
    path = Path(st.backend.path(_location(ref)))
    data = bytearray(path.read_bytes())
    data[ref.offset + 5 if ref.pack else 5] ^= 0xFF
    path.write_bytes(bytes(data))
    report, got = restore(b, store, "[total, len(xs)]")
    assert got == [sum(i * i for i in range(1000)), 1000]
    assert "total" in report["recomputed"] and report["lost"] == []
    assert {f["name"] for f in report["failed"]} >= {"total"}


def test_restored_session_can_be_checkpointed_with_its_history(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    source.run("import numpy as np")
    source.run("big = np.ones((3000, 1000))")
    ck = checkpoint(source, store, "--restore-weight 0.05")
    assert ck["recomputed"] == ["big"]
    with Kernel(b, ENV) as k:
        k.run(f"%load_ext nbferry.agent\nnbf_r = %nbferry restore --store {store} --session t")
        k.run("small = big[:2].sum()")
        again = checkpoint(k, store, "--restore-weight 0.05")
        assert again["recomputed"] == ["big"]
    report, got = restore(b, store, "[float(big.sum()), float(small)]")
    assert report["recomputed"] == ["big"] and got == [3_000_000.0, 2000.0]


def nbferry(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("nbferry")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_nbferry_plan_from_a_checkpoint_and_from_a_live_kernel(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, _, store = dirs
    source.run("import numpy as np")
    source.run("big = np.ones((2000, 1000))")
    source.run("squares = (i * i for i in range(3))")
    # Storing 16 MB of ones and rerunning np.ones are a near tie; a low restore weight
    # makes rerunning clearly cheaper, so all three plans agree whatever the timings.
    ck = checkpoint(source, store, "--restore-weight 0.01")
    out = nbferry(
        "plan", "latest", "--session", "t", "--store", store, "--json", "--restore-weight", "0.01"
    )
    assert out.returncode == 0, out.stderr
    planned = json.loads(out.stdout)
    assert planned["checkpoint_id"] == ck["checkpoint_id"]
    assert sorted(planned["recompute"]) == ["big", "squares"] == sorted(ck["recomputed"]), (
        out.stdout
    )
    assert planned["rerun_cells"] == [3, 4] and planned["infeasible"] == {}
    # Storing everything cannot store the generator: named, with the reason.
    out = nbferry("plan", ck["checkpoint_id"][:12], "--store", store, "--store-all")
    assert out.returncode == 0, out.stderr
    assert "CANNOT RESTORE squares" in out.stdout and "--store-all" in out.stdout

    recorded = "len(get_ipython()._nbferry_recorder.cells)"
    before = source.value(recorded)
    out = nbferry(
        "plan", "--kernel", source.kernel_id[:8], "--store", store, "--json",
        "--restore-weight", "0.01",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    live = json.loads(out.stdout)
    assert sorted(live["recompute"]) == ["big", "squares"]
    # Asking did not become part of the kernel's history (the check itself is one cell).
    assert source.value(recorded) == before + 1
    out = nbferry("plan", "--kernel", "no-such-kernel", "--store", store)
    assert out.returncode == 1 and "no kernel 'no-such-kernel'" in out.stderr


def test_a_rerun_that_fails_takes_only_its_dependents_down(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    source.run("import os, numpy as np")
    source.run("keep = [1, 2, 3]")
    # Reads an environment variable only the source has: the recorder cannot know.
    source.run("os.environ['ONLY_HERE'] = '7'", store_history=True)
    source.run("x = np.zeros((2000, 1000)) + int(os.environ['ONLY_HERE'])")
    source.run("y = x * 2")
    ck = checkpoint(source, store, "--restore-weight 0.01")
    assert {"x", "y"} <= set(ck["recomputed"])
    with Kernel(b, ENV) as k:
        k.run("%load_ext nbferry.agent")
        k.run(f"nbf_r = %nbferry restore --store {store} --session t")
        report = k.value("{**nbf_r}")
        assert {x["name"] for x in report["lost"]} >= {"x", "y"}
        assert any("KeyError" in x["reason"] for x in report["lost"] if x["name"] == "x")
        assert k.value("['x' in dir(), 'y' in dir(), keep]") == [False, False, [1, 2, 3]]


def test_recomputed_instances_keep_the_loaded_class(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    # Each instance holds an array: uploading them costs more than fingerprinting
    # them, so at a tiny restore weight the planner recomputes the list.
    source.run(
        "import numpy as np\n"
        "class Tok:\n    def __init__(self, i):\n        self.i, self.pad = i, np.full(40_000, i)\n"
        "toks = [Tok(i) for i in range(500)]"
    )
    ck = checkpoint(source, store, "--restore-weight 0.001")
    assert "toks" in ck["recomputed"] and "Tok" in {v["name"] for v in ck["stored"]}
    report, got = restore(b, store, "[isinstance(toks[5], Tok), toks[5].i]")
    assert report["recomputed"] == ["toks"] and got == [True, 5]


def test_recomputed_values_keep_classes_made_by_assignment_or_in_blocks(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    """A namedtuple, a functional Enum, a pair of them unpacked, and classes
    defined inside `try` and `match` are loaded; rerunning their cell to remake
    `big` must not make them again."""
    _, b, store = dirs
    source.run(
        code("""
        import enum
        from collections import namedtuple
        import numpy as np
        Point = namedtuple("Point", "x y")
        Color = enum.Enum("Color", "R G")
        Pair, Size = namedtuple("Pair", "a b"), enum.Enum("Size", "S L")
        try:
            class Box:
                pass
        except Exception:
            pass
        match len(Point._fields):
            case 2:
                class Crate:
                    pass
        big = (np.ones(4_000_000), Point(1, 2), Color.R, Box(), Pair(3, 4), Size.L, Crate())
        """)
    )
    ck = checkpoint(source, store, "--restore-weight 0.001")
    assert ck["recomputed"] == ["big"], ck["plan"]
    assert {"Point", "Color", "Box", "Pair", "Size", "Crate"} <= {v["name"] for v in ck["stored"]}
    report, got = restore(
        b,
        store,
        "[type(big[1]) is Point, big[2] is Color.R, type(big[3]) is Box, big[1].y, "
        "type(big[4]) is Pair, big[5] is Size.L, type(big[6]) is Crate]",
    )
    assert report["recomputed"] == ["big"] and report["differs"] == [], report
    assert got == [True, True, True, 2, True, True, True]


def test_a_recomputed_value_that_cannot_be_stored_is_still_verified(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    """A WeakValueDictionary cannot be pickled, so its cell is rerun; the rerun's
    referents are copies that die with the replay, so it comes back empty, and
    the report must say it differs rather than call it recomputed."""
    _, b, store = dirs
    source.run(
        code("""
        import weakref
        class O:
            def __init__(self, n):
                self.n = n
        o1, o2 = O(1), O(2)
        wvd = weakref.WeakValueDictionary({"a": o1, "b": o2})
        """)
    )
    ck = checkpoint(source, store)
    assert ck["recomputed"] == ["wvd"], ck["plan"]
    report, got = restore(b, store, "len(wvd)")
    assert report["differs"] == ["wvd"] and report["recomputed"] == [], report
    assert got == 0 and source.value("len(wvd)") == 2


def test_a_rerun_sees_the_builtins_its_cell_saw_not_later_shadows(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    """`len` and `sum` were builtins when the first cell ran; later cells bound
    notebook names to them. The rerun of the first cell must use the builtins."""
    _, b, store = dirs
    source.run("import numpy as np\nbig = np.ones(4_000_000) * len([1, 2]) + sum([1, 2])")
    source.run("def len(v):\n    return 7")
    source.run("sum = 100")
    ck = checkpoint(source, store, "--restore-weight 0.001")
    assert ck["recomputed"] == ["big"], ck["plan"]
    report, got = restore(b, store, "[float(big[0]), len([1]), sum]")
    assert report["recomputed"] == ["big"] and report["differs"] == [], report
    assert report["lost"] == [] and got == [5.0, 7, 100]


def test_cells_that_cannot_be_replayed_are_recorded_as_unsafe(source: Kernel) -> None:
    source.run("import sqlite3")
    source.run("con = sqlite3.connect(':memory:')\nrows = 3")  # native I/O: no open() event
    source.run("1 + 1")
    source.run("two = _ * 1")  # IPython's output history is not restored
    source.run("z = 5\n%nbferry status")  # code beside an agent magic
    got = {c["n"]: c for c in cells(source)}
    assert "outside Python" in got[3]["unsafe"] and "sqlite3.connect" in got[3]["unsafe"]
    assert "output history" in got[5]["unsafe"]
    assert "%nbferry" in got[6]["unsafe"] and got[6]["writes"] == ["z"]


def test_a_restore_into_a_kernel_with_its_own_history_is_recorded(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    _, b, store = dirs
    source.run("import numpy as np")
    source.run("big = np.ones((2000, 1000))")
    checkpoint(source, store, "--restore-weight 0.05")
    with Kernel(b, ENV) as k:
        k.run("%load_ext nbferry.agent")
        k.run("big = 'a local value made by a cheap cell'")
        k.run(f"nbf_r = %nbferry restore --store {store} --session t")
        last = cells(k)[-1]
        assert last["writes"] == ["big", "np"] and "restored checkpoint" in last["unsafe"]
        # The next plan cannot rerun the local cell for `big`: it stores it.
        plan = plan_of(k)
        assert "big" in plan["store"] and "big" not in plan["recompute"]


def test_reruns_never_change_loaded_values(source: Kernel, dirs: tuple[Path, Path, str]) -> None:
    """The last cell is rerun only to remake `big`; every other value it touches is loaded.

    Each edit in it once landed on a loaded value a second time: through an alias
    the rerun made again (`b = a`, a view), or through calls the recorder did not
    see as edits (np.add.at, a positional out=, a method or a lambda in a dict that
    changes a global).
    """
    _, b, store = dirs
    source.run("import numpy as np")
    source.run("a = [1]\nbase = np.arange(10.0)\ncounts = np.zeros(3)\narr = np.arange(4.0)")
    source.run("log = []\ndata = [1]")
    source.run("b = a\nv = base[2:5]")
    source.run("class C:\n    def go(self):\n        log.append(1)")
    source.run("c = C()\nops = {'add': lambda x: data.append(x)}")
    source.run(
        "b.append(2); v += 1; np.add.at(counts, [0, 1], 1); np.negative(arr, arr)\n"
        "c.go(); ops['add'](3)\n"
        "big = np.zeros((20000, 5000))"
    )
    ck = checkpoint(source, store)
    assert ck["recomputed"] == ["big"] and 8 in ck["rerun_cells"], ck["plan"]
    expr = (
        "[a, b is a, base.tolist(), np.shares_memory(v, base), counts.tolist(), "
        "arr.tolist(), log, data]"
    )
    report, got = restore(b, store, f"[{expr}, big.shape]")
    assert report["recomputed"] == ["big"], report
    assert report["differs"] == [] and report["lost"] == [] and report["failed"] == []
    assert got == [source.value(expr), [20000, 5000]]


def test_reruns_never_repeat_edits_the_recorder_reached_only_indirectly(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    """A rerun of `big`'s cell must not append to a class list through `self`
    or to sys.path a second time; a hook nested in a dict counts as reading and
    changing what it edits; a cell that calls a function using globals() is
    never rerun."""
    _, b, store = dirs
    source.run("import sys, time\nimport numpy as np")
    source.run("t0 = time.time()\nevents = ['start']")  # reads the clock: stored
    source.run(
        code("""
        def log(msg):
            events.append(msg)
        cfg = {"hooks": {"log": log}}
        class Reg:
            items = []
            def add(self, v):
                self.items.append(v)
        reg = Reg()
        def note(msg):
            globals()["events"].append(msg)
        """)
    )
    extra = str(b.parent)  # a folder both "hosts" have
    source.run(
        f'big = np.zeros((4000, 2500))\nreg.add("big")\nsys.path.append({extra!r})\n'
        "sys.path.append('deps.zip')"  # no folder: only the rerun puts it back
    )
    source.run('cfg["hooks"]["log"]("hooked")')
    source.run("big2 = np.zeros((4000, 2500))\nnote('g')")
    hooked, through_globals = cells(source)[-2:]
    assert "events" in hooked["reads"] and hooked["mutated"] == ["events"], hooked
    assert "note, which uses globals" in through_globals["unsafe"], through_globals
    ck = checkpoint(source, store, "--restore-weight 0.001")
    assert ck["recomputed"] == ["big"], ck["plan"]
    report, got = restore(
        b,
        store,
        f"[events, Reg.items, sys.path.count({extra!r}), sys.path.count('deps.zip'), big.shape]",
    )
    assert report["recomputed"] == ["big"] and report["differs"] == [], report
    assert got == [["start", "hooked", "g"], ["big"], 1, 1, [4000, 2500]]


def test_reruns_never_change_loaded_classes_or_functions(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    """Loaded definitions stay the objects pods refer to, so a rerun cell gets
    copies of their state: a class attribute, a function attribute and a
    mutable default are each changed once, by the source, not again on restore."""
    _, b, store = dirs
    source.run("import numpy as np\nfrom dataclasses import dataclass")
    # A classmethod and a dataclass cannot be deep-copied: lending must skip them
    # and still keep `a is b` for the rerun.
    source.run(
        "class C:\n    n = 0\n    items = []\n    @classmethod\n    def make(cls):\n"
        "        return cls()\n\n@dataclass\nclass D:\n    x: int = 0"
    )
    source.run("def f():\n    pass\nf.calls = 0")
    source.run("def add(x, acc=[]):\n    acc.append(x)\n    return acc")
    source.run("def counter():\n    n = 0\n    def inc():\n        nonlocal n\n"
               "        n += 1\n        return n\n    return inc\ninc = counter()")  # fmt: skip
    source.run("a = [1]\nb = a\ndef keep(fn):\n    reg.append(fn)\n    return fn")
    source.run(
        "C.n += 1; C.items.append('x'); C.added = 1; f.calls += 1; add(1); inc()\n"
        "reg = []\nh = keep(lambda: 1)\n"  # h is a loaded function: the call must still run
        "big = np.zeros((20000, 5000)) + (a is b) + len(reg)"
    )
    ck = checkpoint(source, store, "--restore-weight 0.001")
    assert ck["recomputed"] == ["big"], ck["plan"]
    expr = "[C.n, C.items, C.added, f.calls, add.__defaults__[0], inc(), len(reg)]"
    report, got = restore(b, store, f"[{expr}, big.shape, float(big[0, 0])]")
    assert report["recomputed"] == ["big"], report
    assert report["differs"] == [] and report["failed"] == []
    want = [[1, ["x"], 1, 1, [1], 2, 1], [20000, 5000], 2.0]
    assert got == [source.value(expr), [20000, 5000], 2.0] == want


def test_a_module_next_to_the_notebook_restores_from_another_directory(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    a, b, store = dirs
    (a / "helpers_mod.py").write_text("VALUE = 7\n")
    source.run("import helpers_mod\ny = helpers_mod.VALUE * 2")
    checkpoint(source, store)
    report, got = restore(b, store, "[helpers_mod.VALUE, y, __import__('os').getcwd()]")
    assert report["failed"] == [] and report["lost"] == [], report
    assert got == [7, 14, str(a)]


def test_a_file_changed_since_its_cell_read_it_is_not_planned_for_rerun(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    """`rows` cannot be stored, so only a rerun could remake it: the plan must see that
    the file its cell read has changed since, before anything is uploaded."""
    _, _, store = dirs
    source.run("import pandas as pd")
    source.run("pd.DataFrame({'a': range(5)}).to_csv('d.csv')")
    source.run("rows = (r for r in pd.read_csv('d.csv').itertuples())")
    source.run("pd.DataFrame({'a': range(9)}).to_csv('d.csv', index=False)")
    source.run("nbf_p = %nbferry plan --inputs-on-target")
    infeasible = source.value("nbf_p['infeasible']")
    assert "rows" in infeasible and "d.csv" in infeasible["rows"], infeasible
    assert "changed" in infeasible["rows"]
    with pytest.raises(KernelError, match="rows"):
        checkpoint(source, store, "--inputs-on-target")


def test_a_rerun_runs_in_the_directory_its_cell_ran_in(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    a, b, store = dirs
    (a / "sub").mkdir()
    (a / "d.csv").write_text("x\n1\n")
    (a / "sub" / "d.csv").write_text("x\n2\n3\n")
    source.run("import os, pandas as pd\nos.chdir('sub')")
    source.run("rows = (r for r in pd.read_csv('d.csv').itertuples())")  # only a rerun remakes it
    source.run("os.chdir('..')")
    ck = checkpoint(source, store, "--inputs-on-target")
    assert ck["recomputed"] == ["rows"]
    report, got = restore(b, store, "[[r.x for r in rows], os.getcwd()]")
    assert report["recomputed"] == ["rows"] and report["lost"] == [], report
    assert got == [[2, 3], str(a)]


def test_module_attributes_a_cell_changed_are_reported_not_silently_lost(
    source: Kernel, dirs: tuple[Path, Path, str]
) -> None:
    a, b, store = dirs
    (a / "settings_mod.py").write_text("VALUE = 1\n")
    source.run("import settings_mod")
    source.run("settings_mod.VALUE = 5")
    source.run("y = settings_mod.VALUE * 2")
    ck = checkpoint(source, store)
    assert any("In[3] changed settings_mod.VALUE" in n for n in ck["notes"]), ck["notes"]
    report, got = restore(b, store, "[settings_mod.VALUE, y]")
    assert any("settings_mod.VALUE" in w for w in report["warnings"]), report["warnings"]
    assert got == [1, 10]  # y is the source's; the module came back as imported
