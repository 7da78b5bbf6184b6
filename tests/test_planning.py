"""From session facts (manifest messages) to a plan and back: costs, safety, reports."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from nbferry.agent import planning
from nbferry.agent.planner import INF
from nbferry.agent.recorder import file_digest
from nbferry.storage.speed import StoreSpeed
from nbferry.v1 import manifest_pb2 as pb

# 100 MB/s both ways and no request latency: seconds are size / 1e8.
SPEED = StoreSpeed(write_bytes_per_second=1e8, read_bytes_per_second=1e8, latency_seconds=0.0)
MB = 1_000_000


def C(
    index: int,
    runtime: float,
    reads: str = "",
    writes: str = "",
    *,
    count: int | None = None,
    deletes: str = "",
    unsafe: str = "",
    effects: tuple[pb.SideEffect, ...] = (),
) -> pb.CellExecution:
    return pb.CellExecution(
        index=index,
        execution_count=index + 1 if count is None else count,
        runtime_seconds=runtime,
        reads=reads.split(),
        writes=writes.split(),
        deletes=deletes.split(),
        unsafe=unsafe,
        side_effects=list(effects),
    )


def H(*cells: pb.CellExecution) -> pb.History:
    return pb.History(cells=list(cells))


def V(size: int, pod: str = "", type_name: str = "dict", fp: bytes = b"") -> pb.VariableRef:
    return pb.VariableRef(pod_id=pod, type_name=type_name, digest=fp, size=size)


def read_effect(path: str, size: int = 0) -> pb.SideEffect:
    return pb.SideEffect(kind="file_read", target=path, size=size)


def recorded_read(path: Path, *, hashed: bool = True) -> pb.SideEffect:
    """The effect as the recorder writes it for a file a cell read."""
    st = path.stat()
    effect = pb.SideEffect(kind="file_read", target=str(path), size=st.st_size)
    effect.mtime.FromNanoseconds(st.st_mtime_ns)
    if hashed:
        effect.blake3 = file_digest(str(path))
    return effect


# -- cells: which are safe to rerun ---------------------------------------------------


def test_a_cell_that_reads_a_file_is_unsafe_unless_inputs_are_on_the_target() -> None:
    hist = H(C(0, 1.0, writes="df", count=3, effects=(read_effect("/data/train.csv", 10),)))
    (cell,) = planning.cells_for_plan(hist, inputs_on_target=False)
    assert not cell.safe and "/data/train.csv" in cell.why and "--inputs-on-target" in cell.why
    assert str(cell) == "In[3]"
    (cell,) = planning.cells_for_plan(hist, inputs_on_target=True)
    assert cell.safe and cell.why == ""


def test_cells_for_plan_carries_runtime_reads_and_writes_with_deletes() -> None:
    hist = H(C(0, 2.5, reads="a b", writes="c", deletes="tmp", count=9))
    (cell,) = planning.cells_for_plan(hist, inputs_on_target=False)
    assert cell.index == 0 and cell.runtime == 2.5 and cell.label == "In[9]"
    assert cell.reads == {"a", "b"} and cell.writes == {"c", "tmp"} and cell.safe


def test_a_recorded_unsafe_reason_wins_over_file_reads() -> None:
    effects = (read_effect("/data/a.csv"), pb.SideEffect(kind="file_write", target="out.csv"))
    hist = H(C(0, 1.0, writes="x", unsafe="it writes out.csv", effects=effects))
    for on_target in (False, True):
        (cell,) = planning.cells_for_plan(hist, inputs_on_target=on_target)
        assert not cell.safe and cell.why == "it writes out.csv"
    (cell,) = planning.cells_for_plan(hist, inputs_on_target=False, file_problem=lambda e: "")
    assert cell.why == "it writes out.csv"


def test_other_side_effect_kinds_do_not_make_a_clean_cell_unsafe() -> None:
    hist = H(C(0, 1.0, writes="x", effects=(pb.SideEffect(kind="clock", target="time.time"),)))
    (cell,) = planning.cells_for_plan(hist, inputs_on_target=False)
    assert cell.safe  # the recorder puts the reason in `unsafe`; planning trusts it


def test_file_reads_steer_the_plan() -> None:
    hist = H(C(0, 0.5, writes="df", effects=(read_effect("/data/big.parquet", 50 * MB),)))
    variables = {"df": V(1000 * MB)}  # 20 s to store and load, 0.5 s to reread
    p = planning.plan_session(variables, [], hist, SPEED)
    assert p.plan.store == ["df"] and p.plan.rerun_cells == []
    p = planning.plan_session(variables, [], hist, SPEED, inputs_on_target=True)
    assert p.plan.recompute == ["df"] and p.plan.rerun_cells == [0]


# -- restore: are the files the cells read still here? -------------------------------


def test_an_unchanged_file_is_no_problem(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n")
    assert planning.file_problem_here(recorded_read(path)) == ""
    assert planning.file_problem_here(recorded_read(path, hashed=False)) == ""


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n")
    effect = recorded_read(path)
    path.unlink()
    why = planning.file_problem_here(effect)
    assert str(path) in why and "missing" in why


def test_a_file_of_another_size_has_changed(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n")
    effect = recorded_read(path)
    path.write_text("a,b\n1,2\n3,4\n")
    why = planning.file_problem_here(effect)
    assert str(path) in why and "changed" in why and "was 8" in why


def test_a_file_with_the_same_size_and_other_content_has_changed(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n")
    effect = recorded_read(path)
    stat = path.stat()
    path.write_text("a,b\n9,9\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    why = planning.file_problem_here(effect)
    assert str(path) in why and "content changed" in why


def test_a_copy_with_the_same_content_but_a_new_mtime_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n1,2\n")
    effect = recorded_read(path)
    os.utime(path, ns=(1, 1))  # copied to another host: content hash decides
    assert planning.file_problem_here(effect) == ""


def test_without_a_hash_the_mtime_decides(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 100)
    effect = recorded_read(path, hashed=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    why = planning.file_problem_here(effect)
    assert str(path) in why and "modified" in why


def test_at_restore_file_problems_mark_cells_unsafe_and_name_the_path(tmp_path: Path) -> None:
    same, gone, edited = tmp_path / "same.csv", tmp_path / "gone.csv", tmp_path / "edited.csv"
    for path in (same, gone, edited):
        path.write_text("1,2,3\n")
    hist = H(
        C(0, 1.0, writes="a", count=4, effects=(recorded_read(same),)),
        C(1, 1.0, writes="b", count=5, effects=(recorded_read(same), recorded_read(gone))),
        C(2, 1.0, writes="c", count=6, effects=(recorded_read(edited),)),
    )
    gone.unlink()
    edited.write_text("1,2,3,4\n")
    cells = planning.cells_for_plan(
        hist, inputs_on_target=False, file_problem=planning.file_problem_here
    )
    assert [c.safe for c in cells] == [True, False, False]
    assert str(gone) in cells[1].why and str(edited) in cells[2].why
    # An unpicklable value made from the changed file cannot come back; the reason says
    # which cell and which file.
    p = planning.plan_session(
        {"a": V(1000 * MB)},  # 20 s to store and load, 1 s to reread same.csv
        ["b", "c"],
        hist,
        SPEED,
        file_problem=planning.file_problem_here,
    )
    assert p.plan.recompute == ["a"] and p.plan.rerun_cells == [0]
    assert "In[5]" in p.plan.infeasible["b"] and str(gone) in p.plan.infeasible["b"]
    assert "In[6]" in p.plan.infeasible["c"] and str(edited) in p.plan.infeasible["c"]


# -- variables: costs and groups ------------------------------------------------------


def test_each_group_costs_its_upload_plus_weighted_download() -> None:
    pv, costs = planning.variables_for_plan({"x": V(200 * MB)}, [], SPEED, 3.0)
    assert list(costs) == ["~x"] and costs["~x"] == pytest.approx((2.0, 2.0, 0.0))
    (var,) = pv
    assert var.name == "x" and var.store_cost == pytest.approx(2.0 + 3 * 2.0) and var.group == ""


def test_unpickling_counts_as_load_and_verification_as_a_discount() -> None:
    ref = V(200 * MB)
    ref.encode_seconds = 1.5  # an object-heavy value: slow to unpickle
    ref.fingerprint_seconds = 0.5  # what a recompute pays to verify it
    pv, costs = planning.variables_for_plan({"x": ref}, [], SPEED, 1.0)
    assert costs["~x"] == pytest.approx((2.0, 3.5, 0.5))
    # Recomputing fingerprints it twice: at checkpoint and after the rerun.
    assert pv[0].store_cost == pytest.approx(2.0 + 3.5 - 2 * 0.5)
    pv, _ = planning.variables_for_plan({"x": ref}, [], SPEED, 0.5)
    assert pv[0].store_cost == pytest.approx(2.0 + 0.5 * 3.5 - 1.5 * 0.5)
    # Verification dearer than storing and loading: storing costs nothing extra.
    ref.fingerprint_seconds = 10.0
    pv, _ = planning.variables_for_plan({"x": ref}, [], SPEED, 1.0)
    assert pv[0].store_cost == 0.0


def test_co_variables_cost_once_and_are_tied() -> None:
    # The recorder puts a group's size on its first member only.
    variables = {"model": V(300 * MB, "p1"), "opt": V(0, "p1"), "solo": V(MB)}
    pv, costs = planning.variables_for_plan(variables, [], SPEED, 1.0)
    assert set(costs) == {"p1", "~solo"}
    assert costs["p1"] == pytest.approx((3.0, 3.0, 0.0))
    by_name = {v.name: v for v in pv}
    assert by_name["model"].group == by_name["opt"].group == "p1"
    assert by_name["solo"].group == ""
    assert by_name["model"].store_cost + by_name["opt"].store_cost == pytest.approx(6.0)
    assert 0.0 in (by_name["model"].store_cost, by_name["opt"].store_cost)


def test_tied_co_variables_are_stored_or_recomputed_together() -> None:
    hist = H(C(0, 50.0, writes="a"), C(1, 1.0, writes="b"))
    apart = {"a": V(5 * MB), "b": V(5000 * MB)}
    p = planning.plan_session(apart, [], hist, SPEED)
    assert p.plan.store == ["a"] and p.plan.recompute == ["b"]
    together = {"a": V(5000 * MB, "p0"), "b": V(0, "p0")}  # 100 s to store, 51 s to rerun
    p = planning.plan_session(together, [], hist, SPEED)
    assert sorted(p.plan.recompute) == ["a", "b"] and p.plan.rerun_cells == [0, 1]
    assert p.stored_groups == set() and p.predicted_checkpoint_seconds == 0.0
    assert p.predicted_restore_seconds == pytest.approx(51.0)


def test_a_stored_group_is_predicted_once() -> None:
    hist = H(C(0, 500.0, writes="a b"))
    variables = {"a": V(100 * MB, "p0"), "b": V(0, "p0")}
    p = planning.plan_session(variables, [], hist, SPEED)
    assert sorted(p.plan.store) == ["a", "b"] and p.stored_groups == {"p0"}
    assert p.predicted_checkpoint_seconds == pytest.approx(1.0)
    assert p.predicted_restore_seconds == pytest.approx(1.0)


def test_an_already_stored_pod_digest_costs_no_upload() -> None:
    hist = H(C(0, 500.0, writes="table"))
    variables = {"table": V(400 * MB, fp=b"\x01" * 16)}
    fresh = planning.plan_session(variables, [], hist, SPEED)
    reused = planning.plan_session(
        variables, [], hist, SPEED, already_stored={"table": b"\x01" * 16}
    )
    assert fresh.plan.store == reused.plan.store == ["table"]
    assert fresh.predicted_checkpoint_seconds == pytest.approx(4.0)
    assert reused.predicted_checkpoint_seconds == 0.0
    assert reused.predicted_restore_seconds == fresh.predicted_restore_seconds == pytest.approx(4)


def test_only_a_matching_fingerprint_for_every_member_skips_the_upload() -> None:
    variables = {"a": V(100 * MB, "p0", fp=b"A"), "b": V(0, "p0", fp=b"B"), "c": V(MB)}
    _, costs = planning.variables_for_plan(
        variables, [], SPEED, 1.0, already_stored={"a": b"A", "b": b"B"}
    )
    assert costs["p0"][0] == 0.0
    _, costs = planning.variables_for_plan(
        variables, [], SPEED, 1.0, already_stored={"a": b"A", "b": b"old"}
    )
    assert costs["p0"][0] == pytest.approx(1.0)
    # A value without a fingerprint is never taken as already stored.
    _, costs = planning.variables_for_plan(variables, [], SPEED, 1.0, already_stored={"c": b""})
    assert costs["~c"][0] == pytest.approx(0.01)


def test_a_cheap_upload_tips_the_balance_towards_storing() -> None:
    hist = H(C(0, 10.0, writes="emb"))
    variables = {"emb": V(500 * MB, fp=b"e")}
    # Weight 0.5: 5 s up + 0.5 x 5 s down = 7.5 s against 0.5 x 10 s = 5 s of rerun...
    p = planning.plan_session(variables, [], hist, SPEED, restore_weight=0.5)
    assert p.plan.recompute == ["emb"]
    # ...but with the pod already in the store, 2.5 s against 5 s.
    p = planning.plan_session(
        variables, [], hist, SPEED, restore_weight=0.5, already_stored={"emb": b"e"}
    )
    assert p.plan.store == ["emb"]


@pytest.mark.parametrize("type_name", ["function", "type"])
def test_definitions_are_always_stored(type_name: str) -> None:
    hist = H(C(0, 0.001, writes="thing"))
    p = planning.plan_session({"thing": V(2000 * MB, type_name=type_name)}, [], hist, SPEED)
    assert p.plan.store == ["thing"] and p.plan.rerun_cells == []


def test_a_group_holding_a_definition_still_predicts_its_data_upload() -> None:
    # `def score(x, table=TABLE)`: the function and the dict share objects, so they
    # form one pod; the pod is always stored, and its 300 MB still take 3 s to upload.
    hist = H(C(0, 0.01, writes="TABLE"), C(1, 0.001, reads="TABLE", writes="score"))
    variables = {"TABLE": V(300 * MB, "p0"), "score": V(0, "p0", type_name="function")}
    p = planning.plan_session(variables, [], hist, SPEED)
    assert sorted(p.plan.store) == ["TABLE", "score"] and p.stored_groups == {"p0"}
    assert p.predicted_checkpoint_seconds == pytest.approx(3.0)
    assert p.predicted_restore_seconds == pytest.approx(3.0)


# -- unserializable values ------------------------------------------------------------


def test_unserializable_values_are_recomputed_or_infeasible_naming_the_cell() -> None:
    hist = H(
        C(0, 2.0, writes="gen", count=3),
        C(1, 0.1, writes="sock", count=7, unsafe="it opens a network connection (db:5432)"),
    )
    p = planning.plan_session({}, ["gen", "sock", "orphan"], hist, SPEED)
    assert p.plan.recompute == ["gen"] and p.plan.rerun_cells == [0]
    assert set(p.plan.infeasible) == {"sock", "orphan"}
    assert "In[7]" in p.plan.infeasible["sock"] and "db:5432" in p.plan.infeasible["sock"]
    assert "no recorded cell" in p.plan.infeasible["orphan"]
    assert p.predicted_restore_seconds == pytest.approx(2.0)


def test_store_all_reruns_nothing() -> None:
    hist = H(C(0, 0.001, writes="zeros"), C(1, 1.0, writes="gen", count=4))
    variables = {"zeros": V(8000 * MB)}
    p = planning.plan_session(variables, ["gen"], hist, SPEED)
    assert p.plan.recompute == ["zeros", "gen"] and p.plan.rerun_cells == [0, 1]
    p = planning.plan_session(variables, ["gen"], hist, SPEED, store_all=True)
    assert p.plan.store == ["zeros"] and p.plan.recompute == [] and p.plan.rerun_cells == []
    assert "In[4]" in p.plan.infeasible["gen"] and "--store-all" in p.plan.infeasible["gen"]
    assert p.predicted_checkpoint_seconds == pytest.approx(80.0)
    assert p.predicted_restore_seconds == pytest.approx(80.0)


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_restore_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="restore weight"):
        planning.plan_session({}, [], H(), SPEED, restore_weight=weight)


def test_restore_weight_trades_checkpoint_for_restore_time() -> None:
    hist = H(C(0, 4.0, writes="x"))
    variables = {"x": V(100 * MB)}  # 1 s up + w x 1 s down against w x 4 s of rerun
    assert planning.plan_session(variables, [], hist, SPEED, restore_weight=0.1).plan.recompute
    assert planning.plan_session(variables, [], hist, SPEED, restore_weight=1.0).plan.store


# -- the classic trade-off, and the figures people see --------------------------------


def _notebook() -> tuple[dict[str, pb.VariableRef], pb.History]:
    hist = H(
        C(0, 0.2, writes="np", count=1),
        C(1, 0.5, reads="np", writes="zeros", count=12),  # np.zeros(10**9): big, cheap
        C(2, 600.0, reads="zeros", writes="result", count=15),  # slow, small result
    )
    return {"zeros": V(8000 * MB), "result": V(1000)}, hist


def test_a_large_cheap_variable_is_recomputed_and_a_slow_small_result_stored() -> None:
    variables, hist = _notebook()
    p = planning.plan_session(variables, [], hist, SPEED)
    assert p.plan.recompute == ["zeros"] and p.plan.store == ["result"]
    assert p.plan.rerun_cells == [1]  # np is current: loaded, not reproduced
    assert p.predicted_checkpoint_seconds == pytest.approx(SPEED.write_seconds(1000))
    assert p.predicted_restore_seconds == pytest.approx(SPEED.read_seconds(1000) + 0.5)


def test_report_names_cells_by_execution_count() -> None:
    variables, hist = _notebook()
    report = planning.plan_session(variables, [], hist, SPEED, restore_weight=2.0).report()
    assert report["rerun_cells"] == [12]
    assert report["recompute"] == ["zeros"] and report["store"] == ["result"]
    assert report["infeasible"] == {}
    assert report["restore_weight"] == 2.0 and report["inputs_on_target"] is False
    assert report["predicted_restore_seconds"] == 0.5  # seconds, not weighted; rounded
    assert set(report) == {
        "store",
        "recompute",
        "rerun_cells",
        "infeasible",
        "predicted_checkpoint_seconds",
        "predicted_restore_seconds",
        "restore_weight",
        "inputs_on_target",
    }


def test_to_pb_round_trips() -> None:
    hist = H(
        C(0, 0.5, writes="zeros", count=2),
        C(1, 600.0, reads="zeros", writes="result", count=3),
        C(2, 1.0, writes="gen", count=5),
        C(3, 0.1, writes="conn", count=8, unsafe="it opens a network connection (api)"),
    )
    variables = {"zeros": V(8000 * MB), "result": V(1000)}
    planned = planning.plan_session(
        variables, ["gen", "conn"], hist, SPEED, restore_weight=1.5, inputs_on_target=True
    )
    msg = pb.Plan.FromString(planned.to_pb().SerializeToString())
    assert list(msg.stored) == planned.plan.store == ["result"]
    assert list(msg.recomputed) == planned.plan.recompute == ["zeros", "gen"]
    assert list(msg.rerun_cells) == planned.plan.rerun_cells == [0, 2]
    assert {(s.name, s.reason) for s in msg.infeasible} == set(planned.plan.infeasible.items())
    assert [s.name for s in msg.infeasible] == ["conn"] and "In[8]" in msg.infeasible[0].reason
    assert msg.predicted_checkpoint_seconds == pytest.approx(planned.predicted_checkpoint_seconds)
    assert msg.predicted_restore_seconds == pytest.approx(planned.predicted_restore_seconds)
    assert msg.restore_weight == 1.5 and msg.inputs_on_target


def test_an_empty_session_plans_nothing() -> None:
    p = planning.plan_session({}, [], H())
    assert p.plan.store == p.plan.recompute == p.plan.rerun_cells == []
    assert p.report()["rerun_cells"] == [] and p.predicted_checkpoint_seconds == 0.0


# -- scale ------------------------------------------------------------------------------


def test_two_thousand_recorded_cells_with_three_hundred_variables_plan() -> None:
    rng = random.Random(3)
    names = [f"v{i}" for i in range(300)]
    cells = []
    for i in range(2000):
        effects = (read_effect(f"/data/{i}.csv", 100),) if rng.random() < 0.05 else ()
        unsafe = "it writes out.csv" if rng.random() < 0.03 else ""
        cells.append(
            C(
                i,
                rng.random() * 5,
                " ".join(rng.sample(names, 3)),
                " ".join(rng.sample(names, 2)),
                count=i + 10,
                unsafe=unsafe,
                effects=effects,
            )
        )
    hist = H(*cells)
    written = sorted({n for c in cells for n in c.writes})
    unserializable = written[::25]
    variables = {
        n: V(rng.randint(1, 10**9), f"g{i // 4}" if i < 100 else "", fp=n.encode())
        for i, n in enumerate(written)
        if n not in unserializable
    }
    planned = planning.plan_session(
        variables,
        unserializable,
        hist,
        SPEED,
        already_stored={n: n.encode() for n in written[::10]},
    )
    p = planned.plan
    assert set(p.store) | set(p.recompute) | set(p.infeasible) == set(written)
    assert not set(p.store) & set(p.recompute)
    assert not set(p.store) & set(unserializable)
    safe = {c.index for c in cells if not c.unsafe and not c.side_effects}
    assert set(p.rerun_cells) <= safe and p.rerun_cells == sorted(p.rerun_cells)
    report = planned.report()
    assert report["rerun_cells"] == [i + 10 for i in p.rerun_cells]
    assert list(pb.Plan.FromString(planned.to_pb().SerializeToString()).stored) == p.store
    assert INF not in (planned.predicted_checkpoint_seconds, planned.predicted_restore_seconds)
