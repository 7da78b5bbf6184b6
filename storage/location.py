"""Which store to use: the URL default and the options passed to fsspec."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV_STORE = "NBFERRY_STORE"
ENV_S3_ENDPOINT = "NBFERRY_S3_ENDPOINT_URL"


def default_store_url() -> str:
    """$NBFERRY_STORE, else a folder under the user's data directory."""
    url = os.environ.get(ENV_STORE)
    if url:
        return url
    import platformdirs  # ~4 ms; most callers pass a URL

    return file_url(platformdirs.user_data_path("nbferry") / "store")


def file_url(path: Path) -> str:
    """The store URL of a local folder given by an absolute path.

    Not Path.as_uri(): store URLs are read like fsspec reads them, with no
    percent-decoding, so "Application Support" must not become "%20".
    """
    return f"file://{path.as_posix()}"


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` strings (from --store-option) to typed fsspec options."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"store option {pair!r} is not key=value (e.g. anon=true)")
        options[key.strip()] = _typed(value.strip())
    return options


def _typed(value: str) -> Any:
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def fsspec_options(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Options for fsspec.url_to_fs, with nbferry's defaults per protocol.

    For S3: `endpoint_url` (option or $NBFERRY_S3_ENDPOINT_URL) goes to the
    client, and listing caches are off so checkpoints written elsewhere show up.
    botocore and s3fs each retry on their own; nbferry's RetryPolicy is the one
    place that backs off, so theirs are kept short (see Backend) — otherwise a
    refused connection takes a minute to report.
    """
    opts = dict(options or {})
    if url.split("://", 1)[0] in ("s3", "s3a"):
        endpoint = opts.pop("endpoint_url", None) or os.environ.get(ENV_S3_ENDPOINT)
        if endpoint:
            opts.setdefault("client_kwargs", {})["endpoint_url"] = endpoint
        opts.setdefault("use_listings_cache", False)
        config = opts.setdefault("config_kwargs", {})
        config.setdefault("retries", {"max_attempts": 2, "mode": "standard"})
        config.setdefault("connect_timeout", 10)
    return opts
