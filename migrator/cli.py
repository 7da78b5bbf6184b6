"""The `nbferry` command line.

Exit codes: 0 success, 1 the operation failed (the message says why and what
to do), 2 the command line was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbferry.agent.report import human_size
from nbferry.migrator.errors import KernelError
from nbferry.storage import StoreError, default_store_url, nbferry_version, parse_options
from nbferry.storage.location import file_url

if TYPE_CHECKING:
    from nbferry.storage import CheckpointRef, Store

# The store, protobuf reports and gRPC are imported by the commands that use them:
# `nbferry migrate` and friends start faster without fsspec and s3fs.

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


LOCAL_SCHEMES = ("file", "local")  # fsspec's names for the local filesystem


def store_url(text: str) -> str:
    """A --store value as kernels and migrators must get it: local paths absolute.

    A relative path (or file: URL) means a folder below the caller's working
    directory, but it is used by a kernel or migrator that runs in another one;
    so every local form fsspec accepts (a plain path, ~/x, file:x, file://x,
    file:///x, local://x) becomes file:// + an absolute posix path (file_url,
    as for the default store). Other URLs (s3://, memory://, chained a::b) are kept.
    """
    if "::" in text:
        return text
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in LOCAL_SCHEMES:
            return text
        path = rest
    elif text[:5].lower() == "file:":
        path = text[5:]  # file:/abs or file:rel, which fsspec reads as local paths too
    else:
        path = text
    return file_url(Path(os.path.abspath(os.path.expanduser(path))))


def is_local_store(url: str) -> bool:
    """Whether a store URL names a folder on this machine (after store_url)."""
    return store_url(url).startswith("file://")


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        type=store_url,
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
    from nbferry.storage import open_store

    return open_store(args.store or default_store_url(), parse_options(args.store_option))


def cmd_list(args: argparse.Namespace) -> int:
    from nbferry.migrator.report import table

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
    from nbferry.migrator.report import checkpoint_summary, render_show

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


def cmd_gc(args: argparse.Namespace) -> int:
    from nbferry.storage.gc import collect, human_duration
    from nbferry.storage.retention import Policy

    store = _open(args)
    keep = (args.keep_last, args.keep_hourly, args.keep_daily)
    policy = Policy(*(k or 0 for k in keep)) if any(k is not None for k in keep) else None

    from nbferry.migrator.progress import Progress

    bar = Progress("gc", counts=True)  # silent unless stderr is a terminal

    def progress(phase: str, done: int, total: int) -> None:
        bar.label = phase
        bar(done, total)

    report = collect(
        store,
        grace=args.grace,
        dry_run=args.dry_run,
        policy=policy,
        progress=None if args.json else progress,
    )
    bar.close()
    for warning in report.warnings:
        print(f"nbferry: warning: {warning}", file=sys.stderr)
    if args.json:
        _print_json(report.to_json())
        return EXIT_OK
    r, would = report, "would be " if report.dry_run else ""
    lines = [f"garbage collection of {store.url}{' (dry run: nothing changed)' * r.dry_run}:"]
    if r.policy:
        lines.append(
            f"  checkpoints {would}deleted by retention ({r.policy}): {r.manifests_deleted}"
        )
    lines += [
        f"  unused blobs {would}moved to the trash: {r.blobs_trashed} "
        f"({human_size(r.bytes_trashed)}; deleted by a gc {human_duration(args.grace)} later)",
        f"  {would}deleted for good: {r.blobs_deleted} blobs, {r.manifests_purged} deleted "
        f"checkpoints, {r.leftovers_deleted} leftovers (probe and temp files)",
    ]
    if r.blobs_restored:
        lines.append(f"  blobs in use {would}moved back from the trash: {r.blobs_restored}")
    lines.append(
        f"  {human_size(r.bytes_freed)} {would}freed; {r.blobs_live} blobs "
        f"({human_size(r.bytes_live)}) in use or in grace; {r.seconds:.2f} s"
    )
    print("\n".join(lines))
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
    """Ask the kernel's agent over gRPC, like `checkpoint --kernel`: every option
    (store options, paths with spaces) travels as a field, not as a magic line."""
    from nbferry.migrator.agents import AgentClient
    from nbferry.v1 import agent_pb2 as apb

    request = apb.PlanRequest(options=_plan_options(args))
    with AgentClient.for_kernel(args.kernel) as agent:
        reply = agent.plan(request, timeout=args.timeout)
    return json.loads(reply.report_json)


def _plan_from_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Plan again from a checkpoint's manifest, with this store's measured speed."""
    from nbferry.agent import planning
    from nbferry.storage.speed import store_speed

    store = _open(args)
    ref = store.resolve(args.checkpoint or "latest", args.session)
    manifest = store.read_manifest(ref)
    planned = planning.plan_session(
        manifest.variables,
        [s.name for s in manifest.skipped],
        manifest.history,
        store_speed(store),
        restore_weight=args.restore_weight,
        inputs_on_target=args.inputs_on_target,
        store_all=args.store_all,
        already_stored=planning.stored_digests(manifest),
        file_problem=planning.file_problem_here if args.here else None,
    )
    report = planned.report()
    report["checkpoint_id"] = manifest.checkpoint_id
    report["at_checkpoint"] = {
        "stored": list(manifest.plan.stored),
        "recomputed": list(manifest.plan.recomputed),
    }
    return report


# -- control plane: kernels, checkpoint, restore, migrate, serve -------------------


def _token(args: argparse.Namespace) -> str:
    if getattr(args, "token_file", None):
        with open(args.token_file) as f:
            return f.read().strip()
    return os.environ.get("NBFERRY_TOKEN", "")


def _read_file(path: str | None) -> bytes | None:
    """A certificate or key file's bytes; None when the option was not given."""
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def _migrator(args: argparse.Namespace) -> Any:
    from nbferry.migrator.service import MigratorClient

    if (args.tls_cert or args.tls_key) and not args.tls_ca:
        raise ValueError("a client certificate needs --tls-ca too (else the token goes in clear)")
    return MigratorClient(
        args.to,
        _token(args),
        ca=_read_file(args.tls_ca),
        cert=_read_file(args.tls_cert),
        key=_read_file(args.tls_key),
    )


def _progress(label: str) -> Callable[[Any], None]:
    from nbferry.migrator.progress import Progress

    bar = Progress(label)

    def show(event: Any) -> None:
        if event.total_bytes:
            bar(event.done_bytes, event.total_bytes)

    return show


def _plan_options(args: argparse.Namespace) -> Any:
    from nbferry.v1 import agent_pb2 as apb

    return apb.PlanOptions(
        store_url=args.store or "",
        session_id=args.session or "",
        restore_weight=args.restore_weight,
        inputs_on_target=args.inputs_on_target,
        store_all=args.store_all,
        store_options=args.store_option,
    )


def _kernel_state(row: dict[str, Any]) -> str:
    if row.get("busy"):
        return "busy"
    if row.get("awaiting_restore"):
        return "spare"  # started for a restore that has not come yet
    return row.get("error", "idle")


def cmd_kernels(args: argparse.Namespace) -> int:
    from nbferry.migrator.agents import AgentClient, running_agents
    from nbferry.migrator.report import table

    rows = []
    for info in running_agents():
        row: dict[str, Any] = {
            "kernel_id": info.kernel_id,
            "pid": info.pid,
            "connection_file": info.connection_file,
        }
        try:
            with AgentClient(info.address, info.token) as agent:
                d = agent.describe(timeout=3)
            row.update(
                session_id=d.session_id,
                variables=len(d.variables),
                history=d.history_length,
                busy=d.busy,
                cwd=d.cwd,
                awaiting_restore=d.awaiting_restore,
            )
        except Exception as exc:  # a kernel that died without cleaning up
            row["error"] = f"not answering: {type(exc).__name__}"
        rows.append(row)
    if args.json:
        _print_json({"kernels": rows})
        return EXIT_OK
    if not rows:
        print("no local kernels run the nbferry agent (load it: %load_ext nbferry.agent)")
        return EXIT_OK
    print(
        table(
            [
                (
                    r["kernel_id"],
                    str(r["pid"]),
                    r.get("session_id", "-"),
                    str(r.get("variables", "-")),
                    _kernel_state(r),
                    r.get("cwd", ""),
                )
                for r in rows
            ],
            ("KERNEL", "PID", "SESSION", "VARS", "STATE", "CWD"),
        )
    )
    return EXIT_OK


def cmd_checkpoint(args: argparse.Namespace) -> int:
    if args.all:
        return _checkpoint_all(args)
    if not args.kernel:
        print(
            "nbferry checkpoint: give --kernel K, or --all for every local kernel", file=sys.stderr
        )
        return EXIT_USAGE
    from nbferry.agent.report import render_checkpoint
    from nbferry.migrator.agents import AgentClient, result_of
    from nbferry.v1 import agent_pb2 as apb

    request = apb.CheckpointRequest(
        options=_plan_options(args),
        message=args.message,
        allow_loss=args.allow_loss,
        interrupt=args.interrupt,
    )
    with AgentClient.for_kernel(args.kernel) as agent:
        result = result_of(agent.checkpoint(request, timeout=args.timeout), _progress("upload"))
    report = json.loads(result.report_json)
    if args.json:
        _print_json(report)
    else:
        print(render_checkpoint(report))
    return EXIT_OK


def _checkpoint_all(args: argparse.Namespace) -> int:
    """Every local kernel with an agent, in parallel, within --deadline (a preStop hook)."""
    from nbferry.migrator.agents import running_agents
    from nbferry.migrator.saveall import all_saved, checkpoint_all, summary

    if args.kernel:
        print("nbferry checkpoint: --all and --kernel exclude each other", file=sys.stderr)
        return EXIT_USAGE
    results = checkpoint_all(
        running_agents(),
        deadline=args.deadline,
        message=args.message or "checkpoint --all",
        interrupt=args.interrupt,
        store_url=args.store or "",
        store_options=args.store_option,
    )
    if args.json:
        _print_json({"kernels": results, "saved": sum(r["saved"] for r in results)})
    else:
        print(summary(results) if results else "no local kernels run an nbferry agent")
    return EXIT_OK if all_saved(results) else EXIT_FAILED


def cmd_restore(args: argparse.Namespace) -> int:
    from nbferry.agent.report import render_restore
    from nbferry.migrator.agents import AgentClient, result_of
    from nbferry.v1 import agent_pb2 as apb
    from nbferry.v1 import migrator_pb2 as mpb

    targets = [bool(args.kernel), args.new_kernel, bool(args.to)]
    if sum(targets) != 1:
        raise ValueError("say where to restore: --kernel K, --new-kernel or --to HOST:PORT")
    where: dict[str, Any] = {}
    if args.kernel:
        request = apb.RestoreRequest(
            store_url=args.store or "",
            checkpoint=args.checkpoint,
            session_id=args.session or "",
            store_options=args.store_option,
        )
        with AgentClient.for_kernel(args.kernel) as agent:
            result = result_of(agent.restore(request, timeout=args.timeout), _progress("load"))
        where = {"kernel_id": args.kernel}
    elif args.new_kernel:
        from nbferry.migrator.launch import restore_into_new_kernel

        request = apb.RestoreRequest(
            store_url=args.store or "",
            checkpoint=args.checkpoint,
            session_id=args.session or "",
            store_options=args.store_option,
        )
        kernel, result = restore_into_new_kernel(os.getcwd(), request, _progress("load"))
        where = {"kernel_id": kernel.kernel_id, "connection_file": kernel.connection_file}
    else:
        request = mpb.RestoreCheckpointRequest(
            store_url=args.store or "",
            checkpoint=args.checkpoint,
            session_id=args.session or "",
            store_options=args.store_option,
        )
        with _migrator(args) as target:
            restored = result_of(target.restore_checkpoint(request, timeout=args.timeout))
        result = restored.report
        where = {
            "kernel_id": restored.kernel_id,
            "connection_file": restored.connection_file,
            "host": restored.host,
        }
    report = {**json.loads(result.report_json), **where}
    if args.json:
        _print_json(report)
    else:
        print(render_restore(report))
        if "connection_file" in where:
            print(_attach_hint(where))
    return EXIT_OK if not report["lost"] and not report["differs"] else EXIT_FAILED


def _attach_hint(where: dict[str, Any]) -> str:
    host = f" on {where['host']}" if where.get("host") else ""
    return (
        f"session now runs in kernel {where['kernel_id']}{host}; attach with:\n"
        f"  jupyter console --existing {where['connection_file']}"
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    import time

    from nbferry.migrator.agents import AgentClient, result_of
    from nbferry.v1 import agent_pb2 as apb
    from nbferry.v1 import migrator_pb2 as mpb

    local_store = store_url(args.store or default_store_url())
    host = args.to.rpartition(":")[0].strip("[]")
    if is_local_store(local_store) and host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(
            f"the store {local_store} is a folder on this machine, which {args.to} cannot read: "
            "pass --store with a URL both hosts reach (e.g. s3://bucket/prefix)"
        )
    started = time.perf_counter()
    request = apb.CheckpointRequest(
        options=_plan_options(args),
        message=args.message or "nbferry migrate",
        allow_loss=args.allow_loss,
        interrupt=args.interrupt,
    )
    with AgentClient.for_kernel(args.kernel) as agent:
        checkpointed = result_of(
            agent.checkpoint(request, timeout=args.timeout), _progress("upload")
        )
    with _migrator(args) as target:
        restored = result_of(
            target.restore_checkpoint(
                mpb.RestoreCheckpointRequest(
                    store_url=checkpointed.store_url,
                    checkpoint=checkpointed.checkpoint_id,
                    store_options=args.store_option,
                ),
                timeout=args.timeout,
            )
        )
    report = restored.report
    out = {
        "checkpoint_id": checkpointed.checkpoint_id,
        "session_id": checkpointed.session_id,
        "store": checkpointed.store_url,
        "host": restored.host,
        "kernel_id": restored.kernel_id,
        "connection_file": restored.connection_file,
        "connection_info": json.loads(restored.connection_info_json),
        "loaded": list(report.loaded),
        "recomputed": list(report.recomputed),
        "differs": list(report.differs),
        "lost": [{"name": k, "reason": v} for k, v in report.lost.items()],
        "failed": [{"name": k, "reason": v} for k, v in report.failed.items()],
        "bytes_uploaded": checkpointed.bytes_uploaded,
        "checkpoint_seconds": round(checkpointed.seconds, 4),
        "restore_seconds": round(restored.seconds, 4),
        "seconds": round(time.perf_counter() - started, 4),
    }
    if args.json:
        _print_json(out)
    else:
        print(
            f"checkpoint {out['checkpoint_id']}: {human_size(out['bytes_uploaded'])} uploaded "
            f"in {out['checkpoint_seconds']:.2f} s\n"
            f"restored on {out['host']}: {len(out['loaded'])} loaded, "
            f"{len(out['recomputed'])} recomputed, {len(out['differs'])} differ, "
            f"{len(out['lost'])} lost ({out['restore_seconds']:.2f} s; "
            f"{out['seconds']:.2f} s in all)"
        )
        for item in out["lost"]:
            print(f"  LOST {item['name']}: {item['reason']}")
        print(_attach_hint(out))
    return EXIT_OK if not out["lost"] and not out["differs"] else EXIT_FAILED


def _jupyter(args: argparse.Namespace) -> tuple[str, str] | None:
    if not args.jupyter_url:
        return None
    if args.jupyter_token_file:
        with open(args.jupyter_token_file) as f:
            return args.jupyter_url, f.read().strip()
    token = os.environ.get("JUPYTER_TOKEN", "")
    if not token:
        raise ValueError(
            "--jupyter-url needs the server's token: --jupyter-token-file or $JUPYTER_TOKEN"
        )
    return args.jupyter_url, token


def cmd_serve(args: argparse.Namespace) -> int:
    from nbferry.migrator.service import serve
    from nbferry.storage import open_store

    token = _token(args)
    if not token:
        raise ValueError(
            "the migrator needs a token: --token-file FILE or $NBFERRY_TOKEN "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE)"
        )

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if args.tls_client_ca and not args.tls_cert:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    # Absolute: kernels run in --workdir, not here (and $NBFERRY_STORE may be relative too).
    url = store_url(args.store or default_store_url())
    open_store(url, parse_options(args.store_option))  # a bad URL fails here, not per call

    def ready(address: str) -> None:
        print(json.dumps({"listening": address, "store": url}), flush=True)

    serve(
        args.listen,
        url,
        token,
        workdir=args.workdir,
        tls_cert=_read_file(args.tls_cert),
        tls_key=_read_file(args.tls_key),
        tls_client_ca=_read_file(args.tls_client_ca),
        grace=args.grace,
        ready=ready,
        store_options=args.store_option,
        jupyter=_jupyter(args),
        spare_kernels=args.spare_kernels,
    )
    return EXIT_OK


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
    from nbferry.migrator.install import (
        disable_server_extension,
        enable_server_extension,
        install,
        uninstall,
    )

    if args.command == "install":
        path = install(args.prefix)
        result: dict[str, Any] = {"installed": True, "path": str(path)}
        text = f"new kernels will load nbferry.agent (added {path}); undo: nbferry uninstall"
        if args.jupyter_server:
            server = enable_server_extension(args.prefix)
            result["server_extension"] = str(server)
            text += f"\njupyter_server extension enabled ({server})"
    else:
        changed = uninstall(args.prefix)
        server = disable_server_extension(args.prefix)
        result = {
            "installed": False,
            "path": str(changed) if changed else None,
            "server_extension": str(server) if server else None,
        }
        text = (
            f"removed nbferry.agent from {changed}"
            if changed
            else "nbferry was not installed there"
        )
        if server:
            text += f"\njupyter_server extension disabled (removed {server})"
    if args.json:
        _print_json(result)
    else:
        print(text)
    return EXIT_OK


def duration(text: str) -> Any:  # argparse names the type in errors: 'invalid duration value'
    from nbferry.storage import gc

    return gc.duration(text)


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

    p = sub.add_parser(
        "gc",
        help="delete unused blobs (and, with --keep-*, old checkpoints) from a store",
        description="Mark and sweep: blobs no checkpoint uses, untouched for --grace, move to "
        "the store's trash; a later gc deletes them once they sat there for --grace. Deleted "
        "checkpoints wait in the trash too. Safe while checkpoints are written when --grace "
        "is longer than the 6h a checkpoint may take. With any --keep-*, each session keeps "
        "the checkpoints some --keep-* asks for (always its newest); the rest are deleted.",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    p.add_argument(
        "--grace",
        type=duration,
        default="24h",
        metavar="DURATION",
        help="age before anything is trashed or deleted: 90s, 30m, 24h, 7d (default 24h)",
    )
    for name, what in (
        ("last", "the newest N checkpoints"),
        ("hourly", "the newest checkpoint of each of the last N clock hours"),
        ("daily", "the newest checkpoint of each of the last N days (UTC)"),
    ):
        p.add_argument(
            f"--keep-{name}",
            type=int,
            metavar="N",
            help=f"retention: keep {what} of each session",
        )
    _store_args(p)
    p.set_defaults(func=cmd_gc)

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
        if name == "install":
            p.add_argument(
                "--jupyter-server",
                action="store_true",
                help="also enable the jupyter_server extension: save every kernel when the "
                "server stops, restore a notebook's session when its kernel starts",
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
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with --kernel: give up after SECONDS (a running cell is waited for)",
    )
    _store_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("kernels", help="local kernels that run the nbferry agent")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_kernels)

    def kernel_arg(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument(
            "--kernel",
            metavar="K",
            required=required,
            help="kernel id, unique prefix of one, or connection file",
        )

    def plan_knobs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--restore-weight", type=float, default=1.0)
        p.add_argument("--inputs-on-target", action="store_true")
        p.add_argument("--store-all", action="store_true")
        p.add_argument("--allow-loss", action="store_true")
        p.add_argument("-m", "--message", default="")
        p.add_argument(
            "--interrupt",
            action="store_true",
            help="interrupt a running cell instead of waiting for it",
        )

    def remote_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--token-file", help="migrator token (default: $NBFERRY_TOKEN)")
        p.add_argument("--tls-ca", help="CA bundle that signed the migrator's certificate")
        p.add_argument("--tls-cert", help="client certificate (mutual TLS)")
        p.add_argument("--tls-key", help="client key (mutual TLS)")

    def timeout_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")

    p = sub.add_parser("checkpoint", help="checkpoint a running kernel through its agent")
    kernel_arg(p, False)
    p.add_argument(
        "--all",
        action="store_true",
        help="every local kernel that runs an agent, in parallel (e.g. a preStop hook)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=25.0,
        metavar="SECONDS",
        help="with --all: give up on kernels not saved by then (default 25)",
    )
    p.add_argument("--session", metavar="ID")
    plan_knobs(p)
    timeout_arg(p)
    _store_args(p)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser(
        "restore", help="restore a checkpoint into a kernel, a new kernel, or through a migrator"
    )
    p.add_argument("checkpoint", help="checkpoint id, unique prefix, or 'latest'")
    p.add_argument("--session", metavar="ID")
    kernel_arg(p, False)
    p.add_argument("--new-kernel", action="store_true", help="start a kernel here for it")
    p.add_argument("--to", metavar="HOST:PORT", help="a migrator (nbferry serve) to restore on")
    remote_args(p)
    timeout_arg(p)
    _store_args(p)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser(
        "migrate", help="checkpoint a local kernel and restore it through a migrator elsewhere"
    )
    kernel_arg(p, True)
    p.add_argument("--to", metavar="HOST:PORT", required=True, help="target migrator")
    p.add_argument("--session", metavar="ID")
    plan_knobs(p)
    remote_args(p)
    timeout_arg(p)
    _store_args(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("serve", help="run a migrator: restore checkpoints into kernels here")
    p.add_argument("--listen", default="127.0.0.1:7878", metavar="HOST:PORT")
    p.add_argument("--token-file", help="bearer token clients must send (default: $NBFERRY_TOKEN)")
    p.add_argument("--tls-cert", help="server certificate (PEM)")
    p.add_argument("--tls-key", help="server key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA")
    p.add_argument("--workdir", help="working directory of new kernels (default: here)")
    p.add_argument("--grace", type=float, default=30.0, help="seconds to finish calls on stop")
    p.add_argument(
        "--spare-kernels",
        type=int,
        default=1,
        metavar="N",
        help="kernels kept started (agent loaded) for the next restores, so a restore need "
        "not wait for one to boot (default 1; 0: none; not used with --jupyter-url)",
    )
    p.add_argument(
        "--jupyter-url",
        help="make kernels through this Jupyter server (same user and host), so restored "
        "sessions show in JupyterLab",
    )
    p.add_argument("--jupyter-token-file", help="its token (default: $JUPYTER_TOKEN)")
    _store_args(p)
    p.set_defaults(func=cmd_serve)

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
    except Exception as exc:
        if type(exc).__module__.startswith("grpc"):  # grpc.RpcError subclasses
            code = getattr(exc, "code", lambda: None)()
            message = str(exc)
            details = getattr(exc, "details", lambda: message)()
            print(f"nbferry: error: {getattr(code, 'name', 'RPC')}: {details}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
