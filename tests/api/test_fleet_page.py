"""The fleet page at `/`: its files are served by the API and name nothing outside it; in a
real browser (slow tests), against a running pipeline with a simulated fleet, robots appear
and update, a robot the simulator drops turns offline and an alert shows."""

from __future__ import annotations

import re

import httpx

from api.routes.fleet_page import STATIC_DIR

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
