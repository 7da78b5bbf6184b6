"""`nbferry list` and `nbferry show`, run as the installed console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import to_pod
from nbferry.migrator.kernels import Kernel
from nbferry.storage import open_store

NBFERRY = str(Path(sys.executable).with_name("nbferry"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NBFERRY, *args], capture_output=True, text=True, timeout=120)


def _fill(url: str, options: dict | None = None) -> list[str]:
    store = open_store(url, options)
    big = np.random.default_rng(3).random(1_000_000)
    first = store.write_checkpoint("alice-nb", [to_pod("p0", big, ["big"])], message="first")
    second = store.write_checkpoint(
        "alice-nb",
        [to_pod("p0", big, ["big"]), to_pod("p1", list(range(10)), ["small"])],
        message="second",
    )
    other = store.write_checkpoint("bob-nb", [to_pod("p0", {"x": 1}, ["x"])])
    return [first.checkpoint_id, second.checkpoint_id, other.checkpoint_id]


def test_list_and_show_on_a_folder(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    first, second, other = _fill(url)

    out = run("list", "--store", url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["CHECKPOINT", "SESSION", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == sorted([first, second, other])

    data = json.loads(run("list", "--store", url, "--session", "alice-nb", "--json").stdout)
    assert [c["checkpoint_id"] for c in data["checkpoints"]] == [first, second]
    assert data["checkpoints"][1]["parent_checkpoint_id"] == first
    assert data["checkpoints"][1]["variables"] == 2

    shown = json.loads(run("show", second[:14], "--store", url, "--json").stdout)
    assert shown["checkpoint_id"] == second and shown["signature"] == "verified"
    assert shown["chunks_uploaded"] < shown["chunks"]  # the big array was shared
    assert shown["shared_raw_bytes"] >= 8_000_000
    assert {p["pod_id"] for p in shown["pods"]} == {"p0", "p1"}
    assert shown["variables"]["small"]["pod_id"] == "p1"

    human = run("show", "latest", "--session", "alice-nb", "--store", url)
    assert human.returncode == 0, human.stderr
    assert f"checkpoint  {second}" in human.stdout
    assert "shared" in human.stdout and "message     second" in human.stdout


def test_list_on_s3_with_store_option(s3_endpoint: str, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/cli"
    ids = _fill(url, {"endpoint_url": s3_endpoint})
    out = run("list", "--store", url, "--store-option", f"endpoint_url={s3_endpoint}", "--json")
    assert out.returncode == 0, out.stderr
    assert [c["checkpoint_id"] for c in json.loads(out.stdout)["checkpoints"]] == sorted(ids)


def test_errors_and_exit_codes(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    first, second, _ = _fill(url)

    missing = run("show", "ZZZZZZ", "--store", url)
    assert missing.returncode == 1
    assert "no checkpoint 'ZZZZZZ'" in missing.stderr and "nbferry list" in missing.stderr
    assert "Traceback" not in missing.stderr

    ambiguous = run("show", first[:2], "--store", url)
    assert ambiguous.returncode == 1 and "matches 3 checkpoints" in ambiguous.stderr

    bad_option = run("list", "--store", url, "--store-option", "novalue")
    assert bad_option.returncode == 2 and "is not key=value" in bad_option.stderr

    assert run("frobnicate").returncode == 2

    # A damaged manifest is reported in the listing; the others still show.
    victim = tmp_path / "store" / "sessions" / "alice-nb" / f"{first}.ckpt"
    victim.write_bytes(victim.read_bytes()[:40])
    listing = run("list", "--store", url)
    assert listing.returncode == 0, listing.stderr
    assert "UNREADABLE" in listing.stdout and "truncated" in listing.stdout
    assert second in listing.stdout
    shown = run("show", first, "--store", url)
    assert shown.returncode == 1 and first in shown.stderr and "truncated" in shown.stderr


def test_empty_store_and_default_store(tmp_path: Path) -> None:
    env_store = (tmp_path / "env-store").as_uri()
    out = subprocess.run(
        [NBFERRY, "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "NBFERRY_STORE": env_store},
    )
    assert out.returncode == 0 and f"no checkpoints in {env_store}" in out.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("nbferry ")


def test_demo_moves_a_session_between_kernels(tmp_path: Path) -> None:
    out = run("demo", "--store", (tmp_path / "demo").as_uri(), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] is True, result
    assert all(result["identity_checks"].values())
    rows = {v["name"]: v for v in result["variables"]}
    for name in ("sales", "model", "weights", "top", "forecast", "runs", "Forecast", "with_tax"):
        assert rows[name]["same"], rows[name]
    # A generator cannot be stored: it is recreated by rerunning its cell.
    assert rows["batches"]["same"] and "batches" in result["checkpoint"]["recomputed"]
    assert result["checkpoint"]["skipped"] == []
    assert "batches" in result["restore"]["recomputed"]
    assert result["restore"]["failed"] == result["restore"]["lost"] == []


# -- --store as the caller means it; plan --kernel over gRPC ----------------------------


def _in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`nbferry ARGS` run from `cwd` (the caller's folder), as a user in a shell would."""
    return subprocess.run(
        [NBFERRY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def _kernel_env(tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """Env whose runtime folder the CLI shares with the kernel; the kernel's and caller's cwd."""
    runtime, kernel_cwd, here = tmp_path / "runtime", tmp_path / "kernel-cwd", tmp_path / "here"
    for d in (runtime, kernel_cwd, here):
        d.mkdir()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    env.pop("NBFERRY_S3_ENDPOINT_URL", None)  # --store-option must be what reaches S3
    return env, runtime, kernel_cwd, here


def test_a_relative_store_is_the_callers_folder_not_the_kernels(tmp_path: Path) -> None:
    env, runtime, kernel_cwd, here = _kernel_env(tmp_path)
    with Kernel(kernel_cwd, env, runtime_dir=runtime) as k:
        k.run("%load_ext nbferry.agent\nx = list(range(10))")
        out = _in(here, env, "checkpoint", "--kernel", k.kernel_id, "--store", "relstore",
                  "--session", "rel", "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["store"] == f"file://{(here / 'relstore').as_posix()}"
        listed = _in(here, env, "list", "--store", "relstore", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [c["checkpoint_id"] for c in json.loads(listed.stdout)["checkpoints"]] == [
            report["checkpoint_id"]
        ]
        assert not (kernel_cwd / "relstore").exists()
        # file:relstore (fsspec reads it as a relative path too) reaches the kernel absolute.
        k.run("del x")
        out = _in(here, env, "restore", "latest", "--kernel", k.kernel_id,
                  "--store", "file:relstore", "--session", "rel", "--json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert k.value("x") == list(range(10))


def test_migrate_refuses_any_local_store_for_another_host(tmp_path: Path) -> None:
    env = dict(os.environ)
    for store in ("relstore", str(tmp_path / "abs"), "file:relstore", (tmp_path / "u").as_uri()):
        out = _in(tmp_path, env, "migrate", "--kernel", "no-such-kernel", "--to", "gpu-box:7878",
                  "--store", store)  # fmt: skip
        assert out.returncode == 2, (store, out.stderr)
        assert "is a folder on this machine" in out.stderr, out.stderr
        assert f"file://{tmp_path.as_posix()}/" in out.stderr, out.stderr
    # A store both hosts reach passes the check (and then the kernel is looked up).
    out = _in(tmp_path, env, "migrate", "--kernel", "no-such-kernel", "--to", "gpu-box:7878",
              "--store", "s3://bucket/p")  # fmt: skip
    assert out.returncode == 1 and "no kernel 'no-such-kernel'" in out.stderr, out.stderr


def test_serve_hands_its_kernels_an_absolute_store(tmp_path: Path) -> None:
    here, workdir = tmp_path / "here", tmp_path / "kernels"
    here.mkdir()
    workdir.mkdir()
    env = {**os.environ, "NBFERRY_TOKEN": "t0ken"}
    proc = subprocess.Popen(
        [NBFERRY, "serve", "--listen", "127.0.0.1:0", "--store", "rel", "--workdir",
         str(workdir), "--spare-kernels", "0"],
        cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        ready = json.loads(proc.stdout.readline() if proc.stdout else "{}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.stdout:
            proc.stdout.close()
    assert ready["store"] == f"file://{(here / 'rel').as_posix()}"


def test_plan_in_a_kernel_takes_store_options_and_paths_with_spaces(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    env, runtime, kernel_cwd, here = _kernel_env(tmp_path)
    spaced = str(tmp_path / "store with space")
    s3 = ["--store", f"s3://{s3_bucket}/p", "--store-option", f"endpoint_url={s3_endpoint}"]
    with Kernel(kernel_cwd, env, runtime_dir=runtime) as k:
        k.run("%load_ext nbferry.agent\nx = list(range(10))")
        for store in (["--store", spaced], s3):
            out = _in(here, env, "checkpoint", "--kernel", k.kernel_id, *store)
            assert out.returncode == 0, out.stderr
            out = _in(here, env, "plan", "--kernel", k.kernel_id[:8], *store, "--store-all",
                      "--json")  # fmt: skip
            assert out.returncode == 0, out.stderr
            planned = json.loads(out.stdout)
            assert planned["store"] == ["x"] and planned["infeasible"] == {}, planned
            human = _in(here, env, "plan", "--kernel", k.kernel_id, *store)
            assert human.returncode == 0 and f"kernel {k.kernel_id}" in human.stdout, human.stderr
