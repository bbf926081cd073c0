"""The API token file (``WSI_AUTH_TOKENS``), read again whenever it changes,
so that adding or revoking a token (editing the file) needs no restart.

A file that disappears or cannot be read lets nobody in (fail closed) until
it is back; each change is logged once."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from wsi_runtime import identity
from wsi_runtime.identity import TokenTable

log = logging.getLogger("wsi.auth")
EMPTY = TokenTable({})


class TokenFileError(RuntimeError):
    """The token file cannot be used at start (missing, unreadable)."""


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # the gateway may look up from several threads
        self._seen: tuple[int, int, int] | None = None
        self._table = EMPTY
        try:
            self._reload(self._signature())
        except OSError as exc:
            raise TokenFileError(
                f"cannot read the API token file {str(path)!r} (WSI_AUTH_TOKENS):"
                f" {exc.strerror or exc}"
            ) from None

    def _signature(self) -> tuple[int, int, int]:
        stat = os.stat(self.path)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _reload(self, signature: tuple[int, int, int]) -> None:
        table = identity.parse_token_file(self.path.read_text(encoding="utf-8", errors="replace"))
        for problem in table.problems:
            log.warning("API token file %s: %s (line ignored)", self.path, problem)
        self._table, self._seen = table, signature
        log.info("API token file %s: %d tokens", self.path, len(table.users_by_hash))

    def user_of(self, token: str) -> str | None:
        """The token's user as the file says now (one stat per call)."""
        with self._lock:
            try:
                signature = self._signature()
                if signature != self._seen:
                    self._reload(signature)
            except OSError as exc:
                if self._seen is not None:
                    log.error(
                        "API token file %s unreadable (%s): no token is valid", self.path, exc
                    )
                self._table, self._seen = EMPTY, None
            return self._table.user_of(token)


def add_token(path: Path, user: str) -> str:
    """A new token for ``user``: its hash is added to the file (made, owner
    only, if missing); the token itself is returned, to be shown once."""
    if not identity.valid_user_id(user):
        raise ValueError(f"user id must be {identity.USER_ID_RULE}")
    token = identity.new_token()

    def with_token(lines: list[str]) -> list[str]:
        return [*lines, identity.token_line(user, token)]

    _rewrite(path, with_token)
    return token


def revoke_user(path: Path, user: str) -> int:
    """Removes every token line of ``user``; returns how many went."""
    removed = 0

    def without_user(lines: list[str]) -> list[str]:
        nonlocal removed
        kept = [line for line in lines if line.split("#", 1)[0].split()[:1] != [user]]
        removed = len(lines) - len(kept)
        return kept

    if not path.exists():
        raise FileNotFoundError(f"no API token file at {path}")
    _rewrite(path, without_user)
    return removed


def _rewrite(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    """The file's lines (each ending in a newline, whatever the file had:
    a last line without one, CRLF) through ``change``, written to a new file
    that replaces it at once: a reader (the scheduler, the gateway) sees the
    old file or the new, never half of one. A lock file beside it keeps two
    editors from losing each other's change."""
    lock = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        lines = [line.rstrip("\r\n") + "\n" for line in text.splitlines(keepends=True)]
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                out.writelines(change(lines))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        os.close(lock)
