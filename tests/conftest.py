"""Markers by where a test lives, so they always take effect: everything under
tests/integration and tests/browser starts real services (``integration``);
``make test-fast`` runs the rest, all in-process, in well under a minute."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import WORKER_SECRET

# Every scheduler and worker a test starts, by the harness or by hand, shares it.
os.environ.setdefault("WSI_WORKER_SECRET", WORKER_SECRET)

TESTS = Path(__file__).resolve().parent
SERVICE_FOLDERS = ("integration", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS)
        if relative.parts[0] in SERVICE_FOLDERS:
            item.add_marker(pytest.mark.integration)
