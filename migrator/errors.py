"""Errors of the migrator side, importable without jupyter_client (the CLI catches them)."""


class KernelError(RuntimeError):
    """A cell raised, or the kernel stopped answering."""
