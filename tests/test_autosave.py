"""The schedule's pure parts: settings from the environment, when the idle timer fires,
and the notebook path that makes a session id the same on every server."""

from __future__ import annotations

import pytest

from nbferry.agent.autosave import Schedule, idle_checkpoint_due
from nbferry.agent.session import default_session_id, notebook_path


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
