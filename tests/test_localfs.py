"""LocalFolder answers Backend's calls the way fsspec's LocalFileSystem does."""

from __future__ import annotations

from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from nbferry.storage.backend import Backend
from nbferry.storage.localfs import LocalFolder, local_root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"0123456789")
    (tmp_path / "a" / "b" / "two").write_bytes(b"xy")
    (tmp_path / "top").write_bytes(b"")
    (tmp_path / "a" / "to-b").symlink_to(tmp_path / "a" / "b")  # listed, never followed
    (tmp_path / "a" / "to-one").symlink_to(tmp_path / "a" / "one")
    (tmp_path / "a" / "broken").symlink_to(tmp_path / "nowhere")
    return tmp_path


def test_same_answers_as_fsspec(tree: Path) -> None:
    ours, theirs = LocalFolder(), LocalFileSystem()
    root, one = str(tree), str(tree / "a" / "one")
    assert ours.find(root) == theirs.find(root)
    assert ours.find(one) == theirs.find(one)
    assert ours.find(str(tree / "missing")) == theirs.find(str(tree / "missing")) == []
    detail, expected = ours.find(root, detail=True), theirs.find(root, detail=True)
    assert list(detail) == list(expected)
    for path, info in detail.items():
        assert (info["size"], info["type"], info["mtime"]) == (
            expected[path]["size"],
            expected[path]["type"],
            expected[path]["mtime"],
        ), path
    assert detail[str(tree / "a" / "to-b")]["type"] == "other"
    listed = [(e["name"], e["type"]) for e in ours.ls(str(tree / "a"), detail=True)]
    assert listed == sorted((e["name"], e["type"]) for e in theirs.ls(str(tree / "a"), detail=True))
    for start, end in [(None, None), (2, 5), (8, None), (-3, None), (0, -2), (20, None), (4, 99)]:
        assert ours.cat_file(one, start, end) == theirs.cat_file(one, start, end), (start, end)
    assert ours.info(one)["size"] == theirs.info(one)["size"] == 10
    assert [e["type"] for e in ours.ls(one, detail=True)] == ["file"]
    assert ours.ls(one) == theirs.ls(one) == [one]
    for call in (ours.info, theirs.info, ours.rm_file, theirs.rm_file, ours.cat_file):
        with pytest.raises(FileNotFoundError):
            call(str(tree / "missing"))
    with pytest.raises(FileNotFoundError):
        ours.ls(str(tree / "missing"))


def test_only_plain_absolute_urls_skip_fsspec(tmp_path: Path) -> None:
    assert local_root(f"file://{tmp_path}/", None) == str(tmp_path)
    assert local_root(str(tmp_path), None) == str(tmp_path)
    for url in ("file://rel/x", "file://~/x", "rel", "memory://x", "s3://b/p", "simplecache::/x"):
        assert local_root(url, None) is None, url
    assert local_root(f"file://{tmp_path}", {"auto_mkdir": True}) is None
    # Both ways to a local folder give a local backend that sees the same blobs.
    fast = Backend(f"file://{tmp_path}/s")
    slow = Backend(f"file://{tmp_path}/s", {"auto_mkdir": True})
    assert isinstance(fast.fs, LocalFolder) and isinstance(slow.fs, LocalFileSystem)
    assert fast.local and slow.local and not fast.s3
    fast.put("x/1", [b"ab", b"cd"])
    assert slow.get("x/1") == b"abcd" and slow.list("x") == fast.list("x") == ["x/1"]
    assert fast.get("x/1", 1, 3) == b"bc" and fast.size("x/1") == 4 and fast.size("x/2") is None
    assert fast.subfolders("") == slow.subfolders("") == ["x"]
    fast.delete("x/1")
    assert slow.size("x/1") is None


def test_filesystem_root_store_keeps_absolute_paths() -> None:
    # Stripping "/" to "" once turned every key into a path under the working directory.
    for url in ("file:///", "/"):
        backend = Backend(url)
        assert backend.path("blobs/ab/cd") == "/blobs/ab/cd"
        assert backend.key_of("/blobs/ab/cd") == "blobs/ab/cd"
    folder = Backend("file:///srv/store/")
    assert folder.path("manifests/x") == "/srv/store/manifests/x"
    assert folder.key_of("/srv/store/manifests/x") == "manifests/x"


def test_default_store_path_is_not_percent_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS puts user data under "Application Support": Path.as_uri() would
    # give "%20", which nothing decodes, so the store landed in another folder.
    from nbferry.storage import PodData, default_store_url, open_store

    monkeypatch.delenv("NBFERRY_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "Application Support"))
    url = default_store_url()
    assert "%" not in url and url.endswith("/Application Support/nbferry/store")
    result = open_store().write_checkpoint("s", [PodData("p0", b"header", [], ["x"])])
    assert (tmp_path / "Application Support" / "nbferry" / "store").is_dir()
    assert not list(tmp_path.glob("Application%20Support*"))
    assert open_store(url).resolve(result.checkpoint_id).checkpoint_id == result.checkpoint_id
