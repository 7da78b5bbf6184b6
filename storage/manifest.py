"""Manifest file format (pure): envelope, versioning, integrity.

A manifest file is b"NBFM", a little-endian uint32 length, then a serialized
ManifestFile of exactly that length. The explicit length makes truncation
detectable even when a cut lands on a protobuf field boundary.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3
import zstandard
from google.protobuf.message import DecodeError

from nbferry.storage.errors import CorruptCheckpointError, FormatVersionError
from nbferry.storage.signing import SigningKey
from nbferry.v1 import manifest_pb2 as pb

FORMAT_VERSION = 1
MAGIC = b"NBFM"
_HEAD = struct.Struct("<4sI")


@dataclass(frozen=True)
class DecodedManifest:
    manifest: pb.Manifest
    body: bytes  # the exact bytes the signature covers
    signature: pb.Signature


def encode_manifest(manifest: pb.Manifest, key: SigningKey) -> bytes:
    manifest.format_version = FORMAT_VERSION
    body = manifest.SerializeToString(deterministic=True)
    envelope = pb.ManifestFile(
        format_version=FORMAT_VERSION,
        body_codec=pb.CODEC_ZSTD,
        body=zstandard.ZstdCompressor(level=3).compress(body),
        body_blake3=blake3.blake3(body).digest(),
        signature=key.sign(body),
    )
    data = envelope.SerializeToString()
    return _HEAD.pack(MAGIC, len(data)) + data


def decode_manifest(data: bytes, where: str) -> DecodedManifest:
    """Parse and check integrity; raises CorruptCheckpointError or FormatVersionError.

    `where` names the checkpoint and object for error messages. Signature
    checking is separate (SigningKey.verify) so that listing needs no key.
    """
    if len(data) < _HEAD.size:
        raise CorruptCheckpointError(f"{where} is truncated ({len(data)} bytes)")
    magic, length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise CorruptCheckpointError(f"{where} is not an nbferry manifest (bad magic {magic!r})")
    if len(data) - _HEAD.size != length:
        raise CorruptCheckpointError(
            f"{where} is truncated or padded: {len(data) - _HEAD.size} of {length} bytes"
        )
    envelope = pb.ManifestFile()
    try:
        envelope.ParseFromString(data[_HEAD.size :])
    except DecodeError as exc:
        raise CorruptCheckpointError(f"{where} is damaged: {exc}") from exc
    version = envelope.format_version
    if version == 0:
        raise CorruptCheckpointError(f"{where} is damaged: it has no format version")
    try:
        if envelope.body_codec == pb.CODEC_ZSTD:
            body = zstandard.ZstdDecompressor().decompress(envelope.body)
        elif envelope.body_codec == pb.CODEC_RAW:
            body = envelope.body
        else:
            raise ValueError(f"unknown body codec {envelope.body_codec}")
    except (zstandard.ZstdError, ValueError) as exc:
        body = None
        problem = str(exc)
    else:
        problem = "" if blake3.blake3(body).digest() == envelope.body_blake3 else "checksum"
    if version > FORMAT_VERSION:
        # Only a body that checks out proves the version byte itself is not damage.
        newer = (
            f"has format version {version}, but this nbferry reads up to version "
            f"{FORMAT_VERSION}: upgrade nbferry (pip install -U nbferry)"
        )
        if not problem:
            raise FormatVersionError(f"{where} {newer}")
        raise CorruptCheckpointError(f"{where} is damaged, or {newer}")
    if problem == "checksum":
        raise CorruptCheckpointError(f"{where} is damaged: its body does not match its checksum")
    if problem:
        raise CorruptCheckpointError(f"{where} is damaged: {problem}")
    assert body is not None
    manifest = pb.Manifest()
    try:
        manifest.ParseFromString(body)
    except DecodeError as exc:
        raise CorruptCheckpointError(f"{where} is damaged: {exc}") from exc
    return DecodedManifest(manifest, body, envelope.signature)
