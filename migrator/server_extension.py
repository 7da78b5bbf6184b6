"""jupyter_server extension: save every kernel before the server stops, and give a notebook's
variables back when its kernel starts again (after a cull, a reschedule, a restart).

Enable it once (per user, or with --sys-prefix for an image):

    jupyter server extension enable nbferry.migrator.server_extension

and configure it in jupyter_nbferry_config.json or .py, or jupyter_server_config.py, in
any Jupyter config folder (or on the command line: `--NbferryExtension.store=...`):

    c.NbferryExtension.store = "s3://bucket/sessions"   # default: $NBFERRY_STORE
    c.NbferryExtension.restore = "auto"                  # off | ask | auto
    c.NbferryExtension.stop_deadline = 20                # seconds for all saves at stop
    c.NbferryExtension.checkpoint_every = 10             # minutes, while idle (0: off)
    c.NbferryExtension.checkpoint_after = 60             # seconds: after long cells (0: off)
    c.NbferryExtension.keep = "last=10,hourly=24,daily=7"

JupyterHub has no pre-stop hook, but a stopped or culled server gets SIGTERM,
and `stop_extension` runs before the server shuts its kernels down: that is
where every kernel with an agent is checkpointed, in parallel, within
`stop_deadline`. Restoring is done by the agent inside each new kernel (see
agent/autosave.py); a restarted kernel (same kernel id as the checkpoint's)
is only told, not restored: Restart Kernel asks for a fresh namespace. This
extension hands the agent its settings through the environment that kernels
inherit, plus the server's root folder, so that a notebook's session id
(user + path below the root) is the same on any server. Kernels need the
agent loaded: `nbferry install` (or `--prefix` for an image).

Optionally, a kernel the idle culler is about to shut down is saved first:

    c.ServerApp.kernel_manager_class = "nbferry.migrator.server_extension.NbferryKernelManager"
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Bool, Enum, Float, Unicode

from nbferry.agent.autosave import ENV_AFTER, ENV_EVERY, ENV_KEEP, ENV_RESTORE, Schedule
from nbferry.agent.session import ENV_ROOT
from nbferry.migrator.cli import store_url


class NbferryExtension(ExtensionApp):
    name = "nbferry"
    load_other_extensions = True

    store = Unicode(
        "",
        config=True,
        help="store URL (default: $NBFERRY_STORE, else a folder); a relative path is a "
        "folder below the server's working directory",
    )
    restore = Enum(
        ["off", "ask", "auto"],
        default_value="auto",
        config=True,
        help="when a notebook's kernel starts and the notebook has a checkpoint: restore it "
        "(auto), tell the user how in the first cell's output (ask), or do nothing (off)",
    )
    stop_deadline = Float(
        20.0,
        config=True,
        help="seconds the server may spend saving kernels when it stops; keep it below "
        "the time the spawner waits before SIGKILL (KubeSpawner: delete_grace_period)",
    )
    interrupt_busy = Bool(
        False,
        config=True,
        help="at stop, interrupt a running cell so its kernel can be saved "
        "(default: wait for the cell until the deadline, then give up on that kernel)",
    )
    checkpoint_every = Float(0.0, config=True, help="minutes between idle checkpoints (0: off)")
    checkpoint_after = Float(
        0.0, config=True, help="checkpoint after every cell that ran this many seconds (0: off)"
    )
    keep = Unicode("", config=True, help='retention after scheduled checkpoints: "last=10,..."')

    def initialize_settings(self) -> None:
        # Kernels inherit the server's environment (jupyter_server starts them with
        # os.environ plus JPY_SESSION_NAME), so this is how settings reach their agents.
        env = {
            ENV_RESTORE: self.restore,
            ENV_ROOT: os.path.abspath(self.serverapp.root_dir),
            ENV_EVERY: f"{self.checkpoint_every:g}",
            ENV_AFTER: f"{self.checkpoint_after:g}",
            ENV_KEEP: self.keep,
        }
        store = self.store or os.environ.get("NBFERRY_STORE", "")
        if store:
            # Kernels run in their notebooks' folders: a relative store path would
            # name a different folder for each. It means one below the server's cwd.
            env["NBFERRY_STORE"] = store_url(store)
        self._check(env)
        os.environ.update(env)
        self.log.info(
            "nbferry: kernels save to %s; restore=%s; stop deadline %g s",
            os.environ.get("NBFERRY_STORE", "the default local store"),
            self.restore,
            self.stop_deadline,
        )

    def _check(self, env: dict[str, str]) -> None:
        """Refuse settings the kernels' agents would reject, with the setting and the fix.

        Checked with the parser the agents use (Schedule.from_env), here, where an
        operator reads the log: in a kernel, a typo in `keep` would be a line in its log.
        """
        traits = {ENV_KEEP: "keep", ENV_EVERY: "checkpoint_every", ENV_AFTER: "checkpoint_after"}
        for name, trait in traits.items():
            try:
                Schedule.from_env({name: env[name]})
            except ValueError as exc:
                message = (
                    f"nbferry: c.NbferryExtension.{trait} = {getattr(self, trait)!r} is "
                    f"invalid ({exc}). Fix it in jupyter_nbferry_config.json (or .py, or "
                    f"jupyter_server_config.py, or --NbferryExtension.{trait}=...)"
                    + (
                        ', e.g. keep = "last=10,hourly=24,daily=7", or "" for no retention'
                        if trait == "keep"
                        else " (0 turns it off)"
                    )
                    + ". The nbferry extension is not loaded: kernels are neither restored "
                    "at start nor checkpointed on a schedule."
                )
                self.log.error("%s", message)
                raise ValueError(message) from None

    async def stop_extension(self) -> None:
        """Checkpoint every kernel that runs an agent, before the server shuts kernels down."""
        from nbferry.migrator.saveall import checkpoint_all, summary

        agents, without = self._agents()
        for kernel_id in without:
            self.log.warning(
                "nbferry: kernel %s runs no agent and is not saved (run `nbferry install`)",
                kernel_id,
            )
        if not agents:
            return
        self.log.info("nbferry: saving %d kernels before the server stops", len(agents))
        results = await asyncio.to_thread(
            checkpoint_all,
            agents,
            deadline=self.stop_deadline,
            message="before the server stopped",
            interrupt=self.interrupt_busy,
            store_url=self.store,
        )
        for line in summary(results).splitlines():
            (self.log.info if not line.startswith("NOT") else self.log.warning)("nbferry: %s", line)

    def _agents(self) -> tuple[list[Any], list[str]]:
        """Agents of this server's kernels (from their discovery files), and kernels without."""
        km = self.serverapp.kernel_manager
        agents, without = [], []
        for kernel_id in km.list_kernel_ids():
            info = _agent(km, kernel_id)
            if info is None:
                without.append(kernel_id)
            else:
                agents.append(info)
        return agents, without


