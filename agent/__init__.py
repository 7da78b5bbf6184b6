"""nbferry.agent: the in-kernel agent. Load it with `%load_ext nbferry.agent`.

Loading registers the %nbferry magic and starts the recorder (IPython cell
events plus an audit hook). Everything else starts on a thread, so the
extension adds little to kernel start-up: the gRPC endpoint, then the import
of the checkpoint, planning and storage code, so the first command does not
wait for it either.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from nbferry.agent.magics import NbferryMagics
    from nbferry.agent.recorder import attach

    ipython.register_magics(NbferryMagics)
    attach(ipython)  # records every later cell: what it read, wrote and cost
    if getattr(ipython, "kernel", None) is not None:
        from nbferry.agent import autosave

        autosave.start(ipython)  # only when $NBFERRY_CHECKPOINT_*/$NBFERRY_RESTORE ask for it
        from nbferry.agent import caretaker

        caretaker.watch(ipython)  # only in kernels nbferry started for a restore
        # The gRPC endpoint (AgentService); grpc's import takes ~80 ms, so not here.
        threading.Thread(
            target=_start_service, args=(ipython,), name="nbferry-agent-start", daemon=True
        ).start()


# What the first checkpoint or restore imports: ~25 modules, 0.05-0.1 s from a cold disk.
WARM_MODULES = ("nbferry.storage.store", "nbferry.agent.restore", "nbferry.agent.capture")


def _start_service(ipython: Any) -> None:
    from nbferry.agent import service

    try:
        service.start(ipython)
    except Exception as exc:  # the magics still work without the endpoint
        # The process's stderr (the kernel log): this thread's sys.stderr would
        # send it to whichever cell happens to be running.
        print(f"nbferry: agent service not started: {exc}", file=sys.__stderr__)
    _warm_imports()


def _warm_imports() -> None:
    """Import the checkpoint and restore code off the main thread, while the user works.

    Otherwise the first %nbferry command pays for it with the kernel blocked.
    No numpy or pandas is among them, and an import that fails here fails
    again, with its message, when the command runs.
    """
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            return


def unload_ipython_extension(ipython: Any) -> None:
    from nbferry.agent.recorder import detach

    detach(ipython)
    if "nbferry.agent.autosave" in sys.modules:
        sys.modules["nbferry.agent.autosave"].stop(ipython)
    if "nbferry.agent.service" in sys.modules:
        sys.modules["nbferry.agent.service"].stop()
    ipython.magics_manager.registry.pop("NbferryMagics", None)
    ipython.magics_manager.magics["line"].pop("nbferry", None)
