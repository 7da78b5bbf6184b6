"""`nbferry demo`: run a sample notebook in a kernel, `migrate` it to a fresh kernel.

Everything is real: two migrators (`nbferry serve` processes on loopback
ports, one token), a source kernel whose agent checkpoints through gRPC, and a
target kernel the far migrator starts and restores into. The session travels
through the store. The table compares every variable's fingerprint in the two
kernels.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from nbferry.migrator.agents import find_agent
from nbferry.migrator.kernels import Kernel, notebook_cells
from nbferry.migrator.report import table
from nbferry.migrator.service import LocalMigrator, MigratorClient
from nbferry.storage import Store
from nbferry.v1 import agent_pb2 as apb
from nbferry.v1 import migrator_pb2 as mpb

SAMPLE = Path(__file__).with_name("samples") / "sales.ipynb"
DESCRIBE = (
    "__import__('nbferry.agent.describe', fromlist=['x'])"
    ".describe(get_ipython().user_ns, get_ipython().user_ns_hidden)"
)


def run_demo(store: Store, log: Any = print) -> dict[str, Any]:
    session = f"demo-{getpass.getuser()}"
    token = secrets.token_urlsafe(16)
    env = {**os.environ, "NBFERRY_TOKEN": token}
    with tempfile.TemporaryDirectory(prefix="nbferry-demo-") as tmp:
        source_dir, target_dir = Path(tmp, "source"), Path(tmp, "target")
        source_dir.mkdir()
        target_dir.mkdir()
        with (
            LocalMigrator(store.url, source_dir, env=env) as near,
            LocalMigrator(store.url, target_dir, env=env) as far,
        ):
            log(f"migrators: {near.address} (source side), {far.address} (target side)")
            log(f"source kernel in {source_dir}: running {SAMPLE.name}")
            with Kernel(source_dir) as source:
                source.run("%load_ext nbferry.agent")
                for cell in notebook_cells(SAMPLE):
                    source.run(cell)
                before = source.value(DESCRIBE)
                agent = find_agent(source.kernel_id)
                log(f"nbferry migrate: kernel {source.kernel_id[:8]} -> {far.address}")
                request = mpb.MigrateRequest(
                    source=mpb.AgentAddress(address=agent.address, token=agent.token),
                    target_migrator=far.address,
                    target_token=token,
                    checkpoint=apb.CheckpointRequest(
                        options=apb.PlanOptions(store_url=store.url, session_id=session),
                        message="demo",
                    ),
                )
                started = time.perf_counter()
                with MigratorClient(near.address, token) as client:
                    events = list(client.migrate(request, timeout=600))
                migrate_wall = time.perf_counter() - started
            checkpointed = next(e.checkpointed for e in events if e.HasField("checkpointed"))
            moved = next(e.restored for e in events if e.HasField("restored"))
            checkpoint = json.loads(checkpointed.report_json)
            restored = json.loads(moved.report.report_json)
            log(f"checkpoint {checkpoint['checkpoint_id']} written to {store.url}")
            log(f"target kernel {moved.kernel_id[:8]} in {target_dir}: {moved.connection_file}")
            target = Kernel.attach(moved.connection_file)
            try:
                after = target.value(DESCRIBE)
                check = target.value(
                    "[type(forecast) is Forecast, runs[0] is runs[1] is forecast, "
                    "bool(np.shares_memory(top, weights)), "
                    "bool(round(forecast.predict_total(features[:5]), 6) "
                    "== round(with_tax(model.predict(features[:5]).sum()), 6))]"
                )
            finally:
                target.kc.shutdown()  # the demo's target kernel goes with the demo
                target.kc.stop_channels()
    checkpoint_wall = checkpointed.seconds
    restore_wall = moved.seconds
    rows = []
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        same = b is not None and a is not None and b["fingerprint"] == a["fingerprint"]
        rows.append(
            {
                "name": name,
                "type": (b or a or {}).get("type", "?"),
                "source": b["summary"] if b else "-",
                "target": a["summary"] if a else "- (not restored)",
                "same": same,
                "note": "" if same or a else (b or {}).get("fingerprint", ""),
            }
        )
    stored = {r["name"] for r in rows if r["same"]}
    skipped = {s["name"] for s in checkpoint["skipped"]}
    return {
        "store": store.url,
        "session_id": session,
        "checkpoint": checkpoint,
        "restore": restored,
        "checkpoint_seconds": round(checkpoint_wall, 3),
        "restore_seconds": round(restore_wall, 3),
        "migrate_seconds": round(migrate_wall, 3),
        "kernel_id": moved.kernel_id,
        "variables": rows,
        "identity_checks": {
            "type(forecast) is Forecast": check[0],
            "runs[0] is runs[1] is forecast": check[1],
            "top is still a view of weights": check[2],
            "forecast.predict_total works": check[3],
        },
        # Everything is equal except what the checkpoint reported it could not store.
        "ok": all(check)
        and stored | skipped == set(before)
        and not restored["failed"]
        and not restored["differs"],
    }


def render(result: dict[str, Any]) -> str:
    ck, rs = result["checkpoint"], result["restore"]
    rows = [
        (
            r["name"],
            r["type"],
            r["source"],
            r["target"],
            "yes" if r["same"] else ("skipped" if r["note"] else "NO"),
        )
        for r in result["variables"]
    ]
    mib = 1 << 20
    lines = [
        "",
        table(rows, ("VARIABLE", "TYPE", "SOURCE KERNEL", "TARGET KERNEL", "SAME")),
        "",
        f"checkpoint {ck['checkpoint_id']}: {ck['raw_bytes'] / mib:.1f} MiB raw, "
        f"{ck['stored_bytes'] / mib:.1f} MiB stored, {result['checkpoint_seconds']:.2f} s",
        f"restore: {len(rs['loaded'])} names loaded, {len(rs['recomputed'])} recomputed "
        f"and verified, {len(rs['differs'])} differ, {len(rs['lost'])} lost, "
        f"{result['restore_seconds']:.2f} s (new kernel included)",
        f"nbferry migrate: {result['migrate_seconds']:.2f} s end to end",
    ]
    if rs["rerun_cells"]:
        cells = ", ".join(f"In[{n}]" for n in rs["rerun_cells"])
        lines.append(f"recomputed by rerunning {cells}: {', '.join(ck['recomputed'])}")
    for s in ck["skipped"]:
        lines.append(f"not stored: {s['name']} ({s['type']}): {s['reason']}")
    for name, ok in result["identity_checks"].items():
        lines.append(f"{'ok ' if ok else 'FAIL'} {name}")
    lines.append("session moved: all variables equal" if result["ok"] else "SESSION DIFFERS")
    lines.append(f"next: nbferry list; nbferry show latest --session {result['session_id']}")
    return "\n".join(lines)