def _agent(km: Any, kernel_id: str) -> Any:
    from nbferry.migrator.agents import agent_of

    return agent_of(getattr(km.get_kernel(kernel_id), "connection_file", "") or "-")


class NbferryKernelManager(AsyncMappingKernelManager):
    """The server's kernel manager, but a kernel the idle culler stops is checkpointed first."""

    cull_save_deadline = Float(60.0, config=True, help="seconds to save a kernel being culled")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._culling: set[str] = set()

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        self._culling.add(kernel_id)  # the culler's shutdown_kernel call comes from in here
        try:
            await super().cull_kernel_if_idle(kernel_id)
        finally:
            self._culling.discard(kernel_id)

    async def shutdown_kernel(
        self, kernel_id: str, now: bool = False, restart: bool = False
    ) -> None:
        if kernel_id in self._culling and not restart:
            from nbferry.migrator.saveall import checkpoint_all, summary

            info = _agent(self, kernel_id)
            if info is not None:
                results = await asyncio.to_thread(
                    checkpoint_all,
                    [info],
                    deadline=self.cull_save_deadline,
                    message="before the idle culler stopped the kernel",
                )
                self.log.info("nbferry: %s", summary(results).splitlines()[0])
        await super().shutdown_kernel(kernel_id, now=now, restart=restart)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "nbferry.migrator.server_extension", "app": NbferryExtension}]
