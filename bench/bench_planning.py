"""Benchmark: planning speed on long histories, and the recorder's cost per cell.

    .venv/bin/python bench/bench_planning.py            # both parts
    .venv/bin/python bench/bench_planning.py --reps 21  # more repetitions

Planning: `agent.planning.plan_session` (what `%nbferry plan` and `nbferry plan`
run: manifest facts -> min cut -> predictions) on synthetic histories of 2,000
recorded cell executions, in three shapes:

* ``random``: 300 variables; every cell reads 3 and writes 2 at random, 5% of
  cells unsafe, runtimes up to 1 s, sizes up to 100 MB, co-variable pairs;
* ``chain``: a notebook that keeps refining one frame (each cell reads the
  previous cell's output and writes a new one), 2,000 variables alive;
* ``fan``: one load cell, then 1,999 cells each deriving a variable from it.

Target (issue 4): under 200 ms for 2,000 cell executions.

Recorder: an in-process IPython shell runs each cell below `--cells` times
without the agent, then with it loaded; the median per-cell difference is the
recording overhead (target: under 1 ms for a trivial cell). The shell holds a
16 MB DataFrame and a 1,000-item list so the cells touch realistic values.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from contextlib import redirect_stdout

from nbferry.agent import planning
from nbferry.storage.speed import StoreSpeed
from nbferry.v1 import manifest_pb2 as pb

SPEED = StoreSpeed(300e6, 600e6, 0.005)


def history_random(rng: random.Random) -> tuple[pb.History, dict[str, pb.VariableRef]]:
    names = [f"v{i}" for i in range(300)]
    hist = pb.History()
    for i in range(2000):
        cell = hist.cells.add(index=i, execution_count=i + 1, runtime_seconds=rng.random())
        cell.reads.extend(rng.sample(names, 3))
        cell.writes.extend(rng.sample(names, 2))
        if rng.random() < 0.05:
            cell.unsafe = "it writes out.csv"
    refs = {}
    for i, name in enumerate(names):
        group = f"p{i // 2}" if i % 10 < 2 else f"p{name}"  # some co-variable pairs
        refs[name] = pb.VariableRef(pod_id=group, size=rng.randrange(100_000_000), fingerprint=b"x")
    return hist, refs


def history_chain(rng: random.Random) -> tuple[pb.History, dict[str, pb.VariableRef]]:
    hist = pb.History()
    refs = {}
    for i in range(2000):
        cell = hist.cells.add(index=i, execution_count=i + 1, runtime_seconds=rng.random() / 10)
        if i:
            cell.reads.append(f"df{i - 1}")
        cell.writes.append(f"df{i}")
        refs[f"df{i}"] = pb.VariableRef(pod_id=f"p{i}", size=rng.randrange(10_000_000))
    return hist, refs


def history_fan(rng: random.Random) -> tuple[pb.History, dict[str, pb.VariableRef]]:
    hist = pb.History()
    hist.cells.add(index=0, execution_count=1, runtime_seconds=5.0, writes=["raw"])
    refs = {"raw": pb.VariableRef(pod_id="p", size=500_000_000)}
    for i in range(1, 2000):
        hist.cells.add(
            index=i, execution_count=i + 1, runtime_seconds=rng.random(), reads=["raw"],
            writes=[f"f{i}"],
        )  # fmt: skip
        refs[f"f{i}"] = pb.VariableRef(pod_id=f"p{i}", size=rng.randrange(50_000_000))
    return hist, refs


def bench_planning(reps: int) -> list[tuple[str, float, int, int]]:
    rows = []
    for shape, make in (("random", history_random), ("chain", history_chain), ("fan", history_fan)):
        hist, refs = make(random.Random(7))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            planned = planning.plan_session(refs, [], hist, SPEED, inputs_on_target=True)
            times.append(time.perf_counter() - t0)
        rows.append(
            (shape, statistics.median(times), len(planned.plan.store), len(planned.plan.recompute))
        )
    return rows


CELLS = [
    "x = 1",
    "y = xs[0] + 1",
    "xs.append(1); xs.pop()",
    "m = df['a'].sum()",
    "h = df.head()",
    "df.loc[0, 'a'] = 0",
]


def bench_recorder(n: int) -> list[tuple[str, float, float]]:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell(
        "import numpy as np, pandas as pd\n"
        "df = pd.DataFrame({'a': np.arange(1_000_000), 'b': np.ones(1_000_000)})\n"
        "xs = list(range(1000))"
    )

    def timed(code: str, runs: int) -> list[float]:
        times = []
        with redirect_stdout(io.StringIO()):
            for _ in range(runs):
                t0 = time.perf_counter()
                shell.run_cell(code, store_history=True)
                times.append(time.perf_counter() - t0)
        return times

    # Alternate blocks with and without the agent, so drift hits both alike.
    rows = []
    for code in CELLS:
        base: list[float] = []
        recorded: list[float] = []
        for _ in range(10):
            base += timed(code, n // 10)
            shell.run_line_magic("load_ext", "nbferry.agent")
            recorded += timed(code, n // 10)
            shell.run_line_magic("unload_ext", "nbferry.agent")
        rows.append((code, statistics.median(base), statistics.median(recorded)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--cells", type=int, default=300, help="runs of each recorder cell")
    args = parser.parse_args()

    print(f"## Planning 2,000 cell executions (median of {args.reps})\n")
    print("| history | plan ms | stored | recomputed | target < 200 ms |")
    print("|---|---:|---:|---:|---|")
    for shape, seconds, stored, recomputed in bench_planning(args.reps):
        ok = "PASS" if seconds < 0.2 else "FAIL"
        print(f"| {shape} | {seconds * 1e3:.1f} | {stored} | {recomputed} | {ok} |")

    print(f"\n## Recorder overhead per cell (median of {args.cells} runs, in-process shell)\n")
    print("| cell | without ms | with ms | overhead ms | target < 1 ms |")
    print("|---|---:|---:|---:|---|")
    for code, base, rec in bench_recorder(args.cells):
        over = rec - base
        ok = "PASS" if over < 1e-3 else "FAIL"
        print(f"| `{code}` | {base * 1e3:.3f} | {rec * 1e3:.3f} | {over * 1e3:.3f} | {ok} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
