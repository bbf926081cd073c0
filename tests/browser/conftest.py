"""What the browser tests share: Debian's Chromium driven by Playwright (its
executable path; nothing is downloaded at run time), a gateway in each
identity mode, and a page that fails its test on any console error (a CSP
violation included)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Service, cluster_with_gateway
from tests.timing import wait_for
from wsi_runtime.token_file import add_token

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
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


USERS = ("ui-alice", "ui-bob", "ui-carol")


@dataclass
class Ui:
    gateway: Service
    mode: str
    credentials: dict[str, str]  # what a user types: the user id, or the API token
    address: str = ""

    def __post_init__(self) -> None:
        self.address = self.gateway.address


# For a test whose subject is not identity (layout, forms, framing): the
# header mode only. Every call of the UI goes through one fetch wrapper, so
# the flows that run in both modes cover the token's trip.
header_mode_only = pytest.mark.parametrize("gateway", ["header"], indirect=True)


@pytest.fixture(scope="module", params=["header", "token"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ui]:
    """The UI in both identity modes: the same tests, user ids or API tokens."""
    workdir = tmp_path_factory.mktemp(f"ui-{request.param}")
    settings: dict[str, Any] = {"worker_slots": (2,), "max_workers": 2}
    credentials = {name: name for name in USERS}
    if request.param == "token":
        tokens = workdir / "tokens.txt"
        credentials = {name: add_token(tokens, name) for name in USERS}
        settings["auth_tokens"] = str(tokens)
    with cluster_with_gateway(workdir, **settings) as (_, service):
        yield Ui(service, request.param, credentials)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, gateway: Ui) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = collect_errors(page)
    page.goto(gateway.address + "/")
    yield page
    context.close()
    assert errors == [], errors


def collect_errors(page: Any) -> list[str]:
    """Console errors (CSP violations among them) and uncaught exceptions."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """Into docs/screenshots/ with WSI_SAVE_SCREENSHOTS=1, else a temp folder."""
    folder = SCREENSHOTS if os.environ.get("WSI_SAVE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def wait_until(page: Any, expression: str, timeout: float = 15) -> None:
    """Polls ``expression`` from here: Playwright's wait_for_function evaluates
    strings inside the page, which the UI's Content-Security-Policy forbids."""
    wait_for(lambda: bool(page.evaluate(expression)), timeout, expression)


def use_user(page: Any, ui: Ui, user: str) -> None:
    page.fill("#user-id", ui.credentials[user])
    page.click("#user-form button")
    page.wait_for_selector("#stat-slots:not(:text('\u2013'))")
