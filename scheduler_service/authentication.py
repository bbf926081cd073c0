"""Every public call's identity (``wsi_runtime.identity`` decides; this maps
its answers to status codes), and a limit on failed authentications per peer
address, so tokens cannot be guessed at speed and a flood of bad calls
costs the flooder, not other users: the credential is checked first and a
valid one is never refused, whatever its address has sent before (the
gateway, a proxy or a NAT shares one address among many users)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from wsi_protocol import metadata
from wsi_protocol.status import RETRY_AFTER_METADATA
from wsi_runtime.identity import (
    PermissionDenied,
    TokenLookup,
    Unauthenticated,
    identify,
    one_value,
)
from wsi_runtime.limits import RateLimiter, retry_after

if TYPE_CHECKING:
    from wsi_runtime.serving import Context

FAILURES_PER_SECOND = 1.0
FAILURE_BURST = 20.0


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``; ``ipv6:[::1]:5`` -> ``ipv6:[::1]``."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def _credentials(context: Context) -> tuple[str | None, str | None]:
    """The call's claimed user and authorization, each sent at most once."""
    found: dict[str, list[str]] = {metadata.USER_ID: [], metadata.AUTHORIZATION: []}
    for name, value in context.invocation_metadata() or ():
        if name in found:
            found[name].append(value if isinstance(value, str) else value.decode(errors="replace"))
    return (
        one_value(found[metadata.USER_ID], "metadata x-user-id"),
        one_value(found[metadata.AUTHORIZATION], "metadata authorization"),
    )


class Authenticator:
    def __init__(
        self,
        tokens: TokenLookup | None,
        failures: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens
        self.failures = failures or RateLimiter(FAILURES_PER_SECOND, FAILURE_BURST)
        self.clock = clock

    async def __call__(self, context: Context) -> str:
        """The caller's user id, or the call ends with the status that says why not."""
        try:
            return identify(*_credentials(context), self.tokens)
        except Unauthenticated as exc:
            peer, now = peer_host(context.peer() or ""), self.clock()
            wait = self.failures.blocked(peer, now)
            if wait:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many failed authentications from this address;"
                    f" retry after {retry_after(wait)} s",
                    trailing_metadata=((RETRY_AFTER_METADATA, str(retry_after(wait))),),
                )
            self.failures.acquire(peer, now)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except PermissionDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        raise AssertionError("unreachable")  # context.abort raises

    async def confirm(self, context: Context, user: str) -> None:
        """Ends a long call (a watch) whose credential no longer names ``user``:
        a token revoked in the file while the stream is open. Not a failed
        authentication: nothing is counted against the address."""
        try:
            still = identify(*_credentials(context), self.tokens)
        except (Unauthenticated, PermissionDenied):
            still = None
        if still != user:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "the token of this stream is no longer valid (revoked); the stream ends",
            )
