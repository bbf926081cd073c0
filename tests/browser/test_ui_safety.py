"""The UI is safe on a shared browser and against other sites: nothing of one
user reaches the next (not through the HTTP cache, not through a late
answer), another site cannot frame it, and /docs works under the same CSP
with no network beyond the gateway."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import (
    Ui,
    collect_errors,
    header_mode_only,
    needs_chromium,
    use_user,
    wait_until,
)
from tests.harness import CMU
from tests.timing import wait_for
from wsi_gateway.app import DOCS_ASSETS

pytestmark = needs_chromium
SLOW_LIST_MS = 1500


def headers_of(ui: Ui, user: str) -> dict[str, str]:
    credential = ui.credentials[user]
    return {"Authorization": f"Bearer {credential}"} if ui.mode == "token" else {"X-User-ID": user}


def finished_job(ui: Ui, user: str, name: str) -> dict[str, Any]:
    """A TISSUE_MASK job of ``user``, run to the end through the HTTP API."""
    body = {"name": name, "jobs": [{"branch": "b", "job_type": "TISSUE_MASK", "wsi_path": CMU}]}
    with httpx.Client(base_url=ui.address, headers=headers_of(ui, user), timeout=10) as http:
        made = http.post("/workflows", json=body)
        assert made.status_code == 201, made.text
        workflow_id = made.json()["workflow_id"]

        def done() -> dict[str, Any] | None:
            workflow = http.get(f"/workflows/{workflow_id}").json()
            return workflow if workflow["state"] == "SUCCEEDED" else None

        workflow = wait_for(done, 60, f"{user}'s workflow to succeed")
        return workflow["jobs"][0]  # type: ignore[no-any-return]


def test_the_cache_never_hands_one_users_result_to_another(browser: Any, gateway: Ui) -> None:
    job = finished_job(gateway, "ui-alice", "cached")
    url = f"/jobs/{job['job_id']}/results/summary.json"
    context = browser.new_context()  # bob's 404 is logged: not the strict page fixture
    page = context.new_page()
    page.goto(gateway.address + "/")
    statuses = page.evaluate(
        """async ([url, first, second]) => {
            const a = await fetch(url, { headers: first });
            await a.text();
            const again = await fetch(url, { headers: first });
            await again.text();
            const b = await fetch(url, { headers: second });
            return [a.status, again.status, b.status];
        }""",
        [url, headers_of(gateway, "ui-alice"), headers_of(gateway, "ui-bob")],
    )
    context.close()
    assert statuses == [200, 200, 404]


def test_a_user_switch_shows_only_the_new_users_data(browser: Any, gateway: Ui) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = collect_errors(page)
    page.goto(gateway.address + "/")
    try:
        switch_users(page, gateway)
    finally:
        context.close()
    # The refused submit is the only thing the console reports (no CSP violation).
    assert all("status of 400" in e for e in errors), errors


def switch_users(page: Any, gateway: Ui) -> None:
    # Nothing typed as an identity can leave in a URL: the field has no name a
    # plain form submission would send (and the page handles every submit).
    assert page.get_attribute("#user-id", "name") is None
    alice_job = finished_job(gateway, "ui-alice", "alice's secret workflow")
    finished_job(gateway, "ui-bob", "bob's workflow")
    # Alice looks at a result and leaves a half-filled form with an error.
    use_user(page, gateway, "ui-alice")
    page.locator(f"tr[data-job='{alice_job['key']}'] .show-result").first.click()
    wait_until(page, "document.querySelector('#result-preview').naturalWidth > 0")
    page.keyboard.press("Escape")
    page.fill("#wf-name", "alice's draft")
    page.locator("#job-rows tbody tr [name=wsi_path]").first.fill("no-such-slide.svs")
    page.click("#submit-workflow")
    page.wait_for_selector("#create-error:not(:empty)")
    page.locator(f"tr[data-job='{alice_job['key']}'] .show-result").first.click()
    wait_until(page, "document.querySelector('#result-dialog').open")
    # From now on alice's list answers late; bob is chosen while it is on its way.
    slow = gateway.credentials["ui-alice"]
    page.evaluate(
        """([slow, ms]) => {
            const original = window.fetch;
            window.fetch = async (input, init) => {
                const sent = Object.values(init?.headers || {}).join(" ");
                const late = String(input).startsWith("/workflows?") && sent.includes(slow);
                if (late || String(input) === "/job-params") {
                    await new Promise((r) => setTimeout(r, ms));
                }
                return original(input, init);
            };
        }""",
        [slow, SLOW_LIST_MS],
    )
    page.evaluate("document.querySelector('#result-dialog').close()")
    page.fill("#user-id", gateway.credentials["ui-alice"])
    page.click("#user-form button")
    page.fill("#user-id", gateway.credentials["ui-bob"])
    page.click("#user-form button")
    # Before any answer for bob (his /job-params too is slow), none of alice's is shown.
    page.wait_for_timeout(300)
    assert "alice's secret workflow" not in page.locator(".workflow .name").all_inner_texts()
    page.wait_for_timeout(2 * SLOW_LIST_MS + 1000)  # alice's late answer has arrived by now
    names = page.locator(".workflow .name").all_inner_texts()
    assert "bob's workflow" in names
    assert "alice's secret workflow" not in names
    assert not page.evaluate("document.querySelector('#result-dialog').open")
    assert page.evaluate("document.querySelector('#result-preview').getAttribute('src')") is None
    assert page.locator("#result-summary dd").count() == 0
    assert page.input_value("#wf-name") == ""
    assert page.locator("#create-error").inner_text() == ""
    assert page.locator("#job-rows tbody tr [name=wsi_path]").first.input_value() == ""


@pytest.fixture
def framing_site() -> Iterator[str]:
    """Another origin (another port) whose page frames whatever ``?src=`` names."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            src = self.path.split("?src=", 1)[1] if "?src=" in self.path else ""
            body = f'<html><body><iframe id="f" src="{src}"></iframe></body></html>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@header_mode_only
def test_another_site_cannot_frame_the_ui(browser: Any, gateway: Ui, framing_site: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{framing_site}?src={gateway.address}/")
        page.wait_for_timeout(1500)
        framed = [f for f in page.frames if f != page.main_frame]
        assert framed, "the iframe element is there"
        # Blocked: the frame holds Chromium's error page, not the UI.
        for frame in framed:
            assert not frame.url.startswith(gateway.address), frame.url
            assert frame.query_selector("#user-form") is None
    finally:
        context.close()


@pytest.mark.skipif(not DOCS_ASSETS.is_dir(), reason="Swagger UI not installed (make web)")
@header_mode_only
def test_docs_render_from_the_gateway_alone_under_its_csp(browser: Any, gateway: Ui) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors = collect_errors(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(gateway.address + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        assert "WSI workflow scheduler" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path", timeout=15_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any("/workflows" in p for p in paths)
    finally:
        context.close()
    outside = [u for u in requests if not u.startswith((gateway.address, "data:", "blob:"))]
    assert outside == []
    assert errors == [], errors
