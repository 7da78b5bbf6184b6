"""nbferry.storage: content-addressed, compressed, deduplicated checkpoints on any fsspec URL.

    from nbferry.storage import open_store, PodData
    store = open_store("s3://bucket/prefix")
    result = store.write_checkpoint("alice-analysis", [PodData("p0", header, buffers, ["df"])])
    manifest = store.read_manifest(result.checkpoint_id)
    pods = store.read_pods(manifest)

This package never imports nbferry.agent or nbferry.migrator.
"""

from typing import TYPE_CHECKING, Any

from nbferry.storage.errors import (
    AmbiguousCheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    FormatVersionError,
    SignatureError,
    StoreAccessError,
    StoreError,
)
from nbferry.storage.location import default_store_url, parse_options

if TYPE_CHECKING:
    from nbferry.storage.store import CheckpointRef, PodData, Store, WriteResult, open_store


def nbferry_version() -> str:
    """The installed nbferry's version (manifests record it; `nbferry --version`)."""
    from importlib import metadata  # ~20 ms: only for commands that write or print it

    try:
        return metadata.version("nbferry")
    except metadata.PackageNotFoundError:
        return "0+unknown"


_FROM_STORE = ("CheckpointRef", "PodData", "Store", "WriteResult", "open_store")


def __getattr__(name: str) -> Any:
    """The store module (fsspec, s3fs, zstandard) loads on first use: a CLI command
    or kernel that never opens a store does not pay ~100 ms to import it."""
    if name in _FROM_STORE:
        from nbferry.storage import store

        return getattr(store, name)
    raise AttributeError(f"module 'nbferry.storage' has no attribute {name!r}")


__all__ = [
    "AmbiguousCheckpointError",
    "CheckpointNotFoundError",
    "CheckpointRef",
    "CorruptCheckpointError",
    "FormatVersionError",
    "PodData",
    "SignatureError",
    "Store",
    "StoreAccessError",
    "StoreError",
    "WriteResult",
    "default_store_url",
    "nbferry_version",
    "open_store",
    "parse_options",
]
