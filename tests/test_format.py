"""Pure modules: ids, chunk codec, manifest envelope, signing."""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import numpy as np
import pytest

from nbferry.storage import chunks as ck
from nbferry.storage.errors import CorruptCheckpointError, FormatVersionError, SignatureError
from nbferry.storage.ids import (
    checkpoint_time,
    is_checkpoint_id,
    new_checkpoint_id,
    normalize_id_prefix,
)
from nbferry.storage.manifest import FORMAT_VERSION, MAGIC, decode_manifest, encode_manifest
from nbferry.storage.signing import SigningKey, load_signing_key
from nbferry.v1 import manifest_pb2 as pb


def test_ids_are_unique_sorted_and_carry_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbferry.storage import ids as ids_module

    monkeypatch.setattr(ids_module, "_last", ids_module._last)  # ids below go an hour ahead
    ids = [new_checkpoint_id() for _ in range(2000)]
    assert len(set(ids)) == 2000 and ids == sorted(ids)
    assert all(is_checkpoint_id(i) for i in ids)
    now = datetime.now(timezone.utc)
    assert abs((checkpoint_time(ids[-1]) - now).total_seconds()) < 5
    # A clock that steps back does not make ids go backwards.
    assert new_checkpoint_id(now_ms=1_000_000_000_000) > ids[-1]
    # An id from a host whose clock is ahead: the next one still sorts after it.
    ahead = new_checkpoint_id(now_ms=int(now.timestamp() * 1000) + 3_600_000)
    assert new_checkpoint_id(after=ahead) > ahead
    assert normalize_id_prefix(" 01abc ") == "01ABC"
    for bad in ("", "01L", "x" * 27, "01-2"):
        with pytest.raises(ValueError):
            normalize_id_prefix(bad)


def test_chunk_codec_choices() -> None:
    random = memoryview(np.random.default_rng(0).random(200_000).tobytes())
    zeros = memoryview(bytes(1 << 20))
    codec, stored = ck.encode(random)
    assert codec == pb.CODEC_RAW and len(stored) == len(random)
    codec, stored = ck.encode(zeros)
    assert codec == pb.CODEC_ZSTD and len(stored) < 1000
    out = bytearray(len(zeros))
    ck.decode_into(codec, stored, memoryview(out))
    assert out == zeros
    with pytest.raises(ValueError):
        ck.decode_into(codec, stored[:-3], memoryview(out))
    with pytest.raises(ValueError):
        ck.decode_into(pb.CODEC_RAW, b"abc", memoryview(bytearray(4)))
    assert [len(c) for c in ck.split(memoryview(bytes(10)), 4)] == [4, 4, 2]
    assert list(ck.split(memoryview(b""), 4)) == []
    with pytest.raises(ValueError, match="contiguous"):
        ck.as_byte_view(memoryview(np.arange(10)[::2]))


def _manifest() -> pb.Manifest:
    m = pb.Manifest(checkpoint_id=new_checkpoint_id(), session_id="s", message="hello")
    m.variables["x"].pod_id = "p0"
    return m


def test_manifest_round_trip_and_damage() -> None:
    key = SigningKey(b"k1", "test")
    data = encode_manifest(_manifest(), key)
    decoded = decode_manifest(data, "ckpt")
    assert decoded.manifest.message == "hello"
    assert decoded.manifest.format_version == FORMAT_VERSION
    key.verify(decoded.body, decoded.signature, "ckpt")

    for cut in (0, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(CorruptCheckpointError, match="ckpt is truncated"):
            decode_manifest(data[:cut], "ckpt")
    with pytest.raises(CorruptCheckpointError, match="bad magic"):
        decode_manifest(b"XXXX" + data[4:], "ckpt")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptCheckpointError, match="ckpt is damaged"):
        decode_manifest(bytes(flipped), "ckpt")


def test_newer_format_version_is_refused() -> None:
    data = encode_manifest(_manifest(), SigningKey(b"k", "test"))
    envelope = pb.ManifestFile.FromString(data[8:])
    envelope.format_version = FORMAT_VERSION + 1
    body = envelope.SerializeToString()
    with pytest.raises(FormatVersionError, match="upgrade nbferry"):
        decode_manifest(MAGIC + struct.pack("<I", len(body)) + body, "ckpt")


def test_signatures() -> None:
    mine, theirs = SigningKey(b"mine", "a"), SigningKey(b"theirs", "b")
    decoded = decode_manifest(encode_manifest(_manifest(), theirs), "ckpt")
    with pytest.raises(SignatureError, match=f"signed with key {theirs.key_id}.*{mine.key_id}"):
        mine.verify(decoded.body, decoded.signature, "ckpt")
    with pytest.raises(SignatureError, match="not signed"):
        mine.verify(decoded.body, pb.Signature(), "ckpt")
    forged = pb.Signature(algorithm="hmac-sha256", key_id=mine.key_id, value=b"0" * 32)
    with pytest.raises(SignatureError, match="modified after it was written"):
        mine.verify(decoded.body, forged, "ckpt")


def test_key_file_is_created_private_and_reused(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NBFERRY_SIGNING_KEY", raising=False)
    path = tmp_path / "cfg" / "signing.key"
    monkeypatch.setenv("NBFERRY_SIGNING_KEY_FILE", str(path))
    first = load_signing_key()
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_signing_key() == first
    assert len(first.secret) == 64
