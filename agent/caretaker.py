"""A kernel nbferry started for a restore shuts down if its starter dies first.

The migrator (or the CLI) starts kernels to restore sessions into, and keeps
spares waiting for the next restore. Until a restore into it has finished,
such a kernel holds nothing of the user's and nobody else knows it exists:
if its starter is killed (SIGKILL, the OOM killer, a node going away), it
would idle forever. `launch.start_kernel` starts these kernels with the
starter's pid in $NBFERRY_UNTIL_RESTORED; the agent polls that process and
shuts the kernel down once it is gone, unless a restore has finished by then
(from that point the kernel is the user's and outlives the migrator).

ipykernel's own parent poller cannot do this: it ends the kernel whenever
the parent exits, including after the hand-over.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any

ENV = "NBFERRY_UNTIL_RESTORED"
POLL_SECONDS = 1.0
_restored = threading.Event()
_watching = threading.Event()


def watch(shell: Any) -> None:
    """Start watching the starter named by $NBFERRY_UNTIL_RESTORED, if any.

    The variable is removed from the environment, so the user's subprocesses
    do not inherit it.
    """
    value = os.environ.pop(ENV, "")
    if not value.isdigit() or getattr(shell, "kernel", None) is None:
        return
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the starter there
        return
    starter = int(value)
    _watching.set()
    threading.Thread(target=_poll, args=(starter,), name="nbferry-caretaker", daemon=True).start()


def restored() -> None:
    """A restore into this kernel finished: it is the user's now, keep it."""
    _restored.set()


def awaiting_restore() -> bool:
    """Whether this kernel was started for a restore that has not finished."""
    return _watching.is_set() and not _restored.is_set()


def _poll(starter: int) -> None:
    while not _restored.is_set():
        if not alive(starter):
            if _restored.is_set():
                return
            print(
                f"nbferry: process {starter}, which started this kernel for a restore, is "
                "gone and no restore came; shutting the kernel down",
                file=sys.__stderr__,
                flush=True,
            )
            _shut_down()
            return
        _restored.wait(POLL_SECONDS)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed migrator whose
    parent has not reaped it yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): existing is enough
    return state not in (b"Z", b"X")


def _shut_down() -> None:
    """Remove the kernel's connection file and ask the kernel to shut down the
    way a kernel manager would (exit handlers run; the agent removes its
    discovery file); exit hard if that has not ended the process within 10 s."""
    try:
        from ipykernel.connect import get_connection_file
        from jupyter_client import BlockingKernelClient

        connection = get_connection_file()
        client = BlockingKernelClient(connection_file=connection)
        client.load_connection_file()
        # Its starter would have removed it; nobody else will.
        with contextlib.suppress(OSError):
            os.remove(connection)
        client.start_channels()
        client.shutdown()
    except Exception as exc:
        print(f"nbferry: shutdown request failed ({exc}); exiting", file=sys.__stderr__)
        os._exit(1)
    time.sleep(10)
    os._exit(1)
