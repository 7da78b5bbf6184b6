"""Agent logic that needs no kernel: grouping, session ids, namespace filter, preflight."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nbferry.agent.capture import capture_namespace
from nbferry.agent.covariables import group
from nbferry.agent.fingerprint import Unstable, fingerprint
from nbferry.agent.namespace import user_variables
from nbferry.agent.restore import RestoreError, preflight
from nbferry.agent.session import session_id_for
from nbferry.storage.ids import validate_session_id
from nbferry.v1 import manifest_pb2 as pb


def test_group_links_only_shared_ids() -> None:
    assert group({"a": {1, 2}, "b": {3}, "c": {2, 4}, "d": {4}, "e": set()}) == [
        ["a", "c", "d"],
        ["b"],
        ["e"],
    ]


def test_unrelated_arrays_stay_apart_and_shared_ones_group() -> None:
    a, b = np.zeros(1000), np.ones(1000)  # same dtype singleton must not link them
    shared = [1, 2]
    ns = {"a": a, "b": b, "view": a[10:20], "x": [shared], "y": {"k": shared}, "n": 5, "s": "txt"}
    captured = capture_namespace(ns)
    pods = {tuple(p.variables) for p in captured.pods if p.variables}
    assert ("a", "view") in pods and ("b",) in pods and ("x", "y") in pods
    assert ("n",) in pods and ("s",) in pods


def test_text_columns_pickle_in_c_yet_keep_sharing_and_links() -> None:
    import pickle

    import pandas as pd

    from nbferry.agent import pickling

    words = np.array([f"w{i % 50}" for i in range(5000)], dtype=object)
    words[7] = None
    frame = pd.DataFrame({"word": words.copy(), "n": np.arange(5000)})
    mutable = np.array([[i] for i in range(2000)] + [None], dtype=object)[:-1]
    ns = {"words": words, "pair": (words, words), "frame": frame, "rows": mutable, "alias": mutable}
    captured = capture_namespace(ns)
    pods = {tuple(p.variables): p for p in captured.pods if p.variables}
    # One object array reached by two variables still links them, through its own id.
    assert ("words", "pair") in pods and ("rows", "alias") in pods and ("frame",) in pods
    # Atom-only arrays are pickled by a nested C pickle; arrays holding lists are not.
    assert pickling._only_atoms(words) and not pickling._only_atoms(mutable)
    assert b"w49" in pods[("words", "pair")].header
    pod = pods[("words", "pair")]
    back = pickling.decode(pod.header, [bytes(b) for b in pod.buffers], pod.serializer)
    assert back["pair"][0] is back["words"] is back["pair"][1]  # identity within the pod
    assert back["words"].dtype == object and list(back["words"]) == list(words)
    got = pickle.loads(pods[("frame",)].header, buffers=pods[("frame",)].buffers)["frame"]
    pd.testing.assert_frame_equal(got, frame)
    assert fingerprint(got) == fingerprint(frame)


def test_plain_containers_skip_the_tracking_pickler_yet_link_and_restore_alike() -> None:
    import pandas as pd

    from nbferry.agent import pickling

    inner = ["shared", 1]
    values = [
        {"tokens": [["a", "b"], ["c"], []], "rec": {"k": (1, [2.0, None]), (1, 2): {b"x"}}},
        {"t": ((inner, inner), {"x": inner}), "f": frozenset({1, "a"}), "e": {}},
        {"meta": [pd.DataFrame._metadata]},  # a library global links nothing
    ]
    for value in values:
        plain = pickling._plain_containers(value, pickling._library_globals())
        tracked = pickling._dump(pickling._StdPickler, value, {}, {}, set(), True, {})
        assert plain is not None
        assert plain[0].keys() == tracked.reached.keys() and plain[1] == tracked.has_sets

    # A class whose metaclass makes it unhashable fails only its own variable, as before.
    class Meta(type):
        def __eq__(cls, other: object) -> bool:
            return cls is other

    odd_cls = Meta("Odd", (), {})
    ns = {"ok": [1, 2], "odd": [odd_cls()], "arr": np.zeros(3)}
    assert pickling._plain_containers({"v": ns["odd"]}, set()) is None
    captured = capture_namespace(ns)
    assert [s.name for s in captured.skipped] == ["odd"] and "ok" in captured.variables
    # The recorder, before each cell, asks the same of such a list: it must answer
    # "could change" (it cannot tell), not raise inside IPython's pre_run_cell.
    from nbferry.agent.cellscan import Use
    from nbferry.agent.recorder import could_change

    assert could_change(ns["odd"], [Use("arg", "enumerate")], {}) is True
    assert could_change(ns["odd"], [Use("iter", "len", readonly=True)], {}) is True
    assert could_change([[1, "a"]], [Use("iter", "len", readonly=True)], {}) is False
    # Anything else inside (an array, a Counter, a notebook object) takes the tracking path.
    for odd in ([np.zeros(2)], {"c": __import__("collections").Counter("ab")}, [[object()]]):
        assert pickling._plain_containers({"v": odd}, set()) is None

    tokens = [[f"w{i}" for i in range(j % 7)] for j in range(3000)]
    ns = {"tokens": tokens, "first": tokens[5], "other": [["x"]], "s": {"a", "b"}}
    pods = {tuple(p.variables): p for p in capture_namespace(ns).pods if p.variables}
    assert ("tokens", "first") in pods and ("other",) in pods and ("s",) in pods
    pod = pods[("tokens", "first")]
    back = pickling.decode(pod.header, pod.buffers, pod.serializer)
    assert back["tokens"] == tokens and back["first"] is back["tokens"][5]
    assert pod.serializer == "pickle"


def test_pandas_globals_and_shared_indexes_do_not_link_frames() -> None:
    import pandas as pd

    from nbferry.agent import pickling

    base = pd.DataFrame(
        {"x": np.arange(3000.0), "y": np.ones(3000)},
        index=pd.date_range("2024-01-01", periods=3000, freq="s"),
    )
    rolled = base.rolling(10).mean()  # shares base.index, its columns and its freq object
    other = pd.DataFrame({"y": [1, 2]}, index=pd.Index(["a", "b"], name="k"))
    idx = other.index
    assert rolled.index is base.index
    ns = {"base": base, "rolled": rolled, "other": other, "idx": idx, "copy_idx": idx.copy()}
    captured = capture_namespace(ns)
    pods = {tuple(p.variables): p for p in captured.pods if p.variables}
    # Frames merely sharing an index (and pandas' own class-level globals) stay
    # apart, so each can be stored or recomputed; a variable bound to an index
    # is stored with its frame, so `idx is other.index` holds after restore.
    assert set(pods) == {("base",), ("rolled",), ("other", "idx"), ("copy_idx",)}
    pod = pods[("other", "idx")]
    back = pickling.decode(pod.header, [bytes(b) for b in pod.buffers], pod.serializer)
    assert back["idx"] is back["other"].index and back["idx"].name == "k"
    pd.testing.assert_frame_equal(back["other"], other)
    for name in ("base", "rolled"):
        pod = pods[(name,)]
        got = pickling.decode(pod.header, [bytes(b) for b in pod.buffers], pod.serializer)[name]
        pd.testing.assert_frame_equal(got, ns[name])
        assert got.index.freq == base.index.freq and fingerprint(got) == fingerprint(ns[name])


def _decode_all(captured: object) -> dict:
    from nbferry.agent import pickling

    out: dict = {}
    for pod in captured.pods:  # type: ignore[attr-defined]
        if pod.variables:
            buffers = [bytearray(memoryview(b).cast("B")) for b in pod.buffers]
            out.update(pickling.decode(pod.header, buffers, pod.serializer))
    return out


def test_indexes_still_link_what_really_shares_with_them(monkeypatch) -> None:
    """Opaque pandas leaves must not hide real sharing (found in review)."""
    import types

    import pandas as pd

    arr = np.arange(5.0)
    df = pd.DataFrame({"x": np.zeros(5)}, index=arr)  # pandas keeps arr as the index data
    Node = type("Node", (), {"__module__": "fake_lib"})
    nodes = [Node() for _ in range(3)]
    ser = pd.Series([1, 2, 3], index=pd.Index(nodes, dtype=object))
    Widget = type("Widget", (), {"__module__": "fake_lib", "defaults": {"color": "red"}})
    w1, w2 = Widget(), Widget()
    w1.opts = w2.opts = Widget.defaults
    lib = types.ModuleType("fake_lib")
    lib.Node, lib.Widget = Node, Widget  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_lib", lib)
    meta = pd.DataFrame._metadata
    ns = {"arr": arr, "df": df, "nodes": nodes, "ser": ser, "w1": w1, "w2": w2,
          "a": (meta, pd.DataFrame({"y": [1]})), "b": (pd.DataFrame({"y": [2]}), meta)}  # fmt: skip
    captured = capture_namespace(ns)
    pods = {tuple(p.variables) for p in captured.pods if p.variables}
    assert {("arr", "df"), ("nodes", "ser"), ("w1", "w2"), ("a",), ("b",)} <= pods
    back = _decode_all(captured)
    back["arr"][1] = 42.0
    assert back["df"].index[1] == 42.0  # still the same memory
    assert back["ser"].index[0] is back["nodes"][0]
    assert back["w1"].opts is back["w2"].opts


def test_datetimes_and_index_data_go_out_of_band() -> None:
    import pandas as pd

    n = 100_000
    when = pd.date_range("2024-01-01", periods=n, freq="s")
    frames = {f"f{i}": pd.DataFrame({"x": np.arange(n) * i, "t": when}, index=when) for i in (1, 2)}
    spans = np.arange(n).astype("timedelta64[ms]")
    captured = capture_namespace({**frames, "spans": spans})
    for pod in captured.pods:
        if pod.variables:
            assert len(pod.header) < 20_000, (pod.variables, len(pod.header))  # no copies
    back = _decode_all(captured)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(back[name], frame)
        assert fingerprint(back[name]) == fingerprint(frame)
    assert back["spans"].dtype == spans.dtype and (back["spans"] == spans).all()


def test_unserializable_values_are_reported_not_fatal() -> None:
    import threading

    ns = {"gen": (i for i in range(3)), "ok": [1, 2], "sock": __import__("socket").socket()}
    try:
        captured = capture_namespace(ns)
    finally:
        ns["sock"].close()
    skipped = {s.name: s for s in captured.skipped}
    assert set(skipped) == {"gen", "sock"}
    assert "generator" in skipped["gen"].reason and skipped["gen"].type_name == "generator"
    assert "ok" in captured.variables
    assert threading  # locks are covered by the real-kernel corpus


def test_user_variables_filter() -> None:
    ns = {
        "In": [],
        "Out": {},
        "_": 1,
        "__": 2,
        "_i3": "x",
        "_7": 7,
        "__name__": "__main__",
        "get_ipython": print,
        "list": [1],  # shadows a builtin: still the user's
        "_private": 3,
        "data": 4,
    }
    assert list(user_variables(ns, {"get_ipython": print})) == ["list", "_private", "data"]


def test_session_ids_are_safe_stable_and_distinct() -> None:
    a = session_id_for("alice", "work/Sales Q3.ipynb")
    assert a == session_id_for("alice", "work/Sales Q3.ipynb")
    assert a.startswith("alice-work-Sales_Q3.ipynb")
    assert a != session_id_for("alice", "work/Sales_Q3.ipynb")  # lossy names get a hash
    assert session_id_for("bob", "a.ipynb") == "bob-a.ipynb"
    long = session_id_for("alice", "x/" * 200 + "nb.ipynb")
    for sid in (a, long, session_id_for("ünï", "../../etc/passwd")):
        assert validate_session_id(sid) == sid and len(sid) <= 200


def test_fingerprint_tracks_value_not_identity() -> None:
    x = [1, 2]
    assert fingerprint([x, x]) == fingerprint([[1, 2], [1, 2]])
    assert fingerprint(np.arange(5)) != fingerprint(np.arange(1, 6))
    assert fingerprint({"a": np.zeros(3)}) == fingerprint({"a": np.zeros(3)})


def _manifest(**producer: str) -> pb.Manifest:
    m = pb.Manifest(checkpoint_id="01TEST", producer=pb.Producer(**producer))
    return m


def test_preflight_missing_module_and_version_warning() -> None:
    m = _manifest(python_version="2.7.18")
    m.modules.add(name="np", module="numpy", distribution="numpy", version="2.0.0")
    warnings = preflight(m)
    assert len(warnings) == 1 and "Python 2.7.18" in warnings[0]

    m.modules.add(name="zz", module="no_such_mod_xyz.sub", distribution="zz-dist", version="1.2")
    with pytest.raises(RestoreError) as err:
        preflight(m)
    text = str(err.value)
    assert "no_such_mod_xyz.sub" in text and "pip install zz-dist==1.2" in text
    assert "nothing was restored" in text and "numpy" not in text.split(":", 1)[1]


def _fingerprint_in_process(expr: str, seed: str) -> str:
    code = (
        "from nbferry.agent.fingerprint import fingerprint\n"
        f"print(fingerprint({expr}, sets=True).hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_sets_fingerprint_alike_under_any_string_hash_seed() -> None:
    expr = "[{'tokens': {'alpha', 'beta', 'gamma', 'delta'}}, frozenset({'x', 'y', 1})]"
    assert _fingerprint_in_process(expr, "1") == _fingerprint_in_process(expr, "2")
    assert fingerprint({"a", "b"}, sets=True) != fingerprint({"a", "c"}, sets=True)
    # Without sets both modes agree, so values without sets need no flag.
    assert fingerprint([1, {"k": "v"}]) == fingerprint([1, {"k": "v"}], sets=True)


def test_read_only_arrays_fingerprint_like_writable_copies() -> None:
    a = np.arange(10.0)
    b = a.copy()
    b.flags.writeable = False
    assert fingerprint({"x": a}) == fingerprint({"x": b})


def test_matplotlib_objects_have_no_stable_fingerprint() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    with pytest.raises(Unstable):
        fingerprint({"ax": ax})
    plt.close(fig)


def test_a_pod_needing_a_newer_load_helper_names_both_versions() -> None:
    """A pod written by a newer nbferry may refer to a load helper this one lacks."""
    import pickle

    from nbferry.agent import restore

    failed: list[dict[str, str]] = []
    with pytest.raises(AttributeError) as caught:
        pickle.loads(b"cnbferry.agent.pickling\n_newer\n.")  # GLOBAL: the helper by name
    restore._fail(failed, pb.Pod(id="p0", variables=["x"]), caught.value, "9.9")
    assert failed[0]["name"] == "x" and "_newer" in failed[0]["reason"]
    assert "written by nbferry 9.9" in failed[0]["reason"] and "install" in failed[0]["reason"]


def test_values_only_dill_can_store_keep_sharing_or_go_alone_when_too_big() -> None:
    import threading
    import types

    from nbferry.agent import pickling

    def pods_of(n_rows: int) -> tuple[dict, list[str]]:
        cfg = {"scale": 2}
        rows = [{"cfg": cfg, "i": i} for i in range(n_rows)]
        holder = types.SimpleNamespace(lock=threading.Lock(), cfg=cfg)  # pickle cannot, dill can
        captured = capture_namespace({"cfg": cfg, "rows": rows, "holder": holder})
        return {tuple(p.variables): p for p in captured.pods if p.variables}, captured.notes

    # Small: one dill pod, sharing kept.
    pods, notes = pods_of(3)
    pod = pods["cfg", "rows", "holder"]
    back = pickling.decode(pod.header, pod.buffers, pod.serializer)
    assert pod.serializer == "dill" and not notes
    assert back["holder"].cfg is back["cfg"] and back["rows"][0]["cfg"] is back["cfg"]
    # Too big for dill together: the dill-only value goes alone, the others still share.
    pods, notes = pods_of(200_000)
    assert ("cfg", "rows") in pods and ("holder",) in pods, list(pods)
    assert pods["holder",].serializer == "dill"
    assert any("holder share objects with cfg, rows" in n for n in notes), notes
    pod = pods["cfg", "rows"]
    back = pickling.decode(pod.header, pod.buffers, pod.serializer)
    assert all(row["cfg"] is back["cfg"] for row in back["rows"][:10])


def test_reruns_copy_loaded_values_but_keep_the_process_generators() -> None:
    import random
    from random import randint

    from nbferry.agent.rerun import _isolated

    a = [1]
    got = _isolated({"a": a, "b": a, "r": randint, "env": os.environ})
    assert got["a"] is not a and got["a"] == a and got["b"] is got["a"]
    assert got["r"].__self__ is random._inst and got["env"] is os.environ


def test_what_a_cell_may_run_is_found_without_raising() -> None:
    import functools

    from nbferry.agent.recorder import _notebook_code

    ns: dict = {"__name__": "__main__"}  # as if defined in the notebook
    exec(
        "def f(x):\n    return x * k\n"
        "class C:\n    def go(self):\n        log.append(1)\n"
        "class Proxy:\n    @property\n    def __class__(self):\n        raise RuntimeError('no')\n",
        ns,
    )
    names = lambda value: sorted(c.co_name for c in _notebook_code(value))  # noqa: E731
    assert names(functools.partial(ns["f"], 2)) == ["f"]
    assert names(functools.cache(ns["f"])) == ["f"]
    assert names(ns["C"]()) == ["go"] and names({"ops": ns["f"]}) == ["f"]
    assert names({"nested": {"ops": [ns["f"]]}}) == ["f"]  # cfg["hooks"]["log"](...)
    assert names({"a": {"b": {"c": [ns["f"]]}}}) == []  # three levels of containers only
    hooks = {"log": ns["f"]}  # met deep first, then shallow: still followed
    assert names({"deep": {"x": {"y": hooks}}, "h": hooks}) == ["f"]
    assert names({"h": hooks, "deep": {"x": {"y": hooks}}}) == ["f"]
    names(ns["Proxy"]())  # must not raise
    assert names([ns["Proxy"]()]) == ["__class__"]
