"""Checkpoints nobody has to remember, and a notebook's variables back when its kernel starts.

Configured by environment variables, which the jupyter_server extension sets
for the kernels it starts (or set them yourself before starting a kernel):

    NBFERRY_CHECKPOINT_EVERY   minutes: checkpoint while idle, when cells ran since the last one
    NBFERRY_CHECKPOINT_AFTER   seconds: checkpoint right after a cell that ran at least this long
    NBFERRY_KEEP               retention applied to the session after each scheduled checkpoint,
                               e.g. "last=10,hourly=24,daily=7"
    NBFERRY_RESTORE            off | ask | auto: what a fresh kernel of a notebook does with
                               that notebook's latest checkpoint

Scheduled checkpoints run on the kernel's main thread between cells (a cell
sent meanwhile waits), are incremental (unchanged pods are not uploaded
again), and never fail on a value nothing can save: it is listed as lost in
the manifest instead. What they did goes to the kernel's log, not into cells.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("nbferry.autosave")
if not log.handlers:  # the process's real stderr (the kernel log), never a cell's output
    _handler = logging.StreamHandler(sys.__stderr__)
    _handler.setFormatter(logging.Formatter("[%(asctime)s nbferry] %(message)s"))
    log.addHandler(_handler)
    log.propagate = False
    log.setLevel(logging.INFO)

ENV_EVERY = "NBFERRY_CHECKPOINT_EVERY"
ENV_AFTER = "NBFERRY_CHECKPOINT_AFTER"
ENV_KEEP = "NBFERRY_KEEP"
ENV_RESTORE = "NBFERRY_RESTORE"
RESTORE_MODES = ("off", "ask", "auto")


@dataclass(frozen=True)
class Schedule:
    every: float = 0.0  # seconds between idle checkpoints; 0: off
    after: float = 0.0  # a cell at least this long is followed by a checkpoint; 0: off
    keep: str = ""  # retention policy, "" for none
    restore: str = "off"

    @property
    def active(self) -> bool:
        return bool(self.every or self.after)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, errors: list[str] | None = None
    ) -> Schedule:
        """Read the variables above; a bad value raises ValueError naming it and the fix.

        With `errors`, a bad value is appended there instead and only its own
        setting is off (a typo in NBFERRY_KEEP must not turn off the restore).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field, name, read in (
            ("restore", ENV_RESTORE, _restore_mode),
            ("keep", ENV_KEEP, _keep),
            ("every", ENV_EVERY, lambda env: _number(env, ENV_EVERY) * 60.0),
            ("after", ENV_AFTER, lambda env: _number(env, ENV_AFTER)),
        ):
            try:
                values[field] = read(env)
            except ValueError as exc:
                if errors is None:
                    raise
                errors.append(f"{exc}; {SETTINGS[name]}")
        return cls(**values)


# What a bad value turns off, and where it is set; for the kernel log.
SETTINGS = {
    ENV_RESTORE: "restore at start is off; fix c.NbferryExtension.restore or $NBFERRY_RESTORE",
    ENV_KEEP: "scheduled checkpoints keep every older checkpoint (no retention); fix "
    'c.NbferryExtension.keep or $NBFERRY_KEEP, e.g. "last=10,hourly=24,daily=7"',
    ENV_EVERY: "idle checkpoints are off; fix c.NbferryExtension.checkpoint_every or "
    "$NBFERRY_CHECKPOINT_EVERY (minutes)",
    ENV_AFTER: "checkpoints after long cells are off; fix c.NbferryExtension.checkpoint_after "
    "or $NBFERRY_CHECKPOINT_AFTER (seconds)",
}


def _restore_mode(env: Mapping[str, str]) -> str:
    restore = env.get(ENV_RESTORE, "off").strip().lower() or "off"
    if restore not in RESTORE_MODES:
        raise ValueError(f"{ENV_RESTORE}={restore!r}: use one of {', '.join(RESTORE_MODES)}")
    return restore


def _keep(env: Mapping[str, str]) -> str:
    keep = env.get(ENV_KEEP, "").strip()
    if keep:
        from nbferry.storage.retention import Policy

        try:
            Policy.parse(keep)
        except ValueError as exc:
            raise ValueError(f"{ENV_KEEP}={keep!r}: {exc}") from None
    return keep


