"""nbferry.agent: the in-kernel agent. Load it with `%load_ext nbferry.agent`.

Loading only registers the %nbferry magic; everything else is imported when
first used, so the extension adds next to nothing to kernel start-up.
"""

from __future__ import annotations

from typing import Any


def load_ipython_extension(ipython: Any) -> None:
    from nbferry.agent.magics import NbferryMagics

    ipython.register_magics(NbferryMagics)


def unload_ipython_extension(ipython: Any) -> None:
    ipython.magics_manager.registry.pop("NbferryMagics", None)
    ipython.magics_manager.magics["line"].pop("nbferry", None)
