"""Resolves a user's slide path inside the configured slide roots."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path


class SlidePathError(ValueError):
    """``permission`` is True when the path points outside the slide roots,
    ``missing`` when no file of that name is under them."""

    def __init__(self, message: str, *, permission: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.permission, self.missing = permission, missing


def resolve_slide(path: str, roots: Sequence[Path]) -> Path:
    """The real path of a regular file inside one of ``roots``. A relative path
    is looked up in each root in turn; symlinks are followed before the check,
    so a link that escapes a root is refused."""
    if "\x00" in path:
        raise SlidePathError("slide path contains a NUL byte")
    if not roots:
        raise SlidePathError("no slide roots are configured", permission=True)
    real_roots = _real_roots(tuple(roots))
    candidates = [Path(path)] if os.path.isabs(path) else [root / path for root in real_roots]
    outside = False
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        if not any(real == root or root in real.parents for root in real_roots):
            outside = True
            continue
        try:
            mode = real.stat().st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            raise SlidePathError(f"slide path {path!r} is not a regular file")
        return real
    if outside:
        # The roots themselves are the server's business: they go to its log only.
        raise SlidePathError(f"slide path {path!r} is outside the slide roots", permission=True)
    raise SlidePathError(f"slide {path!r} not found under the slide roots", missing=True)


def shown_path(path: str | Path, roots: Sequence[Path]) -> str:
    """A slide as a user may see it: relative to the slide root that holds it
    (as they would name it), else its file name alone; never the server's disk."""
    real = Path(os.path.realpath(path))
    for root in _real_roots(tuple(roots)) if roots else ():
        if root in real.parents:
            return str(real.relative_to(root))
    given = Path(path)
    for root in roots:
        if given.is_absolute() and Path(root).resolve() in given.parents:
            return str(given.relative_to(Path(root).resolve()))
    return given.name


@lru_cache(maxsize=8)
def _real_roots(roots: tuple[Path, ...]) -> tuple[Path, ...]:
    """Resolved once per process: every job resolves its slide against the same
    few roots, and resolving walks the path with one lstat per component. (A
    root that is a symlink is followed at start; repointing it needs a restart.)"""
    return tuple(Path(os.path.realpath(root)) for root in roots)


def check_slide_format(path: Path, shown_as: str) -> str:
    """The OpenSlide vendor of ``path`` (a cheap header check, no decoding), so
    a file that is no slide at all is refused before it is queued. A slide
    whose pixels turn out to be broken still fails later, in its job."""
    import openslide  # deferred: only the scheduler's create path needs it

    from wsi_runtime.plain_images import PlainImageError, read_header

    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError as exc:
        raise SlidePathError(f"slide {shown_as!r} cannot be read: {exc}") from None
    if vendor is None:
        try:
            plain = read_header(path, shown_as)
        except PlainImageError as exc:
            raise SlidePathError(str(exc)) from None
        vendor = plain.vendor if plain else None
    if vendor is None:
        raise SlidePathError(
            f"{shown_as!r} is not a slide format OpenSlide reads (Aperio .svs, tiled TIFF,"
            " DICOM, ...), nor a plain JPEG, PNG or TIFF image"
        )
    return str(vendor)
