"""How many dead letters a flood may write."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.dead_letter_limit import DeadLetterLimit, rejection_source
from telemetry.errors import RejectReason
from telemetry.payload import Rejection


def rejections(topic: str, n: int) -> list[Rejection]:
    now = datetime.now(UTC)
    return [Rejection(now, topic, RejectReason.UNKNOWN_ROBOT, "x", b"", 0) for _ in range(n)]


def test_source_is_the_robot_id_or_else_the_topic() -> None:
    assert rejection_source("robots/ghost/sensors/battery") == "ghost"
    assert rejection_source("robots/ghost/whatever/else") == "ghost"
    assert rejection_source("elsewhere/x") == "elsewhere/x"


def test_each_source_keeps_its_quota_per_minute_and_the_rest_is_counted() -> None:
    limit = DeadLetterLimit(per_source=10, total=1000)
    batch = rejections("robots/flood/sensors/imu", 25) + rejections("robots/quiet/sensors/gps", 3)
    first = limit.admit(batch, now_s=600.0)
    assert len(first.kept) == 13
    assert first.dropped == {"unknown_robot": 15}
    limit.record(first)
    # Same minute: the flood's quota is spent, the quiet source still has room.
    second = limit.admit(batch, now_s=659.0)
    assert [r.topic for r in second.kept] == ["robots/quiet/sensors/gps"] * 3
    limit.record(second)
    # Next minute: fresh quotas.
    assert len(limit.admit(batch, now_s=660.0).kept) == 13


def test_an_uncommitted_admission_charges_nothing() -> None:
    limit = DeadLetterLimit(per_source=10, total=1000)
    batch = rejections("robots/a/sensors/imu", 10)
    assert len(limit.admit(batch, now_s=0).kept) == 10  # not recorded: the commit failed
    assert len(limit.admit(batch, now_s=1).kept) == 10


def test_many_sources_share_the_total() -> None:
    limit = DeadLetterLimit(per_source=10, total=50)
    batch = [r for i in range(200) for r in rejections(f"robots/fake{i}/sensors/imu", 1)]
    admission = limit.admit(batch, now_s=0)
    assert len(admission.kept) == 50
    assert admission.dropped == {"unknown_robot": 150}
