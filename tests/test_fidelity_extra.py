"""Restore fidelity that needs no kernel: memoryviews and aliases of notebook functions.

The real-kernel round trips of the same cases are in test_agent_corpus.py
("lambda_aliases", "memoryviews").
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from nbferry.agent import pickling
from nbferry.agent.capture import Captured, capture_namespace
from nbferry.agent.pickling import STATE_POD


def restored(captured: Captured) -> dict[str, Any]:
    """Every pod decoded, over writable copies of its buffers (as a restore reads them)."""
    out: dict[str, Any] = {}
    for pod in captured.pods:
        if pod.pod_id != STATE_POD:
            buffers = [bytearray(memoryview(b).cast("B")) for b in pod.buffers]
            out.update(pickling.decode(pod.header, buffers, pod.serializer))
    return out


def pods_of(captured: Captured) -> set[tuple[str, ...]]:
    return {tuple(p.variables) for p in captured.pods if p.variables}


def test_memoryview_of_a_variable_stays_over_it() -> None:
    buf = bytearray(b"abc")
    arr = np.arange(6.0).reshape(2, 3)
    ns = {"buf": buf, "mv": memoryview(buf), "arr": arr, "mva": memoryview(arr)}
    captured = capture_namespace(ns)
    assert {("buf", "mv"), ("arr", "mva")} <= pods_of(captured) and not captured.notes
    back = restored(captured)
    mv, mva = back["mv"], back["mva"]
    assert type(mv) is memoryview and mv.obj is back["buf"] and not mv.readonly
    mv[0] = ord("x")
    assert back["buf"] == b"xbc"
    assert mva.obj is back["arr"] and (mva.format, mva.shape) == ("d", (2, 3))
    mva[1, 2] = -1.0
    assert back["arr"][1, 2] == -1.0


def test_memoryview_keeps_format_shape_contents_and_readonly() -> None:
    grid = memoryview(bytearray(range(48))).cast("d", (2, 3))  # a cast of a whole buffer
    ns = {
        "grid": grid,
        "ro_bytes": memoryview(b"const"),
        "ro_view": memoryview(bytearray(b"ab")).toreadonly(),
        "strided": memoryview(bytearray(b"abcdef"))[::2],
        "ints": memoryview(bytearray(16)).cast("i")[1:3],
        "empty": memoryview(bytearray()),
        "held": [memoryview(b"in a list")],
    }
    back = restored(capture_namespace(ns))
    for name, view in ns.items():
        if name == "held":
            view, again = view[0], back[name][0]
        else:
            again = back[name]
        assert type(again) is memoryview, name
        assert (again.format, again.shape, again.readonly) == (
            view.format,
            view.shape,
            view.readonly,
        ), name
        assert again.tobytes() == view.tobytes(), name
    assert back["grid"].tolist() == grid.tolist()
    back["strided"][0] = ord("z")  # a copy, writable like the source view
    assert back["strided"].tobytes() == b"zce"


def test_memoryview_of_part_of_a_variable_says_the_sharing_is_lost() -> None:
    buf = bytearray(b"hello")
    captured = capture_namespace({"buf": buf, "part": memoryview(buf)[1:4]})
    assert any("part" in n and "buf" in n and "no longer share" in n for n in captured.notes)
    back = restored(captured)
    assert back["part"].tobytes() == b"ell" and not back["part"].readonly


def test_memoryview_over_a_base_of_another_type_is_a_copy() -> None:
    import threading

    class Locked(bytearray):  # a buffer that holds a lock: only dill stores it
        lock = None

    base = Locked(b"xyz")
    base.lock = threading.Lock()
    captured = capture_namespace({"mv": memoryview(base), "base": base})
    # Not a plain buffer type: the view is copied at once (plain pickle), the base needs dill.
    assert sorted(p.serializer for p in captured.pods if p.variables) == ["dill", "pickle"]
    assert any("mv" in n and "no longer share" in n for n in captured.notes)
    back = restored(captured)
    assert type(back["mv"]) is memoryview and back["mv"].tobytes() == b"xyz"


def test_alias_of_a_notebook_function_refers_to_it_by_name() -> None:
    main = sys.modules["__main__"].__dict__
    ns: dict[str, Any] = {}
    exec("f = g = lambda x: x + 1\nh = [f, f]\ndef foo(): return 1\nbar = foo", main, ns)
    captured = capture_namespace(ns)
    by_name = {p.variables[0]: p for p in captured.pods if p.variables}
    # Only the definitions are stored by value; each alias loads the live one by name.
    assert by_name["f"].serializer == by_name["foo"].serializer == "cloudpickle"
    for alias in ("g", "h", "bar"):
        assert by_name[alias].serializer == "pickle" and b"_main_attr" in by_name[alias].header


def test_a_memoryview_over_a_base_no_pickler_rebuilds_is_stored_over_a_copy() -> None:
    import mmap

    mm = mmap.mmap(-1, 2 << 20)  # over SMALL_FOR_DILL: dill is not tried
    mm[:3] = b"abc"
    state = {"view": memoryview(mm), "rows": [1, 2]}
    captured = capture_namespace({"state": state})
    assert not captured.skipped, captured.skipped
    back = restored(captured)["state"]
    assert type(back["view"]) is memoryview and back["view"][:3].tobytes() == b"abc"
    assert back["rows"] == [1, 2]


def test_an_alias_of_a_definition_that_cannot_be_stored_is_not_a_dangling_reference() -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec("def f(x=(i for i in range(3))):\n    return x\ng = f", ns)  # a generator default
    captured = capture_namespace({"f": ns["f"], "g": ns["g"]})
    # Both are skipped (a restore recomputes them); g does not refer to a missing f.
    assert {s.name for s in captured.skipped} == {"f", "g"}, captured.skipped
    assert not [p for p in captured.pods if "g" in p.variables]
