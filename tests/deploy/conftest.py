"""The image, built once for the deploy tests; and a mark on a test whose
call failed, so that its fixtures can say more (the containers' logs) as
they tear down."""

from __future__ import annotations

import subprocess
from collections.abc import Generator
from typing import Any

import pytest

from tests.deploy.podman import ENV, IMAGE, image_built_by_make_test
from tests.harness import ROOT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed_call = True  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def image() -> str:
    """Built by the README's command (the build is cached between runs),
    unless ``make test`` has just built it."""
    if not image_built_by_make_test():
        subprocess.run(["make", "image"], cwd=ROOT, env=ENV, check=True, timeout=1200)
    return IMAGE
