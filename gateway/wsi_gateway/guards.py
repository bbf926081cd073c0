"""Plain ASGI middleware that every request passes before any route runs:
the Host allow-list (against DNS rebinding), the request body cap (enforced
while reading, so an oversized body is never held in memory), and the
headers that make responses safe in a browser."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
# The UI's own scripts and styles only: no inline code, no other origin, never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:;"
    " connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# Code and styles are the same for everyone: cached, but checked again each time.
SHARED_PREFIXES = ("/static/", "/docs-assets/", "/viewer-assets/")
SHARED_CACHE = ((b"cache-control", b"no-cache"),)
# A slide's tiles do not change: the caller's own browser keeps them a while
# (Vary: a tile fetched as one user is never reused for another).
SLIDE_CACHE = (
    (b"cache-control", b"private, max-age=3600"),
    (b"vary", b"Authorization, X-User-ID"),
)
# Everything else may be one user's: never kept by a browser or a proxy.
PRIVATE_CACHE = (
    (b"cache-control", b"private, no-store"),
    (b"vary", b"Authorization, X-User-ID"),
)


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *SECURITY_HEADERS,
                *PRIVATE_CACHE,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def host_name(host_header: str) -> str:
    """``Host`` without its port, lowercase: ``[::1]:8000`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_local_address(host: str, scope: Scope) -> bool:
    """``host`` is the IP address this connection was made to."""
    server = scope.get("server")
    if not server or not host:
        return False
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(str(server[0]))
    except ValueError:  # a name, not an address
        return False


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class HostAllowList:
    """400 for a ``Host`` the gateway is not known by: a page on a rebound
    DNS name reaches a loopback gateway, but with its own name as Host. The
    address the connection reached, given as the Host, is taken too: only a
    client that dialled that IP sends it (a cluster's probes and Prometheus
    call a pod by its IP), never a page on a rebound name."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_name(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = _header(scope, b"host")
            host = host_name(raw.decode("latin-1")) if raw is not None else ""
            if host not in self.allowed and not _is_local_address(host, scope):
                await _send_error(
                    send, 400, "INVALID_ARGUMENT", "the Host header is not one this gateway serves"
                )
                return
        await self.app(scope, receive, send)


DRAIN_BODIES_UP_TO = 8  # times the cap: read and dropped before a 413, so the client sees it
DRAIN_SECONDS = 10.0


class BodyLimit:
    """413 for a body over ``max_bytes``: decided at once from Content-Length,
    else as soon as the bytes read pass the cap (what the app answers then is
    replaced). Nothing over the cap is ever buffered. Before the 413 goes
    out, the rest of a body up to ``DRAIN_BODIES_UP_TO`` times the cap is
    read and dropped (within ``DRAIN_SECONDS``): a client that sends its whole
    body before it reads (no ``Expect: 100-continue``: urllib, many SDKs)
    would otherwise meet a reset connection instead of the answer. A larger
    body, or one announced with ``Expect: 100-continue``, is not waited for."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, pending: int) -> None:
        """The 413, after reading and dropping the ``pending`` bytes still to
        come where that is worth it (``pending`` < 0: unknown, chunked)."""
        waits = _header(scope, b"expect") is None
        if waits and pending <= DRAIN_BODIES_UP_TO * self.max_bytes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_SECONDS):
                    await _drain(receive, DRAIN_BODIES_UP_TO * self.max_bytes)
        await _send_error(send, 413, "PAYLOAD_TOO_LARGE", self._too_large())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _send_error(send, 400, "INVALID_ARGUMENT", "Content-Length is not a number")
                return
            if length > self.max_bytes:
                await self._refuse(scope, receive, send, length)
                return
        received = 0
        overflowed = False
        answered = False

        async def counted_receive() -> Message:
            nonlocal received, overflowed
            if overflowed:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflowed = True
                    return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if overflowed:
                if not answered:
                    answered = True
                    await self._refuse(scope, receive, send, -1)
                return
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if overflowed and not answered:
            await self._refuse(scope, receive, send, -1)


async def _drain(receive: Receive, limit: int) -> None:
    """Reads and drops the request's body until it ends or ``limit`` bytes."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def is_slide_path(path: str) -> bool:
    """A job's Deep Zoom descriptor or tile: /jobs/ID/slide.dzi, /jobs/ID/slide_files/..."""
    parts = path.split("/")
    return (
        len(parts) >= 4
        and parts[1] == "jobs"
        and (parts[3] == "slide_files" or (len(parts) == 4 and parts[3] == "slide.dzi"))
    )


class SecurityHeaders:
    """The browser-safety headers on every response, and a cache rule by path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        cache: tuple[tuple[bytes, bytes], ...] = (
            SHARED_CACHE if path.startswith(SHARED_PREFIXES) else PRIVATE_CACHE
        )

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                slide = message.get("status") == 200 and is_slide_path(path)
                cache_rule = SLIDE_CACHE if slide else cache
                replaced = {name for name, _ in (*SECURITY_HEADERS, *cache_rule)}
                headers = [(k, v) for k, v in message.get("headers", ()) if k not in replaced]
                message["headers"] = [*headers, *SECURITY_HEADERS, *cache_rule]
            await send(message)

        await self.app(scope, receive, with_headers)
