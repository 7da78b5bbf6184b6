"""Manifest signing with a per-user secret key (HMAC-SHA256).

Pickles run code when loaded, so a restore must only load checkpoints that a
trusted writer made. Every manifest is signed; its chunk hashes then vouch for
every blob. Hosts that migrate sessions between each other share one key:
set NBFERRY_SIGNING_KEY (any secret string), or copy the key file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from nbferry.storage.errors import SignatureError
from nbferry.v1 import manifest_pb2 as pb

ALGORITHM = "hmac-sha256"
ENV_KEY = "NBFERRY_SIGNING_KEY"
ENV_KEY_FILE = "NBFERRY_SIGNING_KEY_FILE"


def default_key_file() -> Path:
    return platformdirs.user_config_path("nbferry") / "signing.key"


@dataclass(frozen=True)
class SigningKey:
    secret: bytes
    source: str  # where the key came from, for error messages

    @property
    def key_id(self) -> str:
        """A public name for the key: a hash prefix, never the key itself."""
        return hashlib.sha256(b"nbferry-key-id:" + self.secret).hexdigest()[:16]

    def sign(self, body: bytes) -> pb.Signature:
        mac = hmac.new(self.secret, body, hashlib.sha256).digest()
        return pb.Signature(algorithm=ALGORITHM, key_id=self.key_id, value=mac)

    def verify(self, body: bytes, signature: pb.Signature, where: str) -> None:
        if not signature.algorithm:
            raise SignatureError(
                f"{where} is not signed, so nbferry will not load its pickles; "
                "write it again with this version of nbferry"
            )
        if signature.algorithm != ALGORITHM:
            raise SignatureError(
                f"{where} uses unknown signature algorithm {signature.algorithm!r}"
            )
        expected = hmac.new(self.secret, body, hashlib.sha256).digest()
        if hmac.compare_digest(expected, signature.value):
            return
        if signature.key_id != self.key_id:
            raise SignatureError(
                f"{where} was signed with key {signature.key_id}, but this host's key "
                f"({self.source}) is {self.key_id}: give both hosts the same key by setting "
                f"{ENV_KEY} or copying the key file"
            )
        raise SignatureError(
            f"{where} has an invalid signature: it was modified after it was written"
        )


def load_signing_key(create: bool = True) -> SigningKey:
    """The key from $NBFERRY_SIGNING_KEY, else a key file (made on first use, mode 0600)."""
    value = os.environ.get(ENV_KEY)
    if value:
        return SigningKey(value.encode(), f"${ENV_KEY}")
    path = Path(os.environ.get(ENV_KEY_FILE) or default_key_file())
    try:
        return SigningKey(path.read_text().strip().encode(), str(path))
    except FileNotFoundError:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temp file, then link it into place: the link is atomic and
    # create-only, so concurrent first uses agree on one complete key.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        tmp.unlink()
    return SigningKey(path.read_text().strip().encode(), str(path))
