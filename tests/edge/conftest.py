from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.edge import SiteMosquitto, SiteWatch, TcpProxy
from harness.services import TEST_OPERATOR, Mosquitto

SITE = "site-a"


MakeSite = Callable[..., SiteMosquitto]


@pytest.fixture
def make_site(mosquitto: Mosquitto, wan: TcpProxy, tmp_path: Path) -> Iterator[MakeSite]:
    """A site broker for `robots`, bridged to the cloud broker through `wan`; not started."""
    made: list[SiteMosquitto] = []

    def make(robots: list[str], **overrides: str) -> SiteMosquitto:
        site = SiteMosquitto(
            workdir=tmp_path / "site",
            cloud=mosquitto,
            site_id=SITE,
            robots=robots,
            via_port=wan.port,
            overrides=overrides,
        )
        made.append(site)
        return site

    yield make
    for site in made:
        site.stop()


@pytest.fixture
def watch(mosquitto: Mosquitto) -> Iterator[SiteWatch]:
    w = SiteWatch(mosquitto, TEST_OPERATOR)
    yield w
    w.close()
