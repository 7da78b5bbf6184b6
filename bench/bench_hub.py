"""A Jupyter server with several big kernels: how long it takes to stop with the nbferry
extension (against without), and how long opening the notebooks on a fresh server takes
to give the variables back (against re-running the notebooks there).

    .venv/bin/python bench/bench_hub.py                 # 5 kernels of ~200 MiB, local store
    .venv/bin/python bench/bench_hub.py --s3            # the store on a moto S3 server
    .venv/bin/python bench/bench_hub.py --kernels 2 --mib 50 --reps 1   # quick check

Every run is real: `jupyter server` processes with the extension enabled by
`nbferry install --jupyter-server` in a throwaway HOME, kernels created over the
REST API (as JupyterLab does), SIGTERM to stop, and a second server in another
folder that opens the same notebook paths. Each notebook builds its state in
cells of realistic cost: a seeded random draw, a sort, quantiles, and a slow
pure-Python reduction (about 4 s of compute per notebook on the 2-core VM).
Times are wall-clock medians over --reps; each baseline runs in the same
repetition as the step it is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.blocking import BlockingKernelClient

from nbferry.migrator.jupyter import JupyterServer

BIN = Path(sys.executable).parent
TOKEN = "bench-hub-token"


def cells(i: int, mib: int) -> list[str]:
    """A notebook with about `mib` MiB of state: half raw draws, half derived."""
    n = mib * 2**20 // 8 // 2
    return [
        "import numpy as np",
        f"rng = np.random.default_rng({i})\nx = rng.standard_normal({n})",
        "xs = np.sort(x)",
        "q = np.quantile(xs, np.linspace(0, 1, 101))",
        "total = sum((k * 7919) % 104729 for k in range(12_000_000))",  # slow, tiny result
    ]


def check(i: int) -> str:
    return "[float(xs[0]), len(x), float(q[50]), total]"


class Server:
    def __init__(self, home: Path, work: Path, env: dict[str, str], extension: bool) -> None:
        self.work = work
        port = _free_port()
        self.log = open(home / f"server-{port}.log", "w")  # noqa: SIM115
        args = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
                "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", "--allow-root",
                f"--ServerApp.root_dir={work}", f"--IdentityProvider.token={TOKEN}",
                "--NbferryExtension.stop_deadline=600"]  # fmt: skip
        if not extension:
            args.append("--ServerApp.jpserver_extensions=nbferry.migrator.server_extension=False")
        self.proc = subprocess.Popen(args, env=env, cwd=work, stdout=self.log, stderr=self.log)
        self.api = JupyterServer(f"http://127.0.0.1:{port}", TOKEN)
        self.runtime = Path(env["JUPYTER_RUNTIME_DIR"])
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api.sessions()
                return
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"server did not start; see {self.log.name}") from None
                time.sleep(0.1)

    def open(self, notebook: str) -> str:
        _, kernel_id = self.api.start_session(notebook)
        return str(self.runtime / f"kernel-{kernel_id}.json")

    def stop(self) -> float:
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(900)
        self.log.close()
        return time.perf_counter() - started


def run(connection: str, code: str, expr: str | None = None) -> Any:
    wait_agent(connection)  # the kernel is up (its agent wrote its discovery file)
    context = zmq.Context()  # one per thread: clients in parallel threads must not share one
    client = BlockingKernelClient(connection_file=connection, context=context)
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        uexp = {"r": f"__import__('json').dumps({expr})"} if expr else {}
        reply = client.execute_interactive(code, user_expressions=uexp, timeout=900)
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"cell failed: {content.get('ename')}: {content.get('evalue')}")
        if expr:
            r = content["user_expressions"]["r"]
            if r["status"] != "ok":
                return None
            return json.loads(eval(r["data"]["text/plain"]))  # a repr of a JSON string
    finally:
        client.stop_channels()
        context.term()
    return None


def wait_agent(connection: str) -> None:
    found = Path(connection).with_name(Path(connection).stem + ".nbferry.json")
    deadline = time.monotonic() + 60
    while not found.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the agent did not start")
        time.sleep(0.05)


def parallel(fn: Callable[[int], Any], n: int) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def one_rep(root: Path, env: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    k, mib = args.kernels, args.mib
    out: dict[str, float] = {}
    expected: list[Any] = []
    for extension in (False, True):  # the baseline first: same work, no saving
        a = root / ("a-ext" if extension else "a-plain")
        a.mkdir()
        server = Server(root, a, env, extension)
        conns = [server.open(f"nb{i}.ipynb") for i in range(k)]
        for c in conns:
            wait_agent(c)
        t0 = time.perf_counter()
        expected = parallel(lambda i, c=conns: run(c[i], "\n".join(cells(i, mib)), check(i)), k)
        out["build_all" if extension else "build_all_plain"] = time.perf_counter() - t0
        out["stop_with_extension" if extension else "stop_without"] = server.stop()

    # A fresh server in another folder: opening the notebooks restores them ...
    b = root / "b"
    b.mkdir()
    server = Server(root, b, env, True)
    t0 = time.perf_counter()
    conns = parallel(lambda i: server.open(f"nb{i}.ipynb"), k)
    got = parallel(lambda i: _wait_value(conns[i], check(i)), k)
    out["open_restore_all"] = time.perf_counter() - t0
    if got != expected:
        raise RuntimeError(f"restored values differ: {got} != {expected}")
    server.stop()
    # ... against opening them on a server without checkpoints and re-running every cell.
    c = root / "c"
    c.mkdir()
    plain_env = {**env, "NBFERRY_STORE": (root / "empty-store").as_uri()}
    server = Server(root, c, plain_env, True)
    t0 = time.perf_counter()
    conns = parallel(lambda i: server.open(f"nb{i}.ipynb"), k)
    got = parallel(lambda i: run(conns[i], "\n".join(cells(i, mib)), check(i)), k)
    out["open_rerun_all"] = time.perf_counter() - t0
    assert got == expected
    server.stop()
    return out


def _wait_value(connection: str, expr: str) -> Any:
    deadline = time.monotonic() + 900
    while (value := run(connection, "", expr)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("variables never came back")
        time.sleep(0.1)
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", type=int, default=5)
    p.add_argument("--mib", type=int, default=200, help="state per kernel, MiB")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--s3", action="store_true", help="store on a moto S3 server")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()

    base = Path(tempfile.mkdtemp(prefix="nbferry-bench-hub-"))
    moto = None
    env = {
        **os.environ,
        "HOME": str(base / "home"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "NBFERRY_SIGNING_KEY": "bench-hub",
        "NBFERRY_SPEED_CACHE": str(base / "speed"),
        "JUPYTERHUB_USER": "bench",
    }
    for sub in ("home", "runtime"):
        (base / sub).mkdir()
    out = subprocess.run([BIN / "nbferry", "install", "--jupyter-server"], env=env, text=True,
                         capture_output=True)  # fmt: skip
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return 1
    runs = []
    try:
        for rep in range(args.reps):
            root = base / f"rep{rep}"
            root.mkdir()
            if args.s3:
                import boto3
                from moto.server import ThreadedMotoServer

                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    os.environ.setdefault(key, "bench")  # moto takes any
                    env.setdefault(key, os.environ[key])
                if moto is None:
                    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                    moto.start()
                host, port = moto.get_host_and_port()
                endpoint = f"http://{host}:{port}"
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
                    Bucket=f"hub{rep}"
                )
                env.update(NBFERRY_STORE=f"s3://hub{rep}/ckpt", NBFERRY_S3_ENDPOINT_URL=endpoint)
            else:
                env["NBFERRY_STORE"] = (root / "store").as_uri()
            print(f"rep {rep + 1}/{args.reps} ...", file=sys.stderr, flush=True)
            runs.append(one_rep(root, env, args))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    finally:
        if moto is not None:
            moto.stop()
        if not os.environ.get("NBFERRY_BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)

    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    store = "s3 (moto)" if args.s3 else "file://"
    print(f"## {args.kernels} kernels x {args.mib} MiB, store {store}, median of {len(runs)}\n")
    print("| step | seconds | baseline | seconds | ratio |")
    print("|---|---:|---|---:|---:|")
    print(
        f"| stop server, extension saves every kernel | {med['stop_with_extension']:.2f} "
        f"| stop without extension | {med['stop_without']:.2f} "
        f"| {med['stop_with_extension'] / med['stop_without']:.1f}x |"
    )
    print(
        f"| open {args.kernels} notebooks, variables restored | {med['open_restore_all']:.2f} "
        f"| open and re-run every cell | {med['open_rerun_all']:.2f} "
        f"| {med['open_rerun_all'] / med['open_restore_all']:.2f}x faster |"
    )
    print(f"\n(building the state: {med['build_all']:.2f} s with the agent recording, "
          f"{med['build_all_plain']:.2f} s without saving at stop)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "median": med}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
