"""The %nbferry line magic: checkpoint, restore and status from inside a notebook."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from nbferry.agent.report import Report, render_checkpoint, render_plan, render_restore


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # never SystemExit inside a kernel
        raise ValueError(f"%nbferry: {message}\n{self.format_usage()}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%nbferry", add_help=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("checkpoint", "plan"):
        p = sub.add_parser(command, add_help=False)
        p.add_argument("--store")
        p.add_argument("--session")
        p.add_argument("--restore-weight", type=float, default=1.0)
        p.add_argument("--inputs-on-target", action="store_true")
        p.add_argument("--store-all", action="store_true")
        if command == "checkpoint":
            p.add_argument("--message", "-m", default="")
            p.add_argument("--allow-loss", action="store_true")
    p = sub.add_parser("restore", add_help=False)
    p.add_argument("checkpoint", nargs="?", default="latest")
    p.add_argument("--store")
    p.add_argument("--session")
    p = sub.add_parser("status", add_help=False)
    p.add_argument("--store")
    p.add_argument("--session")
    return parser


@magics_class
class NbferryMagics(Magics):
    """`%nbferry checkpoint|plan|restore|status`; each returns a dict report."""

    @line_magic
    def nbferry(self, line: str) -> Any:
        from nbferry.agent.session import default_session_id
        from nbferry.storage import StoreError, open_store

        try:
            args = _parser().parse_args(shlex.split(line))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        ns = self.shell.user_ns
        session = args.session or default_session_id(ns)
        try:
            store = open_store(args.store)
            if args.command == "checkpoint":
                from nbferry.agent.capture import checkpoint

                report = checkpoint(
                    self.shell,
                    store,
                    session,
                    args.message,
                    restore_weight=args.restore_weight,
                    inputs_on_target=args.inputs_on_target,
                    store_all=args.store_all,
                    allow_loss=args.allow_loss,
                )
                print(render_checkpoint(report))
            elif args.command == "plan":
                from nbferry.agent.capture import capture_namespace, plan_checkpoint

                captured = capture_namespace(ns, getattr(self.shell, "user_ns_hidden", None))
                planned = plan_checkpoint(
                    self.shell,
                    store,
                    session,
                    captured,
                    restore_weight=args.restore_weight,
                    inputs_on_target=args.inputs_on_target,
                    store_all=args.store_all,
                )
                report = planned.report()
                print(render_plan(report))
            elif args.command == "restore":
                from nbferry.agent.restore import restore

                # An explicit id is global; only 'latest' needs this kernel's session.
                scope = session if args.checkpoint == "latest" or args.session else None
                report = restore(self.shell, store, args.checkpoint, scope)
                print(render_restore(report))
            else:
                latest = store.latest(session)
                report = {
                    "session_id": session,
                    "store": store.url,
                    "checkpoint_id": latest.checkpoint_id if latest else None,
                    "checkpoints": len(store.list_checkpoints(session)),
                }
                print(
                    f"nbferry agent loaded; session {session}; store {store.url}; "
                    f"{report['checkpoints']} checkpoints, latest {report['checkpoint_id'] or '-'}"
                )
        except (StoreError, ValueError) as exc:
            raise UsageError(f"%nbferry {args.command}: {exc}") from None
        return Report(report)
