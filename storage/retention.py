"""Which checkpoints of a session to keep: a retention policy (pure, plus one I/O helper).

    policy = Policy.parse("last=10,hourly=24,daily=7")
    kept = keep([ref.created for ref in refs], policy, now)

A checkpoint is kept when it is one of the newest `last`, or the newest in one
of the last `hourly` clock hours, or the newest in one of the last `daily` UTC
days (the hour or day that holds `now` counts as the first). The newest
checkpoint is always kept. Checkpoints newer than `now` (another host's clock
runs ahead) are kept too, and the policy counts only the others. A policy of
all zeros keeps everything: retention off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbferry.storage.store import CheckpointRef, Store


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"retention policy: {f.name}={value!r} must be a whole number >= 0"
                )

    @property
    def enabled(self) -> bool:
        """False for all zeros: nothing is deleted."""
        return bool(self.last or self.hourly or self.daily)

    @classmethod
    def parse(cls, text: str) -> Policy:
        """'last=10,hourly=24,daily=7'; parts left out are 0."""
        names = [f.name for f in fields(cls)]
        values: dict[str, int] = {}
        parts = [p.strip() for p in text.split(",")]
        if not text.strip():
            raise ValueError(
                "empty retention policy: give e.g. 'last=10,hourly=24,daily=7' "
                "(all zeros keeps everything)"
            )
        for part in parts:
            name, eq, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not part or not eq:
                raise ValueError(
                    f"retention policy {text!r}: {part!r} is not NAME=NUMBER "
                    f"(names: {', '.join(names)})"
                )
            if name not in names:
                raise ValueError(
                    f"retention policy {text!r}: unknown name {name!r} in {part!r} "
                    f"(names: {', '.join(names)})"
                )
            if name in values:
                raise ValueError(f"retention policy {text!r}: {name!r} is given twice")
            if not value.isdigit():
                raise ValueError(f"retention policy {text!r}: {part!r} needs a whole number >= 0")
            values[name] = int(value)
        return cls(**values)

    def __str__(self) -> str:
        return f"last={self.last},hourly={self.hourly},daily={self.daily}"


def keep(times: Sequence[datetime], policy: Policy, now: datetime) -> set[int]:
    """Indexes into `times` of the checkpoints the policy keeps (any order of times)."""
    if not times:
        return set()
    if not policy.enabled:
        return set(range(len(times)))
    now = _utc(now)
    utc = [_utc(t) for t in times]
    newest_first = sorted(range(len(utc)), key=lambda i: (utc[i], i), reverse=True)
    # Checkpoints from the future (a clock ahead of ours) are kept, and do not
    # count: the policy applies to the ones up to now.
    kept: set[int] = {i for i in newest_first if utc[i] > now}
    newest_first = [i for i in newest_first if utc[i] <= now]
    kept.update(newest_first[: max(policy.last, 1)])  # the newest always stays
    for count, unit in ((policy.hourly, "hour"), (policy.daily, "day")):
        if not count:
            continue
        oldest = _back(_floor(now, unit), unit, count - 1)  # start of the oldest bucket kept
        seen: set[datetime] = set()
        for i in newest_first:  # newest first: the first one met in a bucket is its newest
            start = _floor(utc[i], unit)
            if start < oldest:
                break  # every later one is older still
            if start not in seen:
                seen.add(start)
                kept.add(i)
    return kept


def _floor(t: datetime, unit: str) -> datetime:
    t = t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0) if unit == "day" else t


def _back(t: datetime, unit: str, n: int) -> datetime:
    return t - (timedelta(days=n) if unit == "day" else timedelta(hours=n))


def _utc(t: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def doomed(refs: Sequence[CheckpointRef], policy: Policy, now: datetime) -> list[CheckpointRef]:
    """The checkpoints (of any number of sessions) that the policy, applied to
    each session on its own, does not keep; in the order given."""
    if not policy.enabled:
        return []
    by_session: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        by_session.setdefault(ref.session_id, []).append(i)
    kept: set[int] = set()
    for indexes in by_session.values():
        kept.update(indexes[j] for j in keep([refs[i].created for i in indexes], policy, now))
    return [ref for i, ref in enumerate(refs) if i not in kept]


def apply_retention(
    store: Store,
    session_id: str,
    policy: Policy,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[CheckpointRef]:
    """Delete the session's checkpoints the policy does not keep (or, with dry_run,
    only say which); returns them, oldest first.

    Deleted manifests go to the store's trash, so their blobs stay until garbage
    collection has let the grace period pass (see nbferry.storage.gc).
    """
    if not policy.enabled:
        return []
    refs = store.list_checkpoints(session_id)
    gone = doomed(refs, policy, now or datetime.now(timezone.utc))
    if not dry_run:
        for ref in gone:
            store.delete_checkpoint(ref)
    return gone
