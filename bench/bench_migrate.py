"""Benchmark: what the control plane adds to moving a session.

    .venv/bin/python bench/bench_migrate.py                       # all six notebooks
    .venv/bin/python bench/bench_migrate.py --notebooks model_fit,simulation --reps 3

For each benchmark notebook (bench/notebooks), a source kernel with the agent
runs every cell, then the session is moved twice, each time into a fresh
kernel through a fresh, empty local store (nothing is deduplicated):

* direct: in one process, what a user could do by hand: the checkpoint cell
  (``%nbferry checkpoint``) in the source kernel, then a new kernel started
  with jupyter_client, ``%load_ext nbferry.agent``, and the restore cell;
* migrate: ``nbferry migrate --kernel K --to ADDR --json`` as a subprocess
  against a ``nbferry serve`` migrator on 127.0.0.1 (started beforehand):
  gRPC to the source kernel's agent, then to the migrator, which starts the
  kernel, loads the agent and restores through it. Reported twice: the
  command's wall time (including its own interpreter start and imports) and
  the `seconds` it reports (from its first call to the restored kernel).
  The migrator keeps one warm spare kernel (its default; ``--spare-kernels 0``
  for none); the benchmark waits for it to be ready before timing either
  method, so neither runs beside a kernel booting in the background.

Overhead = migrate / direct. Target (issue 5): at most 1.05x. The two methods
alternate order across repetitions; medians are reported. With
``--checkpoint-flags=--store-all`` both methods move the same plan, so only
the control plane differs (by default each plans for itself, and the store's
measured speed, refined after every transfer, can tip near-tie decisions).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbferry.migrator.kernels import Kernel, notebook_cells, shutdown_kernel
from nbferry.migrator.service import LocalMigrator

NOTEBOOKS = Path(__file__).with_name("notebooks")
NBFERRY = str(Path(sys.executable).with_name("nbferry"))


def direct(source: Kernel, store: str, cwd: Path, flags: str) -> float:
    started = time.perf_counter()
    source.run(f"_r = %nbferry checkpoint --store {store} --session direct {flags}")
    checkpoint_id = source.value("_r['checkpoint_id']")
    with Kernel(cwd) as target:
        target.run("%load_ext nbferry.agent")
        target.run(f"_r = %nbferry restore {checkpoint_id} --store {store}")
        elapsed = time.perf_counter() - started
        report = target.value("{k: len(_r[k]) for k in ('loaded', 'recomputed', 'lost')}")
    assert report["lost"] == 0, report
    return elapsed


def migrate(
    source: Kernel, store: str, address: str, env: dict[str, str], flags: str
) -> tuple[float, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [NBFERRY, "migrate", "--kernel", source.kernel_id, "--to", address,
         "--store", store, "--session", "migrate", "--json", *flags.split()],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    moved = json.loads(out.stdout)
    shutdown_kernel(moved["connection_file"])  # the restored kernel is not needed any more
    return wall, moved["seconds"]


def wait_for_spares(workdir: Path, count: int, timeout: float = 120) -> None:
    """Until the migrator (whose kernels start in `workdir`) has `count` spares serving."""
    from nbferry.migrator.agents import running_agents

    deadline = time.monotonic() + timeout
    while True:
        ready = 0
        for agent in running_agents():
            try:
                ready += os.readlink(f"/proc/{agent.pid}/cwd") == str(workdir)
            except OSError:
                continue
        if ready >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the migrator has {ready} of {count} spare kernels ready")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", default="")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument(
        "--checkpoint-flags",
        default="",
        help="options for both methods' checkpoint, e.g. '--store-all' so both move the "
        "same plan and only the control plane differs",
    )
    parser.add_argument(
        "--spare-kernels",
        type=int,
        default=1,
        help="the migrator's warm kernels (its default, 1); 0 starts each target kernel cold",
    )
    args = parser.parse_args()
    names = [n for n in args.notebooks.split(",") if n] or sorted(
        p.stem for p in NOTEBOOKS.glob("*.ipynb")
    )
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "NBFERRY_TOKEN": token}
    rows = []
    with tempfile.TemporaryDirectory(prefix="nbferry-bench-migrate-") as tmp:
        root = Path(tmp)
        (root / "migrator").mkdir()
        spares = ("--spare-kernels", str(args.spare_kernels))
        with LocalMigrator(
            (root / "unused").as_uri(), root / "migrator", *spares, env=env
        ) as migrator:
            for name in names:
                work = root / name
                work.mkdir()
                times: dict[str, list[float]] = {"direct": [], "migrate": [], "reported": []}
                with Kernel(work) as source:
                    source.run("%load_ext nbferry.agent")
                    for cell in notebook_cells(NOTEBOOKS / f"{name}.ipynb"):
                        source.run(cell, timeout=600)
                    for rep in range(args.reps):
                        order = ["direct", "migrate"] if rep % 2 == 0 else ["migrate", "direct"]
                        for method in order:
                            # Neither method is timed while a spare boots in the background.
                            wait_for_spares(root / "migrator", args.spare_kernels)
                            store = (root / f"{name}-{method}-{rep}").as_uri()
                            if method == "direct":
                                times["direct"].append(
                                    direct(source, store, work, args.checkpoint_flags)
                                )
                            else:
                                wall, reported = migrate(
                                    source, store, migrator.address, env, args.checkpoint_flags
                                )
                                times["migrate"].append(wall)
                                times["reported"].append(reported)
                med = {k: statistics.median(v) for k, v in times.items()}
                rows.append((name, med))
                print(
                    f"{name}: direct {med['direct']:.2f} s, migrate {med['migrate']:.2f} s "
                    f"(reported {med['reported']:.2f} s)",
                    file=sys.stderr,
                )
    flags = f", checkpoint flags: {args.checkpoint_flags}" if args.checkpoint_flags else ""
    print(
        f"## nbferry migrate vs direct checkpoint + restore ({args.reps} rep(s), medians{flags})\n"
    )
    print("| notebook | direct s | migrate s (wall) | ratio | migrate s (reported) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, med in rows:
        print(
            f"| {name} | {med['direct']:.2f} | {med['migrate']:.2f} | "
            f"{med['migrate'] / med['direct']:.2f}x | {med['reported']:.2f} | "
            f"{med['reported'] / med['direct']:.2f}x |"
        )
    total_d = sum(m["direct"] for _, m in rows)
    total_m = sum(m["migrate"] for _, m in rows)
    total_r = sum(m["reported"] for _, m in rows)
    print(
        f"| all | {total_d:.2f} | {total_m:.2f} | {total_m / total_d:.2f}x | "
        f"{total_r:.2f} | {total_r / total_d:.2f}x |"
    )
    print("\nTarget: migrate at most 1.05x direct.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
