"""The `nbferry` command line.

Exit codes: 0 success, 1 the operation failed (the message says why and what
to do), 2 the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbferry.migrator.errors import KernelError
from nbferry.migrator.report import checkpoint_summary, human_size, render_show, table
from nbferry.storage import (
    CheckpointRef,
    Store,
    StoreError,
    default_store_url,
    open_store,
    parse_options,
)
from nbferry.storage.store import nbferry_version

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL: file:///path, s3://bucket/prefix, memory://name, ... "
        "(default: $NBFERRY_STORE, else a folder under your user data directory)",
    )
    parser.add_argument(
        "--store-option",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="fsspec option for the store, repeatable (e.g. endpoint_url=http://host:9000, "
        "anon=true, profile=dev)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _open(args: argparse.Namespace) -> Store:
    return open_store(args.store or default_store_url(), parse_options(args.store_option))


def cmd_list(args: argparse.Namespace) -> int:
    store = _open(args)
    refs = store.list_checkpoints(args.session)
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda ref: _list_row(store, ref), refs))
    if args.json:
        _print_json({"store": store.url, "checkpoints": rows})
        return EXIT_OK
    if not rows:
        where = f" for session {args.session!r}" if args.session else ""
        print(f"no checkpoints in {store.url}{where}")
        return EXIT_OK
    print(
        table(
            [
                (
                    r["checkpoint_id"],
                    r["session_id"],
                    r["created"][:19].replace("T", " "),
                    str(r.get("variables", "?")),
                    human_size(r["raw_bytes"]) if "raw_bytes" in r else "?",
                    human_size(r["stored_bytes"]) if "stored_bytes" in r else "?",
                    r.get("message") or (f"UNREADABLE: {r['error']}" if "error" in r else ""),
                )
                for r in rows
            ],
            ("CHECKPOINT", "SESSION", "CREATED (UTC)", "VARS", "RAW", "STORED", "MESSAGE"),
        )
    )
    return EXIT_OK


def _list_row(store: Store, ref: CheckpointRef) -> dict[str, Any]:
    row: dict[str, Any] = {
        "checkpoint_id": ref.checkpoint_id,
        "session_id": ref.session_id,
        "created": ref.created.isoformat().replace("+00:00", "Z"),
    }
    try:
        manifest = store.read_manifest(ref, verify=False)
    except StoreError as exc:  # one damaged checkpoint must not hide the others
        row["error"] = str(exc)
        return row
    row.update(
        variables=len(manifest.variables),
        raw_bytes=manifest.stats.raw_bytes,
        stored_bytes=manifest.stats.stored_bytes,
        parent_checkpoint_id=manifest.parent_checkpoint_id or None,
        message=manifest.message,
    )
    return row


def cmd_show(args: argparse.Namespace) -> int:
    store = _open(args)
    ref = store.resolve(args.checkpoint, args.session)
    manifest = store.read_manifest(ref, verify=False)
    summary = checkpoint_summary(manifest)
    signature = store.signature_status(ref)
    summary["signature"] = signature
    summary["store"] = store.url
    if args.json:
        _print_json(summary)
    else:
        print(render_show(summary, signature))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from nbferry.agent.report import render_plan

    if args.kernel:
        if args.checkpoint:
            raise ValueError("give a CHECKPOINT or --kernel, not both")
        report = _plan_in_kernel(args)
    else:
        report = _plan_from_checkpoint(args)
    if args.json:
        _print_json(report)
    else:
        where = report.get("checkpoint_id") or f"kernel {args.kernel}"
        print(f"plan for {where}:\n{render_plan(report)}")
    return EXIT_OK


def _plan_in_kernel(args: argparse.Namespace) -> dict[str, Any]:
    from nbferry.migrator.kernels import Kernel

    line = ["plan", "--restore-weight", str(args.restore_weight)]
    if args.inputs_on_target:
        line.append("--inputs-on-target")
    if args.store_all:
        line.append("--store-all")
    if args.store:
        line += ["--store", args.store]
    if args.session:
        line += ["--session", args.session]
    kernel = Kernel.attach(args.kernel)
    try:
        return kernel.magic(" ".join(line))
    finally:
        kernel.kc.stop_channels()


def _plan_from_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Plan again from a checkpoint's manifest, with this store's measured speed."""
    from nbferry.agent import planning
    from nbferry.storage.speed import store_speed

    store = _open(args)
    ref = store.resolve(args.checkpoint or "latest", args.session)
    manifest = store.read_manifest(ref)
    stored_pods = {p.id for p in manifest.pods}
    planned = planning.plan_session(
        manifest.variables,
        [s.name for s in manifest.skipped],
        manifest.history,
        store_speed(store),
        restore_weight=args.restore_weight,
        inputs_on_target=args.inputs_on_target,
        store_all=args.store_all,
        already_stored={
            n: r.digest for n, r in manifest.variables.items() if r.pod_id in stored_pods
        },
        file_problem=planning.file_problem_here if args.here else None,
    )
    report = planned.report()
    report["checkpoint_id"] = manifest.checkpoint_id
    report["at_checkpoint"] = {
        "stored": list(manifest.plan.stored),
        "recomputed": list(manifest.plan.recomputed),
    }
    return report


