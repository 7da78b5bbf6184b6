"""The store speed probe: measured through the real write/read path, cached, cleaned up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nbferry.storage import Store
from nbferry.storage import speed as sp


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NBFERRY_SPEED_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "store-speed.json"


def test_probe_measures_and_leaves_nothing_behind(store: Store, cache: Path) -> None:
    measured = sp.store_speed(store)
    assert measured.write_bytes_per_second > 0 and measured.read_bytes_per_second > 0
    assert 0 <= measured.latency_seconds < 5
    assert store.backend.list("probe/") == []
    assert json.loads(cache.read_text())[sp.speed_key(store)]["measured_at"] == measured.measured_at


def test_cached_speed_is_reused_until_stale(
    file_store: Store, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sp.store_speed(file_store)
    calls = []
    monkeypatch.setattr(sp, "measure", lambda store: calls.append(store) or first)
    assert sp.store_speed(file_store) == first and calls == []
    entry = json.loads(cache.read_text())
    entry[sp.speed_key(file_store)]["measured_at"] = time.time() - sp.MAX_AGE - 1
    cache.write_text(json.dumps(entry))
    sp.store_speed(file_store)
    assert calls == [file_store]


def test_a_speed_from_an_older_probe_is_measured_again(file_store: Store, cache: Path) -> None:
    first = sp.store_speed(file_store)
    assert first.probe == sp.PROBE_VERSION
    entries = json.loads(cache.read_text())
    for entry in entries.values():
        del entry["probe"]  # as written before the probe had versions
    cache.write_text(json.dumps(entries))
    assert sp.cached_speed(file_store) is None
    assert sp.store_speed(file_store).measured_at > first.measured_at


def test_a_damaged_cache_is_measured_again(file_store: Store, cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert sp.store_speed(file_store).measured_at > 0


def test_costs_grow_with_size_and_requests() -> None:
    speed = sp.StoreSpeed(100e6, 200e6, 0.01)
    assert speed.write_seconds(100_000_000) == pytest.approx(1 + 0.01 * 100e6 / (4 << 20))
    assert speed.read_seconds(0) == pytest.approx(0.01 / 32)


def test_folders_on_one_disk_share_a_speed(tmp_path: Path, s3_store: Store) -> None:
    a = Store((tmp_path / "a").as_uri())
    b = Store((tmp_path / "b" / "not-yet").as_uri())
    assert sp.speed_key(a) == sp.speed_key(b) and sp.speed_key(a).startswith("file:device=")
    assert sp.speed_key(s3_store).startswith("s3://") and "127.0.0.1" in sp.speed_key(s3_store)


def test_real_transfers_refine_the_cached_speed(file_store: Store, cache: Path) -> None:
    first = sp.store_speed(file_store)
    sp.observe(file_store, written=1 << 20, seconds=100.0)  # too small to count
    assert sp.store_speed(file_store) == first
    sp.observe(file_store, written=64 << 20, seconds=1.0)
    blended = sp.store_speed(file_store).write_bytes_per_second
    assert blended == pytest.approx((first.write_bytes_per_second + (64 << 20)) / 2)
