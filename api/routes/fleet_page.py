"""The fleet page at `/`: static files from api/static/, nothing from a CDN. The page asks
for a read key and talks to /api/live and /api/alerts like any client; serving it is open
(it holds no data)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PATH = "/static"

router = APIRouter(tags=["fleet page"])


@router.get("/", response_class=FileResponse, include_in_schema=False)
async def fleet_page() -> Response:
    # Revalidated on every load (ETag, 304 when unchanged), so a new version is seen at once.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)