def cmd_demo(args: argparse.Namespace) -> int:
    from nbferry.migrator.demo import render, run_demo

    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    result = run_demo(_open(args), log=log)
    if args.json:
        _print_json(result)
    else:
        print(render(result))
    return EXIT_OK if result["ok"] else EXIT_FAILED


def cmd_install(args: argparse.Namespace) -> int:
    from nbferry.migrator.install import install, uninstall

    if args.command == "install":
        path = install(args.prefix)
        result = {"installed": True, "path": str(path)}
        text = f"new kernels will load nbferry.agent (added {path}); undo: nbferry uninstall"
    else:
        changed = uninstall(args.prefix)
        result = {"installed": False, "path": str(changed) if changed else None}
        text = (
            f"removed nbferry.agent from {changed}"
            if changed
            else "nbferry was not installed there"
        )
    if args.json:
        _print_json(result)
    else:
        print(text)
    return EXIT_OK


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbferry",
        description="Move live Jupyter/IPython sessions between machines through object storage.",
    )
    parser.add_argument("--version", action="version", version=f"nbferry {nbferry_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list checkpoints in a store")
    p.add_argument("--session", metavar="ID", help="only this session's checkpoints")
    _store_args(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show one checkpoint: pods, sizes, chunks, sharing")
    p.add_argument("checkpoint", help="checkpoint id, a unique prefix of one, or 'latest'")
    p.add_argument("--session", metavar="ID", help="session for 'latest' or to narrow the prefix")
    _store_args(p)
    p.set_defaults(func=cmd_show)

    for name, text in (
        ("install", "make every new IPython kernel load the nbferry agent"),
        ("uninstall", "undo `nbferry install`"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--prefix",
            help="an environment prefix (e.g. sys.prefix of a JupyterHub image) instead of "
            "the current user's IPython profile",
        )
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        p.set_defaults(func=cmd_install)

    p = sub.add_parser(
        "plan",
        help="which variables to store and which cells to rerun, with predicted times",
        description="Plan from a checkpoint's recorded history (CHECKPOINT), or ask a running "
        "kernel's agent (--kernel). Variables that can be neither stored nor recomputed are "
        "listed with the reason.",
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint id, unique prefix, or 'latest'")
    p.add_argument("--kernel", metavar="K", help="kernel id, unique prefix, or connection file")
    p.add_argument("--session", metavar="ID", help="session for 'latest'")
    p.add_argument(
        "--restore-weight",
        type=float,
        default=1.0,
        help="seconds of restore worth one second of checkpoint (default 1; higher stores more)",
    )
    p.add_argument(
        "--inputs-on-target",
        action="store_true",
        help="the target sees the files the session read (same host, shared home)",
    )
    p.add_argument(
        "--here",
        action="store_true",
        help="plan a restore on this host: check the files cells read are here, unchanged",
    )
    p.add_argument("--store-all", action="store_true", help="store everything, rerun nothing")
    _store_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "demo", help="run a sample notebook in a kernel and move its session to a fresh kernel"
    )
    _store_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (StoreError, KernelError) as exc:
        print(f"nbferry: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # bad option values, session ids, ...
        print(f"nbferry: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nbferry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
