"""The wheel installs everything under the one `nbferry` namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_layout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("nbferry-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"nbferry", wheel.name.split("-py3")[0] + ".dist-info"}
    for needed in (
        "nbferry/storage/store.py",
        "nbferry/agent/__init__.py",
        "nbferry/migrator/cli.py",
        "nbferry/v1/manifest_pb2.py",
        "nbferry/v1/manifest.proto",
    ):
        assert needed in names
    assert not any(n.startswith("nbferry/__init__") for n in names)  # a namespace package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "nbferry = nbferry.migrator.cli:main" in text
