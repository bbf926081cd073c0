"""The secret the scheduler shows its workers: a worker runs jobs for its
scheduler only, never for whoever reaches its port (that would bypass
tenancy, quotas and the active-user cap).

Both sides read it from ``--worker-secret-file`` (``WSI_WORKER_SECRET_FILE``)
or from ``WSI_WORKER_SECRET``; ``make run`` makes a new one at each start."""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from wsi_protocol import metadata
from wsi_runtime import settings
from wsi_runtime.serving import StartupError

SECRET_ENV = "WSI_WORKER_SECRET"
SECRET_FILE_ENV = settings.env_name("--worker-secret-file")
MIN_LENGTH = 16


class SecretMissing(StartupError):
    """No usable secret is configured; the message says how to give one."""


def add_setting(parser: argparse.ArgumentParser) -> None:
    settings.add(
        parser,
        "--worker-secret-file",
        "",
        f"file holding the secret shared by the scheduler and its workers (or {SECRET_ENV})",
    )


def load(secret_file: str) -> str:
    """The secret from the file if one is named, else from the environment."""
    if secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretMissing(
                f"cannot read the worker secret file {secret_file!r}: {exc}"
            ) from None
        where = f"the file {secret_file!r}"
    else:
        secret = os.environ.get(SECRET_ENV, "").strip()
        where = SECRET_ENV
    if len(secret) < MIN_LENGTH or not secret.isascii() or not secret.isprintable():
        raise SecretMissing(
            f"a worker secret is required: set {SECRET_ENV} or --worker-secret-file to the same"
            f" {MIN_LENGTH}+ printable ASCII characters on the scheduler and its workers"
            f" (`make run` makes one); {where} gives "
            + ("none" if not secret else "an unusable one")
        )
    return secret


def call_metadata(secret: str) -> tuple[tuple[str, str]]:
    return ((metadata.WORKER_SECRET, secret),)


def presented(invocation_metadata: Any) -> str:
    for key, value in invocation_metadata or ():
        if key == metadata.WORKER_SECRET:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


class RequireSecret(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Ends every call of the guarded service UNAUTHENTICATED unless it shows
    the secret; health checking and reflection stay open (they reveal
    nothing, and launchers and grpcurl need them)."""

    def __init__(self, secret: str, service_name: str) -> None:
        self._secret = secret.encode()
        self._prefix = f"/{service_name}/"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefix):
            return handler
        shown = presented(handler_call_details.invocation_metadata).encode()
        if hmac.compare_digest(shown, self._secret):
            return handler
        return _refusing(handler)


_REFUSAL = (
    "this worker runs jobs for its scheduler only: the call lacks the scheduler's"
    f" secret (metadata {metadata.WORKER_SECRET})"
)


def _refusing(handler: Any) -> Any:
    """A handler of the same kind that only refuses."""

    async def refuse_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)
        yield  # pragma: no cover - abort raises

    if handler.unary_unary is not None:
        return handler._replace(unary_unary=refuse_unary)
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=refuse_stream)
    raise TypeError(f"no refusal for a handler of this kind: {handler!r}")
