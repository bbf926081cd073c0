"""The slides a user can name in a job: every file under the slide roots with
a suffix OpenSlide reads, by its name relative to its root (the first root
that has a name wins, as when a job is resolved), described with OpenSlide
for the page asked for only (opening a slide reads its header). Blocking:
the service calls it off the event loop."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from scheduler_service import page_tokens
from wsi_runtime.pixel_size import usable_mpp

# What OpenSlide 4 reads, by suffix (Aperio, DICOM, Hamamatsu, Leica, MIRAX,
# Philips, Sakura, Trestle, Ventana, Zeiss, generic tiled TIFF), and the plain
# images read whole (wsi_runtime.plain_images: JPEG, PNG, TIFF in strips).
SLIDE_SUFFIXES = frozenset(
    {".svs", ".tif", ".tiff", ".dcm", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide"}
    | {".bif", ".czi", ".jpg", ".jpeg", ".png"}
)
MAX_LISTED = 100_000  # names gathered per call at most (a root is a folder of slides, not a disk)
log = logging.getLogger("wsi.slides")


class InvalidSlideToken(ValueError):
    """A page token this server did not issue."""


@dataclass(frozen=True)
class SlideInfo:
    name: str
    size_bytes: int
    width: int = 0
    height: int = 0
    mpp: float = 0.0
    vendor: str = ""
    error: str = ""


def slide_names(roots: Sequence[Path]) -> list[tuple[str, Path]]:
    """(name relative to its root, real path), sorted by name, one per name.
    Links are followed only to files that stay inside a root. A name that is
    not UTF-8 (no API string can carry it) is skipped with a log line."""
    real_roots = [Path(os.path.realpath(root)) for root in roots]
    found: dict[str, Path] = {}
    for root in real_roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for file_name in files:
                if Path(file_name).suffix.lower() not in SLIDE_SUFFIXES:
                    continue
                path = Path(folder) / file_name
                real = Path(os.path.realpath(path))
                if not any(r == real.parent or r in real.parents for r in real_roots):
                    continue
                if not real.is_file():
                    continue
                name = str(path.relative_to(root))
                if not _is_utf8(name):
                    log.warning(
                        "slide root %s: skipped %s, a file name that is not UTF-8 (rename it)",
                        root,
                        ascii(name),
                    )
                    continue
                found.setdefault(name, real)
                if len(found) >= MAX_LISTED:
                    break
    return sorted(found.items())


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def page(
    names: Sequence[tuple[str, Path]], page_size: int, token: str
) -> tuple[list[tuple[str, Path]], str]:
    start = decode_token(token) if token else 0
    chosen = list(names[start : start + page_size])
    after = start + len(chosen)
    return chosen, encode_token(after) if after < len(names) else ""


def encode_token(offset: int) -> str:
    return page_tokens.encode("slides", offset)


def decode_token(token: str) -> int:
    try:
        return page_tokens.decode("slides", token)
    except ValueError as exc:
        raise InvalidSlideToken(str(exc)) from None


def describe(name: str, path: Path) -> SlideInfo:
    stat = path.stat()
    return _describe(name, str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _describe(name: str, path: str, size: int, mtime_ns: int) -> SlideInfo:
    """Cached by size and modification time: a replaced file is read again."""
    import openslide  # deferred: only listing needs it here

    try:
        with openslide.OpenSlide(path) as slide:
            props = slide.properties
            try:
                # 0, as for none, where it is no microscope's (a 72 dpi screen
                # resolution): what a job will take it as.
                mpp = usable_mpp(float(props.get(openslide.PROPERTY_NAME_MPP_X, 0) or 0)) or 0.0
            except ValueError:
                mpp = 0.0
            width, height = slide.dimensions
            vendor = props.get(openslide.PROPERTY_NAME_VENDOR) or ""
            return SlideInfo(name, size, width, height, mpp, vendor)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        return _plain_image(name, path, size) or _unreadable(name, path, size, exc)
    except (openslide.OpenSlideError, OSError) as exc:
        return _unreadable(name, path, size, exc)


def _plain_image(name: str, path: str, size: int) -> SlideInfo | None:
    """A plain image described from its header (not decoded), or None."""
    from wsi_runtime.plain_images import PlainImageError, read_header

    try:
        plain = read_header(path, name)
    except PlainImageError as exc:
        return _unreadable(name, path, size, exc)
    if plain is None:
        return None
    return SlideInfo(name, size, plain.width, plain.height, plain.mpp or 0.0, plain.vendor)


def _unreadable(name: str, path: str, size: int, exc: Exception) -> SlideInfo:
    message = str(exc).replace(path, name) or type(exc).__name__
    return SlideInfo(name, size, error=f"cannot be read: {message}")


def nearest_names(wanted: str, names: Sequence[str], count: int = 3) -> list[str]:
    """The names most like ``wanted`` (a typo, another folder, another case),
    best first: by the whole name and by the file name alone."""
    by_file: dict[str, list[str]] = {}
    for name in names:
        by_file.setdefault(PurePosixPath(name).name.lower(), []).append(name)
    close = difflib.get_close_matches(wanted, names, n=count, cutoff=0.6)
    wanted_file = PurePosixPath(wanted).name.lower()
    for file_name in difflib.get_close_matches(wanted_file, list(by_file), n=count, cutoff=0.6):
        close += [name for name in by_file[file_name] if name not in close]
    return close[:count]
