"""Retries with exponential backoff and jitter, for transient store errors only."""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# errno values s3fs and the OS use for "try again later" conditions:
# 503/SlowDown/409 -> EBUSY, 500/InternalError -> EREMOTEIO.
_TRANSIENT_ERRNOS = {
    errno.EBUSY,
    errno.EAGAIN,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    getattr(errno, "EREMOTEIO", errno.EIO),
}
# Connection-level errors of botocore/aiohttp, matched by name so that this
# module does not import them (local stores never need them).
_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ClientConnectionError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "ClientOSError",
    "FSTimeoutError",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
}


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: throttling, 5xx, timeouts, dropped connections."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if err.get("Code") in _TRANSIENT_CODES or int(status or 0) >= 500:
            return True
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError)):
        return exc.errno in _TRANSIENT_ERRNOS
    return False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full-jitter backoff: uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))

    def call(self, fn: Callable[[], T], what: str) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:
                if attempt + 1 >= self.attempts or not is_transient(exc):
                    raise
                wait = self.delay(attempt)
                log.info(
                    "transient error on %s (%s); retry %d in %.2fs", what, exc, attempt + 1, wait
                )
                time.sleep(wait)
        raise AssertionError("unreachable")