def _number(env: Mapping[str, str], name: str) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: give a number (0 turns it off)") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: must not be negative")
    return value


def idle_checkpoint_due(schedule: Schedule, *, now: float, last: float, cells_since: int) -> bool:
    """Whether the idle timer should checkpoint now: cells ran, and `every` has passed."""
    return bool(schedule.every) and cells_since > 0 and now - last >= schedule.every


class Autosave:
    """Runs the schedule in one kernel: cell hooks, an idle timer, the restore at start."""

    def __init__(self, shell: Any, schedule: Schedule) -> None:
        self.shell = shell
        self.schedule = schedule
        self.loop: Any = None
        self.last = time.monotonic()  # the kernel's start counts as a save point
        self.cells_since = 0
        self.saving = False
        self.executing = 0
        self.notice = ""  # shown in the first cell's output (restore=ask, or what auto did)
        self.saved = 0
        self.saved_in_cell = False  # a checkpoint of our store and session ran in this cell
        self.last_error = ""
        self._started = 0.0
        shell.events.register("pre_execute", self._pre)
        shell.events.register("post_execute", self._post)
        shell.events.register("pre_run_cell", self._show_notice)

    # -- cell hooks (main thread) --------------------------------------------

    def _pre(self) -> None:
        self.executing += 1
        self._started = time.monotonic()

    def _post(self) -> None:
        self.executing = max(0, self.executing - 1)
        if self.saving:
            return
        if self.saved_in_cell:  # `%nbferry checkpoint`: this cell's state is saved
            self.saved_in_cell = False
            self.cells_since, self.last = 0, time.monotonic()
            return
        self.cells_since += 1
        ran = time.monotonic() - self._started
        if self.schedule.after and ran >= self.schedule.after and self.loop is not None:
            self.loop.add_callback(self._save, f"after a {ran:.0f} s cell")

    def _show_notice(self, *args: Any) -> None:
        if self.notice:
            print(self.notice)
            self.notice = ""

    # -- the kernel's event loop ---------------------------------------------

    def start(self) -> None:
        """Wait (on a helper thread) for the kernel's loop, then arm the timer and the restore."""
        threading.Thread(target=self._attach_loop, name="nbferry-autosave", daemon=True).start()

    def _attach_loop(self) -> None:
        from nbferry.agent.mainthread import kernel_loop

        try:
            self.loop = kernel_loop(self.shell)
        except RuntimeError as exc:
            log.warning("scheduled checkpoints and restore are off: %s", exc)
            return
        if self.schedule.restore != "off":
            self.loop.add_callback(self._restore_at_start)
        if self.schedule.every:
            self.loop.add_callback(self._arm)

    def _arm(self) -> None:
        wait = max(1.0, self.schedule.every - (time.monotonic() - self.last))
        self.loop.call_later(wait, self._tick)

    def _tick(self) -> None:
        if self.executing:  # an awaiting cell yielded the loop: come back when it is done
            self.loop.call_later(1.0, self._tick)
            return
        now = time.monotonic()
        if idle_checkpoint_due(
            self.schedule, now=now, last=self.last, cells_since=self.cells_since
        ):
            self._save("idle timer")
        elif self.cells_since == 0:
            self.last = now  # nothing changed: no checkpoint, and the clock starts over
        self._arm()

    # -- work ----------------------------------------------------------------

    def _save(self, reason: str) -> None:
        if self.saving or self.cells_since == 0:
            return
        from nbferry.agent.capture import checkpoint
        from nbferry.agent.session import default_session_id
        from nbferry.storage import open_store

        self.saving = True
        started = time.perf_counter()
        try:
            store = open_store(None)
            session = default_session_id(self.shell.user_ns)
            report = checkpoint(self.shell, store, session, f"scheduled: {reason}", allow_loss=True)
            self.cells_since = 0
            self.saved += 1
            self.last_error = ""
            log.warning(
                "nbferry: scheduled checkpoint %s of %s (%s) in %.2f s",
                report.get("checkpoint_id"),
                session,
                reason,
                time.perf_counter() - started,
            )
            if self.schedule.keep:
                from nbferry.storage.retention import Policy, apply_retention

                gone = apply_retention(store, session, Policy.parse(self.schedule.keep))
                if gone:
                    log.info("retention removed %d older checkpoints", len(gone))
        except Exception as exc:  # a failed save must never break the kernel
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("scheduled checkpoint failed (%s): %s", reason, self.last_error)
        finally:
            self.last = time.monotonic()
            self.saving = False

    def _restore_at_start(self) -> None:
        """Restore (auto) or point at (ask) the notebook's latest checkpoint, in a fresh kernel."""
        from nbferry.agent.session import default_session_id, kernel_id, notebook_path
        from nbferry.storage import open_store

        ns = self.shell.user_ns
        if not notebook_path(ns) or getattr(self.shell, "execution_count", 1) > 1:
            return  # not a notebook's kernel, or the user has already run cells here
        try:
            store = open_store(None)
            session = default_session_id(ns)
            latest = store.latest(session)
            if latest is None:
                return
            when = latest.created.strftime("%Y-%m-%d %H:%M UTC")
            # A checkpoint of this very kernel id means the kernel was restarted (Restart
            # Kernel, or after a crash): a fresh namespace was asked for, so only say so.
            here = kernel_id()
            restarted = bool(here) and store.read_manifest(latest).labels.get("kernel") == here
            if self.schedule.restore == "ask" or restarted:
                self.notice = (
                    f"nbferry: this notebook has a checkpoint from {when} "
                    f"({latest.checkpoint_id}). Run `%nbferry restore latest` to get its "
                    "variables back."
                )
                return
            from nbferry.agent.restore import restore

            self.saving = True  # the restore's own replayed cells are not new work
            try:
                report = restore(self.shell, store, latest.checkpoint_id, session)
            finally:
                self.saving = False
            self.cells_since = 0
            self.last = time.monotonic()
            back = len(report["loaded"]) + len(report["recomputed"])
            missing = [f["name"] for f in report["failed"]] + [x["name"] for x in report["lost"]]
            self.notice = (
                f"nbferry: restored {back} variables from the checkpoint of "
                f"{when} ({latest.checkpoint_id})"
                + (f"; not restored: {', '.join(missing)}" if missing else "")
            )
            log.info("%s", self.notice.removeprefix("nbferry: "))
        except Exception as exc:
            self.notice = f"nbferry: could not restore this notebook's checkpoint: {exc}"
            log.warning("%s", self.notice)


