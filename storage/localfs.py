"""A local folder with the few fsspec filesystem calls Backend makes, without fsspec.

Importing fsspec costs ~60 ms from a cold disk, more than the rest of the
restore path together, and a `file://` store needs none of it: Backend writes
local blobs with os calls already. Semantics follow fsspec's LocalFileSystem
for the calls used (paths are absolute, `find` lists files only, sorted).
"""

from __future__ import annotations

import os
import stat
from typing import Any


def local_root(url: str, options: dict[str, Any] | None) -> str | None:
    """The folder of a plain local store URL, or None for anything fsspec must open.

    Only absolute `file:///…` URLs and absolute paths without options qualify,
    so every other form (relative paths, `~`, chained URLs) keeps fsspec's
    exact interpretation.
    """
    if options:
        return None
    path = url[len("file://") :] if url.startswith("file://") else url
    if "://" in path or "::" in path or not path.startswith("/"):
        return None
    return path.rstrip("/") or "/"


class LocalFolder:
    """fsspec-like access to local files: the subset Backend uses."""

    protocol = ("file", "local")

    def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        with open(path, "rb") as f:
            if start is None and end is None:
                return f.read()
            size = os.fstat(f.fileno()).st_size
            begin = _offset(start or 0, size)
            stop = size if end is None else _offset(end, size)
            f.seek(begin)
            return f.read(max(0, stop - begin))

    def info(self, path: str) -> dict[str, Any]:
        """What a path is, following links (FileNotFoundError for a broken one)."""
        st = os.stat(path)
        return {"name": path, "size": st.st_size, "type": _kind(st.st_mode), "mtime": st.st_mtime}

    def _listed(self, path: str) -> dict[str, Any]:
        """A listed entry, as fsspec describes one: a link is "other" (sized by its
        target, 0 when broken), so nothing that lists entries follows it."""
        st = os.lstat(path)
        kind, size = _kind(st.st_mode), st.st_size
        if stat.S_ISLNK(st.st_mode):
            try:
                size = os.stat(path).st_size
            except OSError:
                size = 0
        return {"name": path, "size": size, "type": kind, "mtime": st.st_mtime}

    def find(self, path: str, detail: bool = False) -> Any:
        """Files (and links to folders, not followed) under a folder, or the file itself,
        sorted; nothing when it does not exist."""
        if os.path.isfile(path):
            names = [path]
        else:
            names = []
            for folder, dirs, files in os.walk(path):
                links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
                names.extend(os.path.join(folder, name) for name in [*files, *links])
            names.sort()
        if not detail:
            return names
        found = {}
        for name in names:
            try:
                found[name] = self._listed(name)
            except FileNotFoundError:  # removed while listing
                continue
        return found

    def ls(self, path: str, detail: bool = False) -> list[Any]:
        if not os.path.isdir(path):
            entries = [self.info(path)]  # a file lists itself; FileNotFoundError when missing
            return entries if detail else [path]
        entries = []
        with os.scandir(path) as it:
            for entry in it:
                kind = _kind(entry.stat(follow_symlinks=False).st_mode)
                entries.append({"name": entry.path, "type": kind})
        entries.sort(key=lambda e: e["name"])
        return entries if detail else [e["name"] for e in entries]

    def rm_file(self, path: str) -> None:
        os.remove(path)

    def invalidate_cache(self, path: str | None = None) -> None:
        """Nothing is cached."""


def _kind(mode: int) -> str:
    """fsspec's entry types; a link (from lstat) is "other"."""
    if stat.S_ISDIR(mode):
        return "directory"
    return "file" if stat.S_ISREG(mode) else "other"


def _offset(value: int, size: int) -> int:
    """A byte offset as fsspec reads it: negative counts from the end."""
    return max(0, size + value) if value < 0 else min(value, size)
