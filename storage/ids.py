"""Checkpoint and session identifiers (pure).

Checkpoint ids follow the ULID layout: 48 bits of milliseconds since the epoch
then 80 random bits, in Crockford base32. They are globally unique without
coordination, sort by creation time as plain strings, and abbreviate well.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timezone

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
ID_LENGTH = 26

_lock = threading.Lock()
_last = (0, 0)  # (ms, random) of the last id made here, for monotonic ids within a ms

_SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]{0,199}$")
_ID_CHARS_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]+$")


def _encode(value: int) -> str:
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_checkpoint_id(now_ms: int | None = None, after: str = "") -> str:
    """A new id; ids made in one process are strictly increasing.

    It also sorts after `after` (its session's latest checkpoint) when that
    one comes from a host whose clock runs ahead: `latest` is the last id, and
    must be the checkpoint written last. Only this session's id moves ahead
    (retention then keeps it as a checkpoint from the future until our clock
    passes it); the process's other ids keep this host's time.
    """
    global _last
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    if after and _millis(after) >= ms:
        rand = int.from_bytes(os.urandom(10), "big")
        return _encode(((_millis(after) + 1) << 80) | rand)
    with _lock:
        last_ms, last_rand = _last
        if ms <= last_ms:
            ms, rand = last_ms, last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last = (ms, rand)
    return _encode((ms << 80) | (rand & ((1 << 80) - 1)))


def normalize_id_prefix(text: str) -> str:
    """Upper-case a user-typed id or prefix and check its characters."""
    prefix = text.strip().upper()
    if not prefix or len(prefix) > ID_LENGTH or not _ID_CHARS_RE.match(prefix):
        raise ValueError(
            f"{text!r} is not a checkpoint id or prefix: ids are up to {ID_LENGTH} characters "
            "of 0-9 and A-Z without I, L, O, U (see `nbferry list`)"
        )
    return prefix


def is_checkpoint_id(text: str) -> bool:
    return len(text) == ID_LENGTH and bool(_ID_CHARS_RE.match(text))


def checkpoint_time(checkpoint_id: str) -> datetime:
    """The UTC creation time encoded in an id."""
    return datetime.fromtimestamp(_millis(checkpoint_id) / 1000, tz=timezone.utc)


def _millis(checkpoint_id: str) -> int:
    value = 0
    for c in checkpoint_id[:10]:
        value = (value << 5) | _DECODE[c]
    return value


def validate_session_id(session_id: str) -> str:
    """Session ids become one path component in the store, so keep them plain."""
    if not _SESSION_RE.match(session_id) or ".." in session_id:
        raise ValueError(
            f"invalid session id {session_id!r}: use 1-200 characters of letters, digits and "
            "'._@+=-', starting with a letter or digit"
        )
    return session_id
