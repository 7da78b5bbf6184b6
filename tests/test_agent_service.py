"""AgentService in real kernels, over real gRPC on a Unix socket."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from nbferry.agent.service import discovery_file
from nbferry.migrator.agents import AgentClient, find_agent, result_of, running_agents
from nbferry.migrator.kernels import Kernel
from nbferry.storage import open_store
from nbferry.v1 import agent_pb2 as apb

ENV = {"PYTHONHASHSEED": "0"}


def wait_for_agent(kernel: Kernel, timeout: float = 20) -> AgentClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = AgentClient.for_kernel(kernel.kernel_id)
            client.describe(timeout=5)
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    with Kernel(tmp_path, ENV) as k:
        k.run("%load_ext nbferry.agent")
        yield k


@pytest.fixture
def agent(kernel: Kernel) -> Iterator[AgentClient]:
    client = wait_for_agent(kernel)
    yield client
    client.close()


def options(store: str, **kw: object) -> apb.PlanOptions:
    return apb.PlanOptions(store_url=store, session_id="svc", **kw)


def test_checkpoint_code_loads_in_the_background_and_file_stores_need_no_fsspec(
    kernel: Kernel, tmp_path: Path
) -> None:
    """The first %nbferry command should not pay ~0.1 s of imports with the kernel blocked."""
    from nbferry.agent import WARM_MODULES

    modules = f"[m for m in {list(WARM_MODULES)!r} if m not in __import__('sys').modules]"
    deadline = time.monotonic() + 20
    while kernel.value(modules) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernel.value(modules) == []
    # Warming binds nothing in the user's namespace.
    assert not [n for n in kernel.value("list(get_ipython().user_ns)") if "nbferry" in n]

    store = f"file://{tmp_path / 'store'}"
    kernel.run("x = [1, 2, 3]")
    kernel.run(f"r = %nbferry checkpoint --store {store} --session bg")
    kernel.run(f"r = %nbferry restore latest --store {store} --session bg")
    assert kernel.value("r['loaded']") == ["x"]
    assert kernel.value("'fsspec' in __import__('sys').modules") is False


def test_discovery_file_and_socket_are_private(kernel: Kernel, agent: AgentClient) -> None:
    info = find_agent(kernel.kernel_id)
    disc = discovery_file(info.connection_file)
    assert stat.S_IMODE(disc.stat().st_mode) == 0o600
    assert info.address.startswith("unix://")
    sock = Path(info.address.removeprefix("unix://"))
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert kernel.kernel_id in [a.kernel_id for a in running_agents()]
    assert json.loads(disc.read_text())["pid"] == kernel.value("__import__('os').getpid()")


def test_calls_without_the_token_run_nothing(
    kernel: Kernel, agent: AgentClient, tmp_path: Path
) -> None:
    store = (tmp_path / "store").as_uri()
    kernel.run("x = 1")
    address = find_agent(kernel.kernel_id).address
    for token in ("", "not-the-token"):
        channel = grpc.insecure_channel(address)
        from nbferry.v1 import agent_pb2_grpc

        stub = agent_pb2_grpc.AgentServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        with pytest.raises(grpc.RpcError) as err:
            result_of(
                stub.Checkpoint(
                    apb.CheckpointRequest(options=options(store)), metadata=metadata, timeout=10
                )
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stub.Describe(apb.DescribeRequest(), metadata=metadata, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
    assert open_store(store).list_checkpoints() == []


def test_describe_plan_checkpoint_restore(
    kernel: Kernel, agent: AgentClient, tmp_path: Path
) -> None:
    store = (tmp_path / "store").as_uri()
    kernel.run("import numpy as np")
    kernel.run("big = np.zeros((3000, 1000))")
    kernel.run("words = {'a', 'b'}\nopen('log.txt', 'w').write('unsafe to rerun')")
    described = agent.describe()
    sizes = {v.name: (v.type_name, v.size_bytes) for v in described.variables}
    assert sizes["big"] == ("numpy.ndarray", 24_000_000) and not described.busy
    assert described.kernel_id == kernel.kernel_id and described.history_length == 3

    plan = agent.plan(apb.PlanRequest(options=options(store)), timeout=60)
    assert "big" in plan.recompute and "words" in plan.store
    assert json.loads(plan.report_json)["rerun_cells"] == list(plan.rerun_cells)

    phases: list[str] = []
    result = result_of(
        agent.checkpoint(apb.CheckpointRequest(options=options(store), message="svc"), 60),
        lambda p: phases.append(p.phase),
    )
    assert phases[0] == "planning" and phases[-1] == "committed" and "uploading" in phases
    assert result.recomputed == ["big"] and "words" in result.stored
    assert json.loads(result.report_json)["checkpoint_id"] == result.checkpoint_id

    with Kernel(tmp_path, ENV) as target:
        target.run("%load_ext nbferry.agent")
        with wait_for_agent(target) as other:
            restored = result_of(
                other.restore(apb.RestoreRequest(store_url=store, checkpoint="latest",
                                                 session_id="svc"), 60)
            )  # fmt: skip
        assert restored.recomputed == ["big"] and "words" in restored.loaded
        assert dict(restored.lost) == {} and dict(restored.failed) == {}
        assert target.value("[float(big.sum()), sorted(words)]") == [0.0, ["a", "b"]]


def test_a_busy_kernel_answers_busy_then_interrupt_stops_the_cell(
    kernel: Kernel, agent: AgentClient, tmp_path: Path
) -> None:
    store = (tmp_path / "store").as_uri()
    kernel.run("x = 41")
    kernel.kc.execute("import time\nfor _ in range(600):\n    time.sleep(0.05)\nx = 42")
    time.sleep(0.5)
    assert agent.describe().busy
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        result_of(agent.checkpoint(apb.CheckpointRequest(options=options(store)), timeout=2))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "busy" in err.value.details() and time.monotonic() - started < 5
    # Nothing was written, and the withdrawn request never runs later either.
    time.sleep(0.3)
    assert open_store(store).list_checkpoints() == []

    result = result_of(
        agent.checkpoint(apb.CheckpointRequest(options=options(store), interrupt=True), 30)
    )
    assert result.checkpoint_id and kernel.value("x") == 41  # the loop never finished
    assert len(open_store(store).list_checkpoints()) == 1


def test_cancel_withdraws_a_waiting_checkpoint(
    kernel: Kernel, agent: AgentClient, tmp_path: Path
) -> None:
    store = (tmp_path / "store").as_uri()
    kernel.kc.execute("import time\ntime.sleep(3)")
    time.sleep(0.3)
    errors: list[grpc.RpcError] = []

    def call() -> None:
        try:
            result_of(
                agent.checkpoint(
                    apb.CheckpointRequest(options=options(store), operation_id="op-1"), 30
                )
            )
        except grpc.RpcError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    assert agent.cancel("op-1") is True
    thread.join(10)
    assert errors and errors[0].code() == grpc.StatusCode.CANCELLED
    assert agent.cancel("no-such-op") is False
    time.sleep(3)
    assert open_store(store).list_checkpoints() == []


def test_user_code_that_forks_keeps_working_and_the_agent_keeps_serving(
    kernel: Kernel, agent: AgentClient, tmp_path: Path
) -> None:
    kernel.run(
        "import multiprocessing as mp, os\n"
        "with mp.get_context('fork').Pool(2) as pool:\n"
        "    squares = pool.map(abs, [-1, -2, -3])\n"
        "del pool\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(7)\n"
        "status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])"
    )
    assert kernel.value("[squares, status]") == [[1, 2, 3], 7]
    assert {v.name for v in agent.describe().variables} >= {"squares", "status"}
    result = result_of(
        agent.checkpoint(apb.CheckpointRequest(options=options((tmp_path / "s").as_uri())), 60)
    )
    assert "squares" in result.stored
    # The forked children left the parent's discovery file alone.
    assert discovery_file(find_agent(kernel.kernel_id).connection_file).exists()
    assert os.path.exists(find_agent(kernel.kernel_id).address.removeprefix("unix://"))
