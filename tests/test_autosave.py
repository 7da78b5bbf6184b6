"""The schedule's pure parts: settings from the environment, when the idle timer fires,
and the notebook path and user that make a session id; and, in a real kernel, that a
bad setting turns off only itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbferry.agent.autosave import Schedule, idle_checkpoint_due
from nbferry.agent.session import default_session_id, notebook_path, session_id_for
from nbferry.migrator.kernels import Kernel, KernelError
from nbferry.storage import open_store
from nbferry.storage.ids import validate_session_id


def test_schedule_reads_the_environment() -> None:
    s = Schedule.from_env(
        {
            "NBFERRY_CHECKPOINT_EVERY": "10",
            "NBFERRY_CHECKPOINT_AFTER": "60",
            "NBFERRY_KEEP": "last=5,daily=7",
            "NBFERRY_RESTORE": "Auto",
        }
    )
    assert (s.every, s.after, s.keep, s.restore, s.active) == (
        600,
        60,
        "last=5,daily=7",
        "auto",
        True,
    )
    off = Schedule.from_env({})
    assert (off.active, off.restore) == (False, "off")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"NBFERRY_CHECKPOINT_EVERY": "ten"}, "NBFERRY_CHECKPOINT_EVERY"),
        ({"NBFERRY_CHECKPOINT_AFTER": "-1"}, "NBFERRY_CHECKPOINT_AFTER"),
        ({"NBFERRY_RESTORE": "always"}, "NBFERRY_RESTORE"),
        ({"NBFERRY_KEEP": "last=many"}, "NBFERRY_KEEP"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Schedule.from_env(env)


def test_idle_timer_fires_only_after_cells_and_the_period() -> None:
    s = Schedule(every=600)
    assert idle_checkpoint_due(s, now=1000, last=300, cells_since=1)
    assert not idle_checkpoint_due(s, now=1000, last=500, cells_since=1)  # too soon
    assert not idle_checkpoint_due(s, now=1000, last=0, cells_since=0)  # nothing ran
    assert not idle_checkpoint_due(Schedule(), now=1000, last=0, cells_since=5)  # off


def test_notebook_path_is_relative_to_the_servers_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JPY_SESSION_NAME", "/srv/a/work/sub/nb.ipynb")
    monkeypatch.setenv("NBFERRY_NOTEBOOK_ROOT", "/srv/a/work")
    assert notebook_path({}) == "sub/nb.ipynb"
    on_a = default_session_id({})
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/b/sub/nb.ipynb")
    monkeypatch.setenv("NBFERRY_NOTEBOOK_ROOT", "/home/b")
    assert default_session_id({}) == on_a  # another server, another folder: same session
    monkeypatch.setenv("NBFERRY_NOTEBOOK_ROOT", "/elsewhere")
    assert notebook_path({}) == "/home/b/sub/nb.ipynb"  # outside the root: left absolute


def test_session_ids_of_two_users_never_collide() -> None:
    # "alice" + "a-b.ipynb" and "alice-a" + "b.ipynb" both read "alice-a-b.ipynb": on a
    # shared store, restore=auto would give one user the other's variables.
    mine, theirs = session_id_for("alice", "a-b.ipynb"), session_id_for("alice-a", "b.ipynb")
    assert mine != theirs
    assert theirs.startswith("alice-a-b.ipynb-") and validate_session_id(theirs) == theirs
    assert theirs == session_id_for("alice-a", "b.ipynb")  # stable
    assert session_id_for("alice-a", "b.ipynb") != session_id_for("alice-a", "c.ipynb")
    # Unambiguous ids stay what they were, so existing users still find their sessions.
    assert mine == "alice-a-b.ipynb"
    assert session_id_for("bob", "a.ipynb") == "bob-a.ipynb"
    assert session_id_for("bob.smith", "x_y.ipynb") == "bob.smith-x_y.ipynb"


def _notebook_kernel_env(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """Env of a notebook's kernel that loads the agent at start (`nbferry install`), as
    on a hub; the kernel's folder and runtime folder."""
    work, runtime, home = tmp_path / "work", tmp_path / "runtime", tmp_path / "home"
    for d in (work, runtime, home):
        d.mkdir()
    env = {**os.environ, "HOME": str(home), "JUPYTER_RUNTIME_DIR": str(runtime)}
    env.pop("IPYTHONDIR", None)
    installed = subprocess.run(
        [str(Path(sys.executable).with_name("nbferry")), "install"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    env.update(
        JUPYTERHUB_USER="alice",
        JPY_SESSION_NAME=str(work / "nb.ipynb"),
        NBFERRY_NOTEBOOK_ROOT=str(work),
        NBFERRY_STORE=(tmp_path / "store").as_uri(),
    )
    return env, work, runtime


def test_a_bad_keep_does_not_turn_off_restore_at_start(tmp_path: Path) -> None:
    env, work, runtime = _notebook_kernel_env(tmp_path)
    with Kernel(work, env, runtime_dir=runtime) as k:
        k.run("xs = [1, 2, 3]\n%nbferry checkpoint")
    typo = {"NBFERRY_RESTORE": "auto", "NBFERRY_KEEP": "last=ten"}
    with Kernel(work, {**env, **typo}, runtime_dir=runtime) as k:
        deadline = time.monotonic() + 60
        while True:  # the restore runs as the kernel starts
            try:
                assert k.value("xs") == [1, 2, 3]
                break
            except KernelError:
                assert time.monotonic() < deadline, "restore=auto did not restore"
                time.sleep(0.3)
        # The bad keep only turned off retention; the schedule knows it.
        assert (
            k.value("__import__('nbferry.agent.autosave').agent.autosave.current().schedule.keep")
            == ""
        )


def test_bad_settings_turn_off_only_themselves_when_asked() -> None:
    errors: list[str] = []
    s = Schedule.from_env(
        {"NBFERRY_RESTORE": "auto", "NBFERRY_KEEP": "last=ten", "NBFERRY_CHECKPOINT_EVERY": "5"},
        errors,
    )
    assert (s.restore, s.keep, s.every) == ("auto", "", 300)
    assert len(errors) == 1 and errors[0].startswith("NBFERRY_KEEP='last=ten'")
    assert "c.NbferryExtension.keep" in errors[0] and "last=10,hourly=24,daily=7" in errors[0]


def test_a_manual_checkpoint_is_not_saved_again_by_the_idle_timer(tmp_path: Path) -> None:
    env, work, runtime = _notebook_kernel_env(tmp_path)
    env["NBFERRY_CHECKPOINT_EVERY"] = "0.02"  # 1.2 s while idle
    store = open_store(env["NBFERRY_STORE"])
    with Kernel(work, env, runtime_dir=runtime) as k:
        k.run("x = 1\nr = %nbferry checkpoint -m mine")
        time.sleep(3.5)  # two idle periods: nothing ran since the checkpoint
        assert [store.read_manifest(r).message for r in store.list_checkpoints()] == ["mine"]
        k.run("y = 2")  # new work: the timer saves it
        deadline = time.monotonic() + 30
        while len(refs := store.list_checkpoints()) < 2:
            assert time.monotonic() < deadline, "the idle timer did not save the new cell"
            time.sleep(0.3)
        assert store.read_manifest(refs[-1]).message.endswith("idle timer")


def test_a_checkpoint_over_grpc_is_not_saved_again_by_the_idle_timer(tmp_path: Path) -> None:
    env, work, runtime = _notebook_kernel_env(tmp_path)
    env["NBFERRY_CHECKPOINT_EVERY"] = "0.15"  # 9 s after the agent started, if a cell ran
    store = open_store(env["NBFERRY_STORE"])
    with Kernel(work, env, runtime_dir=runtime) as k:
        started = time.monotonic()
        k.run("z = 3")
        cli = subprocess.run(
            [str(Path(sys.executable).with_name("nbferry")), "checkpoint",
             "--kernel", k.kernel_id, "-m", "over grpc"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert time.monotonic() - started < 8, "too slow to test the timer"
        time.sleep(max(0.0, started + 11 - time.monotonic()))  # the timer's first period
        messages = [store.read_manifest(r).message for r in store.list_checkpoints()]
        assert messages == ["over grpc"], messages


def test_a_misconfigured_scheduled_store_never_fails_a_checkpoint_elsewhere(
    tmp_path: Path,
) -> None:
    """Autosave compares every checkpoint's store with its own; that comparison
    must not fail a checkpoint to a good store when its own URL is unusable."""
    env, work, runtime = _notebook_kernel_env(tmp_path)
    env.update(NBFERRY_CHECKPOINT_EVERY="10", NBFERRY_STORE="nosuchproto://bucket/x")
    good = (tmp_path / "good").as_uri()
    with Kernel(work, env, runtime_dir=runtime) as k:
        k.run(f"x = 1\nr = %nbferry checkpoint --store {good}")
        assert k.value("r['store']") == good
    assert len(open_store(good).list_checkpoints()) == 1
