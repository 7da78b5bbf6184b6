"""Run work on the kernel's main thread, between cells, on behalf of other threads.

gRPC calls arrive on gRPC's threads, but capture and restore must see a
namespace no cell is changing, and IPython's state belongs to the main thread.
So a call is queued on the kernel's event loop (tornado's `add_callback` is
thread-safe), which runs it as soon as no cell is executing. A call that is
still queued when its deadline passes is withdrawn and reported as busy; an
option interrupts the running cell instead, as the Interrupt button would.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class KernelBusy(RuntimeError):
    """A cell kept running past the caller's deadline; nothing was done."""


class Cancelled(RuntimeError):
    """The caller cancelled the operation."""


def kernel_loop(shell: Any, timeout: float = 60.0) -> Any:
    """The kernel's event loop, waiting for it: the agent loads (from a startup file)
    before ipykernel starts its loop, and helper threads may get here first."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        raise RuntimeError("the nbferry agent service needs an ipykernel kernel")
    deadline = time.monotonic() + timeout
    while (loop := getattr(kernel, "io_loop", None)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the kernel's event loop did not start within {timeout:g} s")
        time.sleep(0.01)
    return loop


class MainThread:
    def __init__(self, shell: Any) -> None:
        self.loop = kernel_loop(shell)
        self._executing = 0
        shell.events.register("pre_execute", self._pre)
        shell.events.register("post_execute", self._post)

    def _pre(self) -> None:
        self._executing += 1

    def _post(self) -> None:
        self._executing = max(0, self._executing - 1)

    @property
    def busy(self) -> bool:
        """Whether a cell is running (main thread only writes it; reads may lag a cell)."""
        return self._executing > 0

    def call(
        self,
        fn: Callable[[], T],
        timeout: float | None,
        *,
        interrupt: bool = False,
        cancelled: threading.Event | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> T:
        """Run `fn` on the main thread and return its result (or raise its error)."""
        done = threading.Event()
        state: dict[str, Any] = {"withdrawn": False, "started": False}
        lock = threading.Lock()

        def job() -> None:
            if self.busy:
                # A cell awaiting at top level yields the loop mid-cell: wait it out.
                self.loop.call_later(0.05, job)
                return
            with lock:
                if state["withdrawn"]:
                    return
                state["started"] = True
            try:
                state["value"] = fn()
            except BaseException as exc:
                state["error"] = exc
            finally:
                done.set()

        self.loop.add_callback(job)
        if self.busy:
            if on_wait is not None:
                on_wait()
            if interrupt:
                os.kill(os.getpid(), signal.SIGINT)  # what the Interrupt button sends
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.05):
            with lock:
                started = state["started"]
                if not started and cancelled is not None and cancelled.is_set():
                    state["withdrawn"] = True
                    raise Cancelled("cancelled before it started")
                if not started and deadline is not None and time.monotonic() > deadline:
                    state["withdrawn"] = True
                    raise KernelBusy(
                        f"the kernel was busy running a cell for {timeout:.1f} s; nothing "
                        "was done. Retry when it is idle, or pass interrupt to stop the cell"
                    )
        if "error" in state:
            raise state["error"]
        return state["value"]