_autosave: Autosave | None = None


def checkpoint_written(store_url: str, session_id: str) -> None:
    """Called after every checkpoint (magic, gRPC, or ours): one of the scheduled
    store and session saved everything so far, so the idle timer must not save
    the same state again, nor count the cell that ran it as new work."""
    saver = _autosave
    if saver is None or saver.saving:
        return
    from nbferry.agent.session import default_session_id
    from nbferry.storage import open_store

    try:  # bookkeeping: it must never fail the checkpoint that called it
        ours = session_id == default_session_id(saver.shell.user_ns)
        ours = ours and store_url == open_store(None).url
    except Exception as exc:  # the scheduled store is misconfigured: its saves say so
        log.debug("checkpoint_written: %s", exc)
        return
    if not ours:
        return  # saved elsewhere: the schedule's own checkpoint is still due
    if saver.executing:
        saver.saved_in_cell = True  # _post resets the count once the cell ends
    else:  # between cells (over gRPC)
        saver.cells_since, saver.last = 0, time.monotonic()


def start(shell: Any) -> Autosave | None:
    """Start the schedule in a kernel when the environment asks for one (once per kernel)."""
    global _autosave
    if _autosave is not None or getattr(shell, "kernel", None) is None:
        return _autosave
    errors: list[str] = []
    schedule = Schedule.from_env(errors=errors)  # a bad setting turns off only itself
    for error in errors:
        log.error("nbferry: bad setting: %s", error)
    if not schedule.active and schedule.restore == "off":
        return None
    _autosave = Autosave(shell, schedule)
    _autosave.start()
    return _autosave


def stop(shell: Any) -> None:
    global _autosave
    if _autosave is not None:
        for event, fn in (
            ("pre_execute", _autosave._pre),
            ("post_execute", _autosave._post),
            ("pre_run_cell", _autosave._show_notice),
        ):
            shell.events.unregister(event, fn)
        _autosave = None


def current() -> Autosave | None:
    return _autosave
