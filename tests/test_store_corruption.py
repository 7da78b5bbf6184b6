"""Damaged stores: every kind of damage to a blob, a pack or a manifest makes reading
that checkpoint fail with a clear error naming the checkpoint and the object, and
breaks nothing else: the store still lists, its other checkpoints still read back
intact, and new checkpoints can still be written.

The damage is done behind nbferry's back: with plain file operations on file://,
and with boto3 against the moto server on s3://.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from conftest import to_pod
from nbferry.storage import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    FormatVersionError,
    PodData,
    SignatureError,
    Store,
    StoreError,
)
from nbferry.storage.signing import SigningKey
from nbferry.v1 import manifest_pb2 as pb

MIB = 1 << 20


class RawObjects:
    """A store's objects by key, read and changed without going through nbferry."""

    def __init__(self, store: Store, s3_endpoint: str | None) -> None:
        self.store = store
        if s3_endpoint is None:
            self.root: Path | None = Path(store.backend.root)
        else:
            self.root = None
            bucket, _, prefix = store.url.removeprefix("s3://").partition("/")
            self.bucket, self.prefix = bucket, f"{prefix}/" if prefix else ""
            self.s3 = boto3.client("s3", endpoint_url=s3_endpoint)

    def get(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        if self.root is not None:
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(data)
        else:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def delete(self, key: str) -> None:
        if self.root is not None:
            (self.root / key).unlink()
        else:
            self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def keys(self) -> list[str]:
        if self.root is not None:
            return sorted(
                str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
            )
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(
            o["Key"].removeprefix(self.prefix) for page in pages for o in page.get("Contents", [])
        )

    def flip(self, key: str, offset: int, mask: int = 0xFF) -> None:
        data = bytearray(self.get(key))
        data[offset] ^= mask
        self.put(key, bytes(data))

    def truncate(self, key: str, size: int) -> None:
        self.put(key, self.get(key)[:size])


def make_pods(seed: int) -> list[PodData]:
    """Pods whose objects belong to this seed alone: raw blobs, a zstd blob, one pack."""
    rng = np.random.default_rng(seed)
    return [
        to_pod("big", rng.random((MIB + 300_000) // 8)),  # a raw blob
        to_pod("zbig", np.arange(MIB // 8, dtype=np.int64) % 977 + seed),  # one zstd blob
        to_pod("small", {"seed": seed, "arr": rng.integers(0, 9, 3000, dtype=np.uint8)}),
        to_pod("tiny", [seed, "x" * 100]),
    ]


def pod_bytes(pods: dict[str, PodData] | list[PodData]) -> dict[str, list[bytes]]:
    items = pods.values() if isinstance(pods, dict) else pods
    return {
        p.pod_id: [bytes(p.header)] + [bytes(memoryview(b).cast("B")) for b in p.buffers]
        for p in items
    }


@dataclass
class Env:
    kind: str
    store: Store
    raw: RawObjects
    options: dict[str, Any]
    victim: str = ""
    expected: dict[str, dict[str, list[bytes]]] = field(default_factory=dict)

    def manifest_key(self, checkpoint_id: str) -> str:
        (ref,) = [r for r in self.store.list_checkpoints() if r.checkpoint_id == checkpoint_id]
        return ref.key

    def object_keys(self, checkpoint_id: str, pod_id: str, buffer: int = 1) -> list[str]:
        """Keys of the blobs or pack holding one buffer (0: the header) of a pod."""
        manifest = self.store.read_manifest(checkpoint_id)
        (pod,) = [p for p in manifest.pods if p.id == pod_id]
        refs = [pod.header, *pod.buffers][buffer].chunks
        keys = []
        for ref in refs:
            h = (ref.pack or ref.hash).hex()
            keys.append(f"{'packs' if ref.pack else 'blobs'}/{h[:2]}/{h}")
        return keys

    def check_rest_intact(self, damaged: frozenset[str] | set[str] = frozenset()) -> None:
        """The store lists, every undamaged checkpoint reads back, writing still works."""
        listed = {r.checkpoint_id for r in self.store.list_checkpoints()}
        assert set(self.expected) - damaged <= listed
        for cid, want in self.expected.items():
            if cid in damaged:
                continue
            pods = self.store.read_pods(self.store.read_manifest(cid))
            assert pod_bytes(pods) == want, f"undamaged checkpoint {cid} changed"
        # A new checkpoint in the damaged one's session (its parent, when readable).
        pods = make_pods(99)
        result = self.store.write_checkpoint("victim", pods, labels={"after": "damage"})
        read = self.store.read_pods(self.store.read_manifest(result.checkpoint_id))
        assert pod_bytes(read) == pod_bytes(pods)
        self.store.delete_checkpoint(result.checkpoint_id)


@pytest.fixture(params=["file", "s3"])
def env(request: pytest.FixtureRequest) -> Env:
    """A store with three checkpoints that share no objects; the middle one is the victim."""
    kind = request.param
    store: Store = request.getfixturevalue(f"{kind}_store")
    endpoint = request.getfixturevalue("s3_endpoint") if kind == "s3" else None
    env = Env(
        kind, store, RawObjects(store, endpoint), {"endpoint_url": endpoint} if endpoint else {}
    )
    for seed, session in [(1, "victim"), (2, "victim"), (3, "bystander")]:
        pods = make_pods(seed)
        result = store.write_checkpoint(session, pods, message=f"seed {seed}")
        env.expected[result.checkpoint_id] = pod_bytes(pods)
        if seed == 2:
            env.victim = result.checkpoint_id
    return env


def read_whole(store: Store, checkpoint_id: str) -> dict[str, PodData]:
    return store.read_pods(store.read_manifest(checkpoint_id))


def assert_names(exc: BaseException, *needles: str) -> str:
    message = str(exc)
    for needle in needles:
        assert needle in message, f"{needle!r} not in the error message: {message}"
    return message


# -- blobs and packs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_id", "where", "problem"),
    [
        ("big", "middle", "does not match its hash"),
        ("big", "last", "does not match its hash"),
        ("big", "tag", "cannot be decoded"),
        ("zbig", "middle", ""),  # zstd: a decode error or a hash mismatch
        ("zbig", "tag", "cannot be decoded"),
    ],
)
def test_flipped_byte_in_a_blob(env: Env, pod_id: str, where: str, problem: str) -> None:
    key = env.object_keys(env.victim, pod_id)[0]
    assert key.startswith("blobs/")
    size = len(env.raw.get(key))
    env.raw.flip(key, {"tag": 0, "middle": size // 2, "last": size - 1}[where])
    with pytest.raises(CorruptCheckpointError) as err:
        read_whole(env.store, env.victim)
    message = assert_names(err.value, env.victim, key, f"pod {pod_id}", "is damaged")
    assert problem in message
    env.check_rest_intact({env.victim})


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_in_a_pack(env: Env, where: str) -> None:
    (key,) = set(env.object_keys(env.victim, "small", 0) + env.object_keys(env.victim, "small"))
    assert key.startswith("packs/")
    size = len(env.raw.get(key))
    env.raw.flip(key, {"first": 0, "middle": size // 2, "last": size - 1}[where])
    with pytest.raises(CorruptCheckpointError) as err:
        read_whole(env.store, env.victim)
    assert_names(err.value, env.victim, key, "is damaged")
    env.check_rest_intact({env.victim})


@pytest.mark.parametrize("size", ["half", "one byte", "empty"])
def test_truncated_blob(env: Env, size: str) -> None:
    key = env.object_keys(env.victim, "big")[0]
    full = len(env.raw.get(key))
    new_size = {"half": full // 2, "one byte": 1, "empty": 0}[size]
    env.raw.truncate(key, new_size)
    with pytest.raises(CorruptCheckpointError) as err:
        read_whole(env.store, env.victim)
    assert_names(err.value, env.victim, key, "truncated", f"{new_size} of {full} bytes")
    env.check_rest_intact({env.victim})


@pytest.mark.parametrize("size", ["half", "empty"])
def test_truncated_pack(env: Env, size: str) -> None:
    (key,) = set(env.object_keys(env.victim, "small", 0))
    full = len(env.raw.get(key))
    new_size = {"half": full // 2, "empty": 0}[size]
    env.raw.truncate(key, new_size)
    with pytest.raises(CorruptCheckpointError) as err:
        read_whole(env.store, env.victim)
    assert_names(err.value, env.victim, key, "truncated")
    env.check_rest_intact({env.victim})


@pytest.mark.parametrize("what", ["blob", "pack"])
def test_deleted_object(env: Env, what: str) -> None:
    key = env.object_keys(env.victim, "big" if what == "blob" else "small", 1)[-1]
    assert key.startswith(f"{what}s/")
    env.raw.delete(key)
    with pytest.raises(CorruptCheckpointError) as err:
        read_whole(env.store, env.victim)
    assert_names(err.value, env.victim, key, "is missing from the store")
    env.check_rest_intact({env.victim})


def test_damaged_blob_is_reused_by_a_new_checkpoint_of_the_same_data_but_never_read_silently(
    env: Env,
) -> None:
    """Writers trust a blob that exists (they do not read it back), so a new checkpoint of
    the same bytes reuses the damaged blob: reading it must then fail loudly too."""
    key = env.object_keys(env.victim, "big")[0]
    env.raw.flip(key, len(env.raw.get(key)) // 3)
    result = env.store.write_checkpoint("again", make_pods(2), parent=None)
    with pytest.raises(CorruptCheckpointError) as err:
        read_whole(env.store, result.checkpoint_id)
    assert_names(err.value, result.checkpoint_id, key, "does not match its hash")


# -- manifests ------------------------------------------------------------------


def _read_fails(env: Env, exc_type: type[StoreError], ref: Any, *needles: str) -> str:
    with pytest.raises(exc_type) as err:
        env.store.read_manifest(ref)
    assert type(err.value) is exc_type, f"{type(err.value).__name__}: {err.value}"
    return assert_names(err.value, *needles)


@pytest.mark.parametrize("size", ["all but one byte", "half", "header only", "seven", "empty"])
def test_truncated_manifest(env: Env, size: str) -> None:
    key = env.manifest_key(env.victim)
    full = len(env.raw.get(key))
    new_size = {"all but one byte": full - 1, "half": full // 2, "header only": 8, "seven": 7}
    env.raw.truncate(key, new_size.get(size, 0))
    message = _read_fails(env, CorruptCheckpointError, env.victim, env.victim, key)
    assert "truncated" in message
    assert env.victim in {r.checkpoint_id for r in env.store.list_checkpoints()}
    env.check_rest_intact({env.victim})


def test_flipped_byte_in_a_manifest_anywhere(env: Env) -> None:
    """Every single-byte flip is caught, except in the two envelope fields that decide
    nothing: the signature's key id (a name, the HMAC is what is checked) and a format
    version lowered to 0. Then the manifest read is exactly the original."""
    key = env.manifest_key(env.victim)
    data = env.raw.get(key)
    original = env.store.read_manifest(env.victim)
    key_id = data.find(env.store.key.key_id.encode())
    assert key_id > 0
    harmless = {9, *range(key_id, key_id + 16)}  # format_version's value; the key id
    if env.kind == "file":
        flips = [(i, mask) for i in range(len(data)) for mask in (0x01, 0xFF)]
    else:  # a sample: every field of the envelope, the body, the signature
        spots = {0, 3, 4, 7, 8, 9, 10, 11, 12, 20, len(data) // 3, len(data) // 2, key_id}
        spots |= {key_id + 17, key_id + 20, len(data) - 33, len(data) - 2, len(data) - 1}
        flips = [(i, 0xFF) for i in sorted(spots)] + [(9, 0x01), (key_id, 0x01)]
    kinds = set()
    for offset, mask in flips:
        damaged = bytearray(data)
        damaged[offset] ^= mask
        env.raw.put(key, bytes(damaged))
        try:
            manifest = env.store.read_manifest(env.victim)
        except (CorruptCheckpointError, SignatureError, FormatVersionError) as exc:
            assert_names(exc, env.victim, key)
            kinds.add(type(exc).__name__)
        else:
            assert offset in harmless, f"a flip at byte {offset} ^ {mask:#x} went unnoticed"
            assert manifest == original
    assert {"CorruptCheckpointError", "SignatureError"} <= kinds
    env.raw.put(key, data)
    assert pod_bytes(read_whole(env.store, env.victim)) == env.expected[env.victim]


def test_flipped_byte_in_the_signature(env: Env) -> None:
    key = env.manifest_key(env.victim)
    env.raw.flip(key, len(env.raw.get(key)) - 1)  # the last byte of the HMAC value
    message = _read_fails(env, SignatureError, env.victim, env.victim, key)
    assert "invalid signature" in message
    manifest = env.store.read_manifest(env.victim, verify=False)
    assert pod_bytes(env.store.read_pods(manifest)) == env.expected[env.victim]
    env.check_rest_intact({env.victim})


@pytest.mark.parametrize("garbage", ["random", "zeros", "magic then random", "text", "other"])
def test_manifest_replaced_with_garbage(env: Env, garbage: str) -> None:
    key = env.manifest_key(env.victim)
    size = len(env.raw.get(key))
    noise = np.random.default_rng(5).bytes(size)
    data = {
        "random": noise,
        "zeros": bytes(size),
        "magic then random": b"NBFM" + struct.pack("<I", size - 8) + noise[8:],
        "text": b"<?xml version='1.0'?><Error>AccessDenied</Error>",
        "other": env.raw.get(env.object_keys(env.victim, "big")[0])[:size],
    }[garbage]
    env.raw.put(key, data)
    message = _read_fails(env, CorruptCheckpointError, env.victim, env.victim, key)
    assert "not an nbferry manifest" in message or "damaged" in message
    assert _read_fails(env, CorruptCheckpointError, env.victim, env.victim) == message
    env.check_rest_intact({env.victim})


def test_manifest_copied_to_another_session(env: Env) -> None:
    key = env.manifest_key(env.victim)
    copy = f"sessions/elsewhere/{env.victim}.ckpt"
    env.raw.put(copy, env.raw.get(key))
    (ref,) = env.store.list_checkpoints("elsewhere")
    assert ref.key == copy and ref.checkpoint_id == env.victim
    message = _read_fails(env, CorruptCheckpointError, ref, env.victim, copy)
    assert "'victim'" in message and "moved or copied by hand" in message
    # The original is untouched; the same id is now in two sessions, so name the session.
    assert env.store.resolve(env.victim, "victim").key == key
    original = env.store.read_manifest(env.store.resolve(env.victim, "victim"))
    assert pod_bytes(env.store.read_pods(original)) == env.expected[env.victim]
    # A new checkpoint there does not take the copy for its parent's chunks.
    result = env.store.write_checkpoint("elsewhere", make_pods(7))
    assert pod_bytes(read_whole(env.store, result.checkpoint_id)) == pod_bytes(make_pods(7))
    env.expected[result.checkpoint_id] = pod_bytes(make_pods(7))
    env.check_rest_intact({env.victim})


def test_manifest_renamed_to_another_id(env: Env) -> None:
    key = env.manifest_key(env.victim)
    other_id = env.victim[:-4] + ("ZZZZ" if not env.victim.endswith("ZZZZ") else "YYYY")
    renamed = f"sessions/victim/{other_id}.ckpt"
    env.raw.put(renamed, env.raw.get(key))
    env.raw.delete(key)
    message = _read_fails(env, CorruptCheckpointError, other_id, other_id, renamed)
    assert env.victim in message and "moved or copied by hand" in message
    with pytest.raises(CheckpointNotFoundError) as err:
        env.store.read_manifest(env.victim)
    assert_names(err.value, env.victim)
    del env.expected[env.victim]
    env.check_rest_intact()


def test_manifest_deleted_after_listing(env: Env) -> None:
    (ref,) = [r for r in env.store.list_checkpoints() if r.checkpoint_id == env.victim]
    env.raw.delete(ref.key)
    message = _read_fails(env, CheckpointNotFoundError, ref, env.victim, ref.key)
    assert "no longer exists" in message
    del env.expected[env.victim]
    env.check_rest_intact()


def test_manifest_signed_with_another_key(env: Env) -> None:
    other = Store(env.store.url, env.options, key=SigningKey(b"other", "test"))
    assert other.key.key_id != env.store.key.key_id
    pods = make_pods(11)
    result = other.write_checkpoint("foreign", pods)
    key = env.manifest_key(result.checkpoint_id)
    message = _read_fails(env, SignatureError, result.checkpoint_id, result.checkpoint_id, key)
    assert_names(SignatureError(message), other.key.key_id, env.store.key.key_id)
    manifest = env.store.read_manifest(result.checkpoint_id, verify=False)
    assert manifest.checkpoint_id == result.checkpoint_id
    assert pod_bytes(env.store.read_pods(manifest)) == pod_bytes(pods)
    # And the other way round: the other key does not accept this store's checkpoints.
    with pytest.raises(SignatureError) as err:
        other.read_manifest(env.victim)
    assert_names(err.value, env.victim, other.key.key_id, env.store.key.key_id)
    env.check_rest_intact()


def test_manifest_from_a_newer_format_version(env: Env) -> None:
    key = env.manifest_key(env.victim)
    data = env.raw.get(key)
    (length,) = struct.unpack_from("<I", data, 4)
    envelope = pb.ManifestFile.FromString(data[8 : 8 + length])
    assert envelope.format_version == 1
    envelope.format_version = 2
    body = envelope.SerializeToString()
    env.raw.put(key, b"NBFM" + struct.pack("<I", len(body)) + body)
    for verify in (True, False):
        with pytest.raises(FormatVersionError) as err:
            env.store.read_manifest(env.victim, verify=verify)
        assert_names(err.value, env.victim, key, "format version 2", "upgrade nbferry")
    assert env.victim in {r.checkpoint_id for r in env.store.list_checkpoints()}
    env.check_rest_intact({env.victim})
