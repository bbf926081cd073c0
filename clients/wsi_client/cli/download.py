"""Result files come through the HTTP gateway, which serves a job's files to
its owner only; the scheduler knows their paths but not their bytes."""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

CHUNK = 1 << 20


class DownloadError(Exception):
    pass


def fetch_results(
    gateway: str,
    identity: Mapping[str, str],
    job_id: str,
    names: Sequence[str],
    folder: Path,
    tls_ca: str | None = None,
) -> dict[str, Path]:
    """Saves each named result of the job into ``folder`` (each file appears
    whole or not at all) and returns where. ``identity``: the caller's headers;
    ``tls_ca``: the CA of an HTTPS gateway."""
    folder.mkdir(parents=True, exist_ok=True)
    context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
    saved: dict[str, Path] = {}
    for name in names:
        url = (
            f"{gateway.rstrip('/')}/jobs/{urllib.parse.quote(job_id)}"
            f"/results/{urllib.parse.quote(name)}"
        )
        request = urllib.request.Request(url, headers=dict(identity))
        target = folder / Path(name).name
        try:
            with urllib.request.urlopen(request, timeout=60, context=context) as response:
                _save(response, target)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{name}: gateway answered {exc.code}: {_message(exc)}") from None
        except urllib.error.URLError as exc:
            raise DownloadError(f"cannot reach the gateway at {gateway}: {exc.reason}") from None
        saved[name] = target
    return saved


def _save(response: object, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := response.read(CHUNK):  # type: ignore[attr-defined]
                out.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["message"])
    except (ValueError, KeyError, TypeError):
        return error.reason if isinstance(error.reason, str) else "request failed"
