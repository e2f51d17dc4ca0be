"""The run inspector page in headless Chromium: the run list, a timeline filling while the
run goes on, and the human-input form answering a waiting run. Screenshots go to
``test-artifacts/inspector/``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from riverbed.server import create_app
from riverbed.stores.sqlite import SqliteStore
from server_workflows.approval import Approval, Counter
from server_workflows.harness import ROOT, serve

expect = pytest.importorskip("playwright.async_api").expect

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "inspector"
TOKEN = "page-token-0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: install Debian's chromium package (the CI script does)",
)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    store = SqliteStore(tmp_path / "runs.db")
    app = create_app([Approval(store=store), Counter(store=store)], token=TOKEN)
    async with serve(app) as base:
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            yield base, http
    await store.close()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == [], errors  # no JavaScript error on the page
        finally:
            await browser.close()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def until(page: Any, selector: str, count: int) -> None:
    """Wait until ``selector`` matches at least ``count`` elements (the page's CSP forbids
    the eval behind ``wait_for_function``)."""
    for _ in range(300):
        if await page.locator(selector).count() >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{selector}: fewer than {count} after 15 s")


async def log_in(page: Any, base: str) -> None:
    await page.goto(base + "/")
    await page.fill("#token", TOKEN)  # the API needs the token; the page asks for it
    await page.click("#login-form button")


async def test_run_list_and_live_timeline(site: tuple[str, httpx.AsyncClient], page: Any) -> None:
    base, http = site
    name = Counter().workflow_name
    started = await http.post(
        f"/api/workflows/{name}/runs", json={"input": {"upto": 12, "delay": 0.2}}
    )
    run_id = started.json()["run_id"]
    await log_in(page, base)
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    await row.wait_for()
    assert "running" in await row.inner_text()
    await shot(page, "run-list")
    await row.click()
    await page.wait_for_url(f"**/#/runs/{run_id}")
    # the timeline fills while the run goes on
    await until(page, "#timeline-body tr", 3)
    assert await page.inner_text("#run-status") == "running"
    # the step running now is the last line, until the run ends
    current = page.locator("#timeline-body tr.open")
    await expect(current).to_have_count(1)
    assert "running" in await current.inner_text()
    await shot(page, "run-live")
    await expect(page.locator("#run-status")).to_have_text("completed")
    assert await page.locator("#timeline-body tr").count() == 13  # begin + 12 counts
    assert await page.locator("#timeline-body tr.open").count() == 0
    assert await page.locator("#stream-list li").count() == 13  # 12 numbers + the end
    assert '"total":12' in await page.inner_text("#run-result")
    assert await page.locator("#graph svg .rb-taken").count() > 0  # the path taken
    await shot(page, "run-completed")


async def test_human_input_form_answers_a_waiting_run(
    site: tuple[str, httpx.AsyncClient], page: Any
) -> None:
    base, http = site
    name = Approval().workflow_name
    await log_in(page, base)
    await page.locator("#start-box summary").click()
    await page.select_option("#start-workflow", name)
    await page.fill("#start-input", '{"topic": "the budget", "ticks": 2}')
    await page.click("#start-form button")
    await page.locator("#input-box").wait_for(state="visible")
    assert "Approve the budget?" in await page.inner_text("#input-question")
    assert await page.inner_text("#run-status") == "waiting for input"
    # The form's event types come from the workflow's schema, fetched when the box opens.
    await expect(page.locator("#input-type")).to_have_value("Answer")
    await page.check('#input-fields input[name="approved"]')
    await page.fill('#input-fields input[name="note"]', "go ahead")
    await shot(page, "human-input")
    await page.click("#input-form button")
    await expect(page.locator("#run-status")).to_have_text("completed")
    result = await page.inner_text("#run-result")
    assert '"approved":true' in result
    assert '"note":"go ahead"' in result
    assert '"answered": true' in await page.inner_text("#state")
    run_id = page.url.rsplit("/", 1)[-1]
    run = (await http.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "completed"
    await shot(page, "human-input-answered")
