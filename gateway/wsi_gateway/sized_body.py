"""Streamed answers. A result file is held to the size its first chunk
announced: the gateway sends that size as Content-Length before the rest
arrives, and a worker is believed no further than its bytes. Too many bytes
are cut at the size, too few end the stream; either way the connection
closes, so the client's download fails instead of ending short or running
on. An answer of unknown size (nuclei by box) is relayed chunk by chunk; a
failure after its first chunk ends the connection the same way."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

log = logging.getLogger("wsi.gateway")


class SizeMismatch(RuntimeError):
    """The bytes streamed do not add up to the size announced."""


async def sized_body(
    size: int, first: bytes, rest: AsyncIterator[bytes], what: str
) -> AsyncIterator[bytes]:
    sent = 0
    chunks = _chained(first, rest)
    async for data in chunks:
        if sent + len(data) > size:
            if size > sent:
                yield data[: size - sent]
            log.warning("%s: more bytes than the %d announced; download ended", what, size)
            raise SizeMismatch(f"{what}: more bytes than the {size} announced")
        sent += len(data)
        yield data
    if sent != size:
        log.warning("%s: %d bytes of the %d announced; download ended", what, sent, size)
        raise SizeMismatch(f"{what}: {sent} bytes of the {size} announced")


class StreamBroken(RuntimeError):
    """The scheduler's stream failed after the answer had begun."""


async def relayed(first: bytes, rest: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    """``first``, then ``rest`` as it comes: one chunk held at a time."""
    try:
        async for data in _chained(first, rest):
            yield data
    except grpc.aio.AioRpcError as error:
        log.warning("%s: the stream failed midway (%s); answer ended", what, error.code().name)
        raise StreamBroken(f"{what}: {error.code().name}") from None


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for data in rest:
        yield data
