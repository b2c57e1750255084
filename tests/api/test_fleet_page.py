"""The fleet page at `/`: its files are served by the API and name nothing outside it; in a
real browser (slow tests), against a running pipeline with a simulated fleet, robots appear
and update, a robot the simulator drops turns offline and an alert shows."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route

from api.routes.fleet_page import STATIC_DIR
from db.migrate import prepare_database
from loadtest.screenshots import (
    VIEWPORT,
    Pipeline,
    chromium,
    fleet_pipeline,
    live_view_missing,
    row,
)
from tests.conftest import HARNESS

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Generous: processes start and the page connects on a loaded 2-core machine.
_WAIT_MS = 90_000
# The simulator drops its robot about 25 s into its run (loadtest/screenshots.py).
_DROP_WAIT_MS = 150_000

# Anything fetched from elsewhere: a URL with a host, or a protocol-relative one.
_EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")


async def test_page_and_assets_are_served_without_a_key(anonymous: httpx.AsyncClient) -> None:
    page = await anonymous.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    for asset, kind in (("/static/fleet.js", "javascript"), ("/static/fleet.css", "text/css")):
        assert asset in page.text
        response = await anonymous.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert (await anonymous.get("/static/nothing.js")).status_code == 404


def test_the_page_fetches_nothing_from_elsewhere() -> None:
    files = sorted(STATIC_DIR.iterdir())
    assert {f.name for f in files} >= {"index.html", "fleet.js", "fleet.css"}
    for path in files:
        assert not _EXTERNAL.search(path.read_text()), path.name


def test_text_from_the_wire_is_never_parsed_as_markup() -> None:
    script = (STATIC_DIR / "fleet.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script


# ---- In a real browser, against the whole pipeline (slow) -----------------------------------


@pytest.fixture(scope="module")
def fleet_database() -> Iterator[str]:
    """A database of this module's own: the live service summarises every registered robot,
    so robots other tests registered in the session's database would join the fleet."""
    missing = live_view_missing()
    if missing:
        pytest.skip(missing)
    name = f"rs_test_fleet_{uuid.uuid4().hex[:8]}"
    dsn = f"{HARNESS.postgres_url}/{name}"
    asyncio.run(
        prepare_database(
            dsn=dsn, today=datetime.now(UTC).date(), days_back=2, days_ahead=2, retention_days=30
        )
    )
    yield dsn

    async def drop() -> None:
        conn = await asyncpg.connect(f"{HARNESS.postgres_url}/postgres")
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="module")
def pipeline(
    fleet_database: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    with fleet_pipeline(
        workdir=tmp_path_factory.mktemp("fleet"),
        database_url=fleet_database,
        redis_url=HARNESS.redis_url,
        redis_prefix=f"{redis_prefix}fleet:",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def offline(browser: Browser) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context that can reach this machine only; lists what it refused."""
    context = browser.new_context(viewport=VIEWPORT)
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.hostname in _LOOPBACK:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    try:
        yield context, refused
    finally:
        context.close()


def _attribute(page: Page, selector: str, name: str) -> str:
    value = page.get_attribute(selector, name, timeout=_WAIT_MS)
    assert value is not None, f"{selector} has no {name}"
    return value


@pytest.mark.slow
def test_the_fleet_live_a_dropped_robot_and_its_alert(
    pipeline: Pipeline, offline: tuple[BrowserContext, list[str]], tmp_path: Path
) -> None:
    context, refused = offline
    page = context.new_page()
    page.goto(pipeline.page_link)
    # The key leaves the address bar at once and stays in the browser.
    assert "key=" not in page.url
    assert page.evaluate("localStorage.getItem('robosense.readKey')") == pipeline.read_key

    # Every robot of the simulated fleet appears, and rows update in place.
    for robot_id in pipeline.robot_ids:
        page.wait_for_selector(row(page, robot_id), timeout=_WAIT_MS)
    first = row(page, pipeline.robot_ids[0])
    page.wait_for_selector(row(page, pipeline.robot_ids[0], "online"), timeout=_WAIT_MS)
    # A mark on the row's element: still there after updates means updated in place.
    page.eval_on_selector(first, "row => { row.__marked = true; }")
    at = int(_attribute(page, first, "data-at"))
    page.wait_for_function(
        "([selector, at]) => Number(document.querySelector(selector).dataset.at) > at",
        arg=[first, at],
        timeout=_WAIT_MS,
    )
    assert page.eval_on_selector(first, "row => row.__marked === true")
    assert page.locator("#robots tbody tr[data-robot-id]").count() == len(pipeline.robot_ids)

    # The simulator drops one robot's connection: its row turns offline and an alert shows,
    # while the rest of the fleet stays online.
    dropped = pipeline.dropped_robot
    page.wait_for_selector(row(page, dropped, "offline"), timeout=_DROP_WAIT_MS)
    alert = f'#alerts li[data-robot-id="{dropped}"][data-kind="offline"]'
    page.wait_for_selector(alert, timeout=_WAIT_MS)
    page.wait_for_function(
        "(selector) => document.querySelector(selector).textContent.includes('offline')",
        arg=f"{row(page, dropped)} td.alerts",
        timeout=_WAIT_MS,
    )
    assert page.locator('#robots tbody tr[data-state="offline"]').count() == 1
    page.screenshot(path=tmp_path / "fleet-page.png")

    # A robot's detail: charts of its sensors and its GPS track.
    page.click(f"{first} td.rate")
    page.wait_for_selector("#detail:not([hidden])", timeout=_WAIT_MS)
    page.wait_for_function(
        "document.querySelectorAll('#charts canvas.chart').length >= 4", timeout=_WAIT_MS
    )
    page.wait_for_function(
        "/^[0-9]+ positions/.test(document.getElementById('gps-caption').textContent)",
        timeout=_WAIT_MS,
    )
    assert page.text_content("#detail-title") == pipeline.robot_ids[0]
    page.screenshot(path=tmp_path / "robot-detail.png")
    assert (tmp_path / "fleet-page.png").stat().st_size > 0
    assert refused == []


@pytest.mark.slow
def test_the_page_asks_for_a_key_once_and_refuses_a_bad_one(
    pipeline: Pipeline, offline: tuple[BrowserContext, list[str]]
) -> None:
    context, refused = offline
    page = context.new_page()
    page.goto(f"{pipeline.api_url}/")
    page.wait_for_selector("#key-dialog[open]", timeout=_WAIT_MS)
    page.fill("#key-input", "rsk_000000000000_not-a-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-dialog[open] #key-error:not([hidden])", timeout=_WAIT_MS)
    page.fill("#key-input", pipeline.read_key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector(row(page, pipeline.robot_ids[0]), timeout=_WAIT_MS)
    # Kept: a reload needs no key.
    page.reload()
    page.wait_for_selector(row(page, pipeline.robot_ids[0]), timeout=_WAIT_MS)
    assert not page.is_visible("#key-dialog")
    assert refused == []


@pytest.mark.slow
def test_the_page_gets_a_new_token_when_its_stream_is_refused(
    pipeline: Pipeline, offline: tuple[BrowserContext, list[str]]
) -> None:
    """The API restarts: the browser reconnects with its old token, long expired
    (LIVE_TOKEN_TTL_S is seconds here), is refused, and the page asks for a new token."""
    context, refused = offline
    page = context.new_page()
    tokens: list[str] = []
    page.on("request", lambda r: tokens.append(r.url) if r.url.endswith("/token") else None)
    page.goto(pipeline.page_link)
    first = row(page, pipeline.robot_ids[0])
    page.wait_for_selector(first, timeout=_WAIT_MS)
    page.wait_for_selector("#conn-status[data-status='live']", timeout=_WAIT_MS)
    assert len(tokens) == 1
    pipeline.restart_api()
    restarted_ms = int(time.time() * 1000)
    page.wait_for_function(
        "([selector, at]) => Number(document.querySelector(selector).dataset.at) > at",
        arg=[first, restarted_ms],
        timeout=_WAIT_MS,
    )
    page.wait_for_selector("#conn-status[data-status='live']", timeout=_WAIT_MS)
    assert len(tokens) >= 2
    assert refused == []
