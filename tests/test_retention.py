"""Retention policies: which checkpoints of a session to keep (pure), and applying one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conftest import to_pod
from nbferry.storage import Store
from nbferry.storage.retention import Policy, apply_retention, doomed, keep
from nbferry.storage.store import CheckpointRef

UTC = timezone.utc
NOW = datetime(2025, 3, 10, 12, 30, tzinfo=UTC)


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def test_parse() -> None:
    assert Policy.parse("last=10,hourly=24,daily=7") == Policy(10, 24, 7)
    assert Policy.parse(" daily = 3 ") == Policy(0, 0, 3)
    assert Policy.parse("last=0") == Policy() and not Policy().enabled
    assert str(Policy(1, 2, 3)) == "last=1,hourly=2,daily=3"
    for text, bad in [
        ("last=10,weekly=4", "'weekly'"),
        ("last=ten", "'last=ten'"),
        ("last=-1", "'last=-1'"),
        ("last", "'last'"),
        ("last=1,,daily=2", "''"),
        ("last=1,last=2", "'last' is given twice"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=bad):
            Policy.parse(text)
    with pytest.raises(ValueError, match="hourly"):
        Policy(hourly=-2)


def test_keep_last() -> None:
    times = [ago(minutes=m) for m in (50, 40, 30, 20, 10)]  # oldest first
    assert keep(times, Policy(last=2), NOW) == {3, 4}
    assert keep(times, Policy(last=9), NOW) == {0, 1, 2, 3, 4}
    # Any order: indexes refer to the list as given.
    assert keep(list(reversed(times)), Policy(last=2), NOW) == {0, 1}


def test_keep_hourly_is_the_newest_of_each_clock_hour() -> None:
    times = [
        datetime(2025, 3, 10, 12, 5, tzinfo=UTC),  # 0: this hour, older
        datetime(2025, 3, 10, 12, 25, tzinfo=UTC),  # 1: this hour, newest
        datetime(2025, 3, 10, 11, 59, tzinfo=UTC),  # 2: 11:00, newest
        datetime(2025, 3, 10, 11, 0, tzinfo=UTC),  # 3: 11:00
        datetime(2025, 3, 10, 9, 30, tzinfo=UTC),  # 4: 09:00 (no checkpoint at 10:00)
        datetime(2025, 3, 10, 8, 59, tzinfo=UTC),  # 5: 08:00, outside 4 hours
    ]
    # The last 4 clock hours are 12:00, 11:00, 10:00 and 09:00.
    assert keep(times, Policy(hourly=4), NOW) == {1, 2, 4}
    assert keep(times, Policy(hourly=1), NOW) == {1}
    assert keep(times, Policy(hourly=5), NOW) == {1, 2, 4, 5}


def test_keep_daily_uses_utc_days() -> None:
    times = [
        datetime(2025, 3, 10, 1, 0, tzinfo=UTC),  # 0: today
        datetime(2025, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-2))),  # 1: today 01:30 UTC
        datetime(2025, 3, 9, 22, 0, tzinfo=UTC),  # 2: the 9th, newest
        datetime(2025, 3, 9, 3, 0, tzinfo=UTC),  # 3: the 9th
        datetime(2025, 3, 7, 12, 0, tzinfo=UTC),  # 4: the 7th (nothing on the 8th)
    ]
    assert keep(times, Policy(daily=2), NOW) == {1, 2}
    assert keep(times, Policy(daily=3), NOW) == {1, 2}
    assert keep(times, Policy(daily=4), NOW) == {1, 2, 4}
    assert keep(times, Policy(last=3, daily=1), NOW) == {0, 1, 2}


def test_keep_combines_rules_and_always_keeps_the_newest() -> None:
    times = [ago(days=d) for d in (30, 20, 10, 3, 2)]
    # Nothing is within one hour, yet the newest stays.
    assert keep(times, Policy(hourly=1), NOW) == {4}
    assert keep(times, Policy(last=1, daily=4), NOW) == {3, 4}
    assert keep(times, Policy(last=2, daily=11), NOW) == {2, 3, 4}


def test_all_zeros_keeps_everything_and_future_times_are_kept() -> None:
    times = [ago(days=400), ago(hours=1), NOW + timedelta(hours=3)]
    assert keep(times, Policy(), NOW) == {0, 1, 2}
    assert keep([], Policy(last=1), NOW) == set()
    # A checkpoint from a host whose clock runs ahead is kept, and is not "the newest"
    # that the policy counts from: the newest up to now is kept as well.
    assert keep(times, Policy(last=1), NOW) == {1, 2}
    # Naive datetimes are UTC.
    naive = [t.replace(tzinfo=None) for t in times[:2]]
    assert keep(naive, Policy(last=1), NOW) == {1}


def test_doomed_applies_the_policy_per_session() -> None:
    ids = {
        ("a", 1): "01JNXXXXXXAAAAAAAAAAAAAAAA",
        ("a", 2): "01JNXXXXXYAAAAAAAAAAAAAAAA",
        ("b", 1): "01JNXXXXXXBBBBBBBBBBBBBBBB",
    }
    refs = [CheckpointRef(cid, s, f"sessions/{s}/{cid}.ckpt") for (s, _), cid in ids.items()]
    gone = doomed(refs, Policy(last=1), NOW)
    assert [r.checkpoint_id for r in gone] == [ids[("a", 1)]]  # b's only one stays
    assert doomed(refs, Policy(), NOW) == []


def test_apply_retention_deletes_to_the_trash(memory_store: Store) -> None:
    store = memory_store
    written = [store.write_checkpoint("nb", [to_pod("p", i)]).checkpoint_id for i in range(5)]
    other = store.write_checkpoint("other", [to_pod("p", "x")]).checkpoint_id

    would = apply_retention(store, "nb", Policy(last=2), dry_run=True)
    assert [r.checkpoint_id for r in would] == written[:3]
    assert len(store.list_checkpoints()) == 6  # a dry run deletes nothing

    gone = apply_retention(store, "nb", Policy(last=2))
    assert [r.checkpoint_id for r in gone] == written[:3]
    assert [r.checkpoint_id for r in store.list_checkpoints()] == [*written[3:], other]
    trashed = store.backend.list("trash")
    assert sorted(k.rsplit("/", 1)[-1] for k in trashed) == sorted(
        f"{cid}.ckpt" for cid in written[:3]
    )
    assert apply_retention(store, "nb", Policy()) == []  # retention off
    # Checkpoints of "now" are all within the hour: hourly=1 keeps just the newest.
    assert [r.checkpoint_id for r in apply_retention(store, "nb", Policy(hourly=1))] == [written[3]]
