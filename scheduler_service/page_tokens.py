"""Opaque page tokens: a kind and a non-negative number, base64 text. Pure."""

from __future__ import annotations

import base64

from wsi_runtime.clipped import clipped


def encode(kind: str, number: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{number}".encode()).decode()


def decode(kind: str, token: str) -> int:
    """The number; ValueError for a token that is not one of ``kind``."""
    refused = f"page_token {clipped(token, 64)!r} is not one this server issued"
    try:
        prefix, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        number = int(value)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(refused) from None
    if prefix != kind or number < 0:
        raise ValueError(refused)
    return number
