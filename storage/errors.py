"""Errors raised by the store. Each message names the store, the object and the likely fix."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: something about the store or a checkpoint in it is wrong."""


class StoreAccessError(StoreError):
    """The store cannot be reached or used (credentials, bucket, permissions, URL)."""


class CheckpointNotFoundError(StoreError):
    """No checkpoint matches the id or prefix that was asked for."""


class AmbiguousCheckpointError(StoreError):
    """A checkpoint id prefix matches more than one checkpoint."""


class CorruptCheckpointError(StoreError):
    """A manifest or blob failed verification (truncated, damaged or tampered with)."""


class FormatVersionError(StoreError):
    """The checkpoint was written by a newer nbferry than this one."""


class SignatureError(StoreError):
    """The manifest's signature is missing or does not verify with this host's key."""
