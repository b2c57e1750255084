"""/api/stats: the recent past from the per-minute Redis counters, O(minutes) not O(rows).

Nothing is cached, so nothing expires at a minute boundary: every request sums the window's
minute buckets (one Redis round trip), whatever the table's size.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.auth import ReadRes
from api.lean_route import LeanRoute
from api.query_params import parse_duration
from api.responses import JSONBytes
from api.schemas import ErrorOut, StatsOut

router = APIRouter(prefix="/api/stats", tags=["stats"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 422, 503)
}


def _dt(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


@router.get("", response_model=StatsOut, responses=_ERRORS)
async def stats(
    res: ReadRes,
    window: Annotated[str, Query(max_length=8, description="Whole minutes: 15m, 1h, 24h")] = "1h",
    top: Annotated[int, Query(ge=0, le=100, description="How many robots to rank")] = 10,
) -> Response:
    """Readings in [since, until): whole minutes of reading time ending with the current one,
    so `total_readings` equals COUNT(*) of sensor_readings with ts in that range.
    `rejected` counts refusals by reason, by minute of receipt."""
    seconds = parse_duration(window, "window", least=60, most=86400)
    now = time.time()
    current = int(now) // 60 * 60
    n = seconds // 60
    minutes = [current - 60 * i for i in range(n - 1, -1, -1)]
    counts = await res.counters.window(minutes, top=top)
    total = 0
    by_type: Counter[str] = Counter()
    series: list[dict[str, Any]] = []
    for minute, totals in zip(minutes, counts.totals, strict=True):
        in_minute = totals.pop("*", 0)
        total += in_minute
        by_type.update(totals)
        series.append({"minute": _dt(minute), "readings": in_minute})
    rejected: Counter[str] = Counter()
    for per_reason in counts.rejected:
        rejected.update(per_reason)
    # The current minute and the one before: a rate over 60-120 s that moves smoothly across
    # a minute boundary instead of restarting from zero.
    recent = series[-2:]
    elapsed = (now - current) + 60 * (len(recent) - 1)
    rate = sum(m["readings"] for m in recent) / max(elapsed, 1.0)
    return JSONBytes(
        {
            "since": _dt(minutes[0]),
            "until": _dt(current + 60),
            "total_readings": total,
            "by_sensor_type": dict(by_type),
            "top_robots": [{"robot_id": r, "readings": c} for r, c in counts.top_robots],
            "per_minute": series,
            "readings_per_second": round(rate, 3),
            "robots_online": counts.robots_online,
            "robots_with_status": counts.robots_with_status,
            "rejected": dict(rejected),
        }
    )
