"""/docs and /redoc render in a browser with no internet: Swagger UI and ReDoc come from the
API itself. Headless Chromium (Debian's) with every non-loopback request blocked, so an asset
from a CDN would leave the page blank and fail the test."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# ReDoc's "API docs by Redocly" footer links its logo from its CDN, whatever the page says;
# without it the footer shows no logo and nothing else changes.
_REDOC_FOOTER_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def offline(browser: Browser) -> Iterator[tuple[BrowserContext, list[str]]]:
    """A browser context that cannot reach anything but this machine; lists what it refused."""
    context = browser.new_context()
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in _LOOPBACK:
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    context.route("**/*", only_loopback)
    try:
        yield context, refused
    finally:
        context.close()


def test_swagger_ui_renders_the_api_offline(
    api_url: str, offline: tuple[BrowserContext, list[str]]
) -> None:
    context, refused = offline
    page = context.new_page()
    page.goto(f"{api_url}/docs")
    # Text Swagger UI renders from /openapi.json: the title and an operation's path.
    page.locator(".info .title", has_text="RoboSense API").wait_for(timeout=60_000)
    page.locator(".opblock-summary-path", has_text="/api/sensors/aggregate").first.wait_for(
        timeout=60_000
    )
    assert refused == []


def test_redoc_renders_the_api_offline(
    api_url: str, offline: tuple[BrowserContext, list[str]]
) -> None:
    context, refused = offline
    page = context.new_page()
    page.goto(f"{api_url}/redoc")
    page.locator("h1", has_text="RoboSense API").first.wait_for(timeout=60_000)
    # An operation's summary, as ReDoc lists it in its side menu and body.
    page.locator("h2", has_text="Get Robots").first.wait_for(timeout=60_000)
    assert [url for url in refused if url != _REDOC_FOOTER_LOGO] == []
