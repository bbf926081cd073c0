"""Who a caller is, in both modes, pure: no files, no gRPC, no clock.

- Trusted-header mode: the caller names itself (``x-user-id``). Only for
  loopback or behind a proxy that authenticates and sets the header.
- Token mode: the identity is the user a bearer token belongs to; the token
  file holds only SHA-256 hashes of the tokens, so reading it gives none away.
  An ``x-user-id`` naming another user is refused, not ignored."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

USER_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
USER_ID_RULE = "1 to 64 characters of A-Z a-z 0-9 . _ -"
_HASH = re.compile(r"[0-9a-f]{64}")
TOKEN_PREFIX = "wsi_"
MAX_TOKEN_LENGTH = 512

TokenLookup = Callable[[str], "str | None"]  # token -> its user, None if unknown


class Unauthenticated(Exception):
    """No identity could be established (UNAUTHENTICATED / HTTP 401)."""


class PermissionDenied(Exception):
    """A valid identity asked to act as someone else (PERMISSION_DENIED / 403)."""


def valid_user_id(user_id: str | None) -> bool:
    return bool(user_id) and USER_ID_PATTERN.fullmatch(user_id or "") is not None


def one_value(values: Sequence[str], name: str) -> str | None:
    """The value of a credential sent once (or repeated alike); None if absent.
    Two different values are refused, not chosen between: which one a proxy
    in front would have checked is not knowable here."""
    if len(set(values)) > 1:
        raise Unauthenticated(f"{name} is given {len(values)} times with different values")
    return values[0] if values else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """256 random bits, URL-safe, with a prefix that makes a leaked one easy to spot."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` value; Unauthenticated if malformed."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization must be 'Bearer TOKEN'")
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
        raise Unauthenticated("the bearer token is malformed")
    return token


def identify(
    claimed_user: str | None, authorization: str | None, tokens: TokenLookup | None
) -> str:
    """The caller's user id. ``tokens`` None: trusted-header mode."""
    if tokens is None:
        if claimed_user is None:
            raise Unauthenticated("metadata x-user-id (HTTP header X-User-ID) is required")
        if not valid_user_id(claimed_user):
            raise Unauthenticated(
                f"metadata x-user-id (HTTP header X-User-ID) must be {USER_ID_RULE}"
            )
        return claimed_user
    if not authorization:
        raise Unauthenticated(
            "this server needs an API token: metadata authorization (HTTP header"
            " Authorization) 'Bearer TOKEN'"
        )
    user = tokens(bearer_token(authorization))
    if user is None:
        raise Unauthenticated("the API token is not valid (unknown or revoked)")
    if claimed_user is not None and claimed_user != user:
        raise PermissionDenied(
            "x-user-id names another user than the API token's; leave it out or name the"
            " token's own user"
        )
    return user


@dataclass(frozen=True)
class TokenTable:
    """A parsed token file: hash -> user, and the lines that were refused."""

    users_by_hash: dict[str, str]
    problems: tuple[str, ...] = ()

    def user_of(self, token: str) -> str | None:
        return self.users_by_hash.get(token_hash(token))


def parse_token_file(text: str) -> TokenTable:
    """``USER_ID SHA256_HEX`` per line; ``#`` starts a comment. A malformed line
    is left out (and reported), never guessed at."""
    users: dict[str, str] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            problems.append(f"line {number}: expected 'USER_ID SHA256_HEX_OF_TOKEN'")
            continue
        user, digest = fields[0], fields[1].lower()
        if not valid_user_id(user):
            problems.append(f"line {number}: user id must be {USER_ID_RULE}")
        elif not _HASH.fullmatch(digest):
            problems.append(f"line {number}: the hash must be 64 hex digits (SHA-256)")
        else:
            users[digest] = user
    return TokenTable(users, tuple(problems))


def token_line(user: str, token: str) -> str:
    return f"{user} {token_hash(token)}\n"
