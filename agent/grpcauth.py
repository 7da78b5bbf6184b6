"""Bearer-token authentication for nbferry's gRPC services (agent and migrator)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

import grpc

# Probes and tooling may call these without a token: they reveal nothing.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TokenAuth(grpc.ServerInterceptor):
    """Rejects every call without `authorization: Bearer <token>`; nothing runs for it."""

    def __init__(self, token: str, open_prefixes: Iterable[str] = OPEN_PREFIXES) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._expected = f"Bearer {token}".encode()
        self._open = tuple(open_prefixes)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        method = handler_call_details.method
        if method.startswith(self._open):
            return continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(handler_call_details)
        return _deny(continuation(handler_call_details), bool(given))


def _deny(handler: Any, had_token: bool) -> Any:
    message = "wrong token" if had_token else "missing token: send 'authorization: Bearer <token>'"

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def bearer(token: str) -> list[tuple[str, str]]:
    """Call metadata carrying `token`."""
    return [("authorization", f"Bearer {token}")]
