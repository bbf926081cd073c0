"""The web UI in real headless Chromium (Debian's package, driven by Playwright
with its executable path; nothing is downloaded at run time)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import CMU, Service, cluster_with_gateway
from tests.timing import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make test installs it)"
)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("ui")
    with cluster_with_gateway(workdir, worker_slots=(2,), max_workers=2) as (_, service):
        yield service


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, gateway: Service) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(gateway.address + "/")
    yield page
    context.close()
    assert errors == [], errors


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """Into docs/screenshots/ with WSI_SAVE_SCREENSHOTS=1, else a temp folder."""
    folder = SCREENSHOTS if os.environ.get("WSI_SAVE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def wait_until(page: Any, expression: str, timeout: float = 15) -> None:
    """Polls ``expression`` from here: Playwright's wait_for_function evaluates
    strings inside the page, which the UI's Content-Security-Policy forbids."""
    wait_for(lambda: bool(page.evaluate(expression)), timeout, expression)


def use_user(page: Any, user: str) -> None:
    page.fill("#user-id", user)
    page.click("#user-form button")
    page.wait_for_selector("#stat-slots:not(:text('\u2013'))")


def test_create_watch_to_100_percent_and_open_the_result(page: Any, tmp_path: Path) -> None:
    use_user(page, "ui-alice")
    page.fill("#wf-name", "skin sample")
    row = page.locator("#job-rows tbody tr").first
    row.locator("[name=key]").fill("cells")
    row.locator("[name=wsi_path]").fill(CMU)
    page.click("#submit-workflow")
    workflow = page.locator(".workflow").first
    workflow.wait_for()
    # Progress moves without a reload, up to 100 %.
    page.wait_for_selector(".workflow[data-state=RUNNING]", timeout=30_000)
    screenshot(page, "running.png", tmp_path)
    page.wait_for_selector(".workflow[data-state=SUCCEEDED]", timeout=60_000)
    assert workflow.locator(".workflow-percent").inner_text() == "100%"
    assert "tiles" in workflow.locator("tr[data-job=cells] .tiles").inner_text()
    workflow.locator("tr[data-job=cells] .show-result").click()
    wait_until(page, "document.querySelector('#result-preview').naturalWidth > 0")
    nuclei = int(page.locator("[data-fact=nuclei]").inner_text())
    assert nuclei > 1000
    assert page.locator("#result-links [data-file='cells.geojson']").count() == 1
    screenshot(page, "result.png", tmp_path)


def test_cancel_a_pending_job(page: Any, tmp_path: Path) -> None:
    use_user(page, "ui-bob")
    page.click("#add-row")
    rows = page.locator("#job-rows tbody tr")
    for index, key in enumerate(("first", "second")):
        rows.nth(index).locator("[name=key]").fill(key)
        rows.nth(index).locator("[name=branch]").fill("lane")
        rows.nth(index).locator("[name=wsi_path]").fill(CMU)
    page.click("#submit-workflow")
    second = page.locator("tr[data-job=second]")
    second.wait_for()
    assert second.get_attribute("data-state") == "PENDING"
    assert "branch 'lane' busy" in second.locator(".reason").inner_text()
    screenshot(page, "pending.png", tmp_path)
    second.locator(".cancel-job").click()
    page.wait_for_selector("tr[data-job=second][data-state=CANCELLED]", timeout=15_000)
    page.wait_for_selector("tr[data-job=first][data-state=SUCCEEDED]", timeout=60_000)
    assert page.locator(".workflow").first.get_attribute("data-state") == "CANCELLED"
