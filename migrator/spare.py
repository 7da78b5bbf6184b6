"""Warm spare kernels: a migrator keeps kernels started, agent loaded, for the next restore.

Starting a kernel and loading the agent takes about a second, which a restore
would otherwise wait for. The migrator starts `count` spares when it starts
and a replacement after each restore has finished (not during it, so the
restore does not share the CPU with a booting kernel). A spare that died
meanwhile is cleaned up and skipped; with none ready, a kernel is started cold,
as without spares. Spares are a cache, not state: the migrator stays stateless,
and stopping it stops its spares (a kernel handed to a restore is the user's).
A migrator killed without a chance to stop them leaves none behind either:
each spare's agent shuts it down once the migrator is gone (`agent.caretaker`).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from nbferry.migrator.launch import NewKernel, start_kernel


class SpareKernels:
    def __init__(self, cwd: str | Path, count: int = 1) -> None:
        self.cwd = Path(cwd)
        self.count = max(0, count)
        self._ready: list[NewKernel] = []
        self._starting = 0
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._lock = threading.Condition()
        self.refill()

    def take(self) -> NewKernel:
        """A ready spare (the caller owns it now), else a kernel started now.

        A spare still booting is waited for: it is closer to ready than a new one.
        """
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._ready or not self._starting, timeout=120)
                kernel = self._ready.pop(0) if self._ready else None
            if kernel is None:
                return start_kernel(self.cwd)
            if _alive(kernel):
                return kernel
            kernel.kill()  # died while waiting: remove its files, try the next

    def refill(self) -> None:
        """Start spares in the background until `count` are ready or starting."""
        with self._lock:
            missing = self.count - len(self._ready) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        for _ in range(missing):
            thread = threading.Thread(target=self._start_one, name="nbferry-spare", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _start_one(self) -> None:
        kernel = None
        try:
            kernel = start_kernel(self.cwd)
        except Exception:
            pass  # the next take() starts one cold and says why if that fails too
        finally:
            with self._lock:
                self._starting -= 1
                keep = kernel is not None and not self._closed
                if keep:
                    self._ready.append(kernel)
                self._lock.notify_all()
        if kernel is not None and not keep:
            kernel.kill()

    @property
    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def close(self, timeout: float = 60) -> None:
        """Stop every spare not handed out, waiting for those still starting: a kernel
        left booting when the migrator exits would run on as an orphan."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)  # a spare that comes up now sees `closed` and stops
        with self._lock:
            spares, self._ready = self._ready, []
        for kernel in spares:
            with contextlib.suppress(Exception):
                kernel.kill()


def _alive(kernel: NewKernel) -> bool:
    from nbferry.migrator.agents import agent_of

    try:
        alive = kernel.manager is None or kernel.manager.is_alive()
    except Exception:
        alive = False
    return alive and agent_of(kernel.connection_file) is not None
