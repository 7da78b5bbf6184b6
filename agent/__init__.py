"""nbferry.agent: the in-kernel agent. Load it with `%load_ext nbferry.agent`.

Loading registers the %nbferry magic and starts the recorder (IPython cell
events plus an audit hook); capture, planning and storage are imported when
first used, so the extension adds little to kernel start-up.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from nbferry.agent.magics import NbferryMagics
    from nbferry.agent.recorder import attach

    ipython.register_magics(NbferryMagics)
    attach(ipython)  # records every later cell: what it read, wrote and cost


def unload_ipython_extension(ipython: Any) -> None:
    from nbferry.agent.recorder import detach

    detach(ipython)
    ipython.magics_manager.registry.pop("NbferryMagics", None)
    ipython.magics_manager.magics["line"].pop("nbferry", None)
