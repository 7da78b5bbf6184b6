"""`nbferry demo`: run a sample notebook in one kernel, move its session to a fresh kernel.

Both kernels are real (jupyter_client), in different working directories;
the session travels through the store. The table compares every variable's
fingerprint in the two kernels.
"""

from __future__ import annotations

import getpass
import tempfile
import time
from pathlib import Path
from typing import Any

from nbferry.migrator.kernels import Kernel, notebook_cells
from nbferry.migrator.report import table
from nbferry.storage import Store

SAMPLE = Path(__file__).with_name("samples") / "sales.ipynb"
DESCRIBE = (
    "__import__('nbferry.agent.describe', fromlist=['x'])"
    ".describe(get_ipython().user_ns, get_ipython().user_ns_hidden)"
)


def run_demo(store: Store, log: Any = print) -> dict[str, Any]:
    session = f"demo-{getpass.getuser()}"
    store_arg = f"--store {store.url}"
    with tempfile.TemporaryDirectory(prefix="nbferry-demo-") as tmp:
        source_dir, target_dir = Path(tmp, "source"), Path(tmp, "target")
        source_dir.mkdir()
        target_dir.mkdir()
        log(f"source kernel in {source_dir}: running {SAMPLE.name}")
        with Kernel(source_dir) as source:
            source.run("%load_ext nbferry.agent")
            for cell in notebook_cells(SAMPLE):
                source.run(cell)
            before = source.value(DESCRIBE)
            started = time.perf_counter()
            source.run(f"_ferry = %nbferry checkpoint {store_arg} --session {session} -m demo")
            checkpoint = source.value("dict(_ferry)")
            checkpoint_wall = time.perf_counter() - started
        log(f"checkpoint {checkpoint['checkpoint_id']} written to {store.url}")
        log(f"target kernel in {target_dir}: restoring")
        with Kernel(target_dir) as target:
            target.run("%load_ext nbferry.agent")
            started = time.perf_counter()
            target.run(f"_ferry = %nbferry restore {checkpoint['checkpoint_id']} {store_arg}")
            restore_wall = time.perf_counter() - started
            restored = target.value("dict(_ferry)")
            after = target.value(DESCRIBE)
            check = target.value(
                "[type(forecast) is Forecast, runs[0] is runs[1] is forecast, "
                "bool(np.shares_memory(top, weights)), "
                "bool(round(forecast.predict_total(features[:5]), 6) "
                "== round(with_tax(model.predict(features[:5]).sum()), 6))]"
            )
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
        f"{result['restore_seconds']:.2f} s",
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
