"""The project's version, from the installed distribution's metadata: one
number, set in pyproject.toml, reported by the worker's GetInfo and the
gateway's OpenAPI document."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "wsi-scheduler"

try:
    VERSION = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
