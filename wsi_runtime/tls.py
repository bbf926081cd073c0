"""TLS for every gRPC hop, from PEM files named in the settings.

One certificate per process (``--tls-cert``/``--tls-key``) serves its port
and is also what it shows as a client (the scheduler to its workers: mTLS
when the workers set ``--tls-client-ca``). ``--tls-ca`` is the CA that signed
the servers a process calls. Nothing set: plaintext, as on loopback."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from wsi_runtime import settings
from wsi_runtime.serving import StartupError


@dataclass(frozen=True)
class TlsFiles:
    cert: str = ""  # this process's certificate chain (PEM)
    key: str = ""  # its private key (PEM)
    ca: str = ""  # CA bundle that signed the servers this process calls
    client_ca: str = ""  # a server given one requires client certificates it signed

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert)

    @property
    def calls_tls(self) -> bool:
        return bool(self.ca)


def add_settings(parser: argparse.ArgumentParser, serves: bool = True) -> None:
    if serves:
        settings.add(parser, "--tls-cert", "", "PEM certificate (chain) to serve TLS with")
        settings.add(parser, "--tls-key", "", "PEM private key of --tls-cert")
        settings.add(
            parser,
            "--tls-client-ca",
            "",
            "PEM CA bundle: callers must show a certificate it signed (mutual TLS)",
        )
    settings.add(parser, "--tls-ca", "", "PEM CA bundle that signed the servers called (TLS on)")


def from_args(args: argparse.Namespace) -> TlsFiles:
    files = TlsFiles(
        getattr(args, "tls_cert", ""),
        getattr(args, "tls_key", ""),
        args.tls_ca,
        getattr(args, "tls_client_ca", ""),
    )
    if bool(files.cert) != bool(files.key):
        raise StartupError("--tls-cert and --tls-key go together: give both or neither")
    if files.client_ca and not files.cert:
        raise StartupError("--tls-client-ca needs --tls-cert and --tls-key (a TLS server)")
    return files


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise StartupError(f"{what} {path!r} is not PEM")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials | None:
    if not files.serves_tls:
        return None
    pair = (_read(files.key, "TLS key"), _read(files.cert, "TLS certificate"))
    if files.client_ca:
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=_read(files.client_ca, "TLS client CA"),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials | None:
    """TLS toward servers signed by ``ca``, showing our own certificate if we have one."""
    if not files.calls_tls:
        return None
    own: dict[str, bytes] = {}
    if files.cert:
        own = {
            "private_key": _read(files.key, "TLS key"),
            "certificate_chain": _read(files.cert, "TLS certificate"),
        }
    return grpc.ssl_channel_credentials(root_certificates=_read(files.ca, "TLS CA"), **own)


def aio_channel(
    address: str,
    credentials: grpc.ChannelCredentials | None,
    options: Any = None,
    interceptors: Any = None,
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options, interceptors=interceptors)
