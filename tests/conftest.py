"""Markers by where a test lives, so they always take effect: everything under
tests/integration and tests/browser starts real services (``integration``);
``make test-fast`` runs the rest, all in-process, in well under a minute."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SERVICE_FOLDERS = ("integration", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS)
        if relative.parts[0] in SERVICE_FOLDERS:
            item.add_marker(pytest.mark.integration)
