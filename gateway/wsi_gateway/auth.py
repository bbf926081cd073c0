"""The caller's identity at the HTTP edge, checked before anything is
parsed or forwarded: a malformed header is 401 (never 500), and in token
mode a bad token never reaches the scheduler. Failed attempts are limited
per client address, and only failed ones: a valid credential is checked
first and never refused, so a flood of bad tokens from an address (a proxy,
a NAT, the same host) locks out the flood, not its neighbours. The
scheduler checks the same again."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from wsi_protocol import metadata
from wsi_runtime.identity import (
    PermissionDenied,
    TokenLookup,
    Unauthenticated,
    identify,
    one_value,
)
from wsi_runtime.limits import RateLimiter, retry_after

Metadata = tuple[tuple[str, str], ...]
FAILURES_PER_SECOND = 1.0
FAILURE_BURST = 20.0


class AuthFailure(Exception):
    """An HTTP answer about identity: 401, 403 or 429 (too many failures)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class GatewayAuth:
    def __init__(self, tokens: TokenLookup | None, clock: Callable[[], float] = time.monotonic):
        self.tokens = tokens
        self.failures = RateLimiter(FAILURES_PER_SECOND, FAILURE_BURST)
        self.clock = clock

    @property
    def mode(self) -> Literal["token", "header"]:
        return "token" if self.tokens is not None else "header"

    def metadata_for(
        self, client: str, users: Sequence[str], authorizations: Sequence[str]
    ) -> Metadata:
        """The gRPC metadata that carries the caller's identity to the scheduler
        (each header's values as the request gave them)."""
        try:
            user = one_value(users, "header X-User-ID")
            authorization = one_value(authorizations, "header Authorization")
            identify(user, authorization, self.tokens)
        except Unauthenticated as exc:
            now = self.clock()
            wait = self.failures.blocked(client, now)
            if wait:
                raise AuthFailure(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "too many failed authentications from this address;"
                    f" retry after {retry_after(wait)} s",
                    retry_after(wait),
                ) from None
            self.failures.acquire(client, now)
            raise AuthFailure(401, "UNAUTHENTICATED", str(exc)) from None
        except PermissionDenied as exc:
            raise AuthFailure(403, "PERMISSION_DENIED", str(exc)) from None
        forwarded: Metadata = ((metadata.USER_ID, user),) if user is not None else ()
        if self.tokens is not None and authorization:
            forwarded += ((metadata.AUTHORIZATION, authorization.strip()),)
        return forwarded
