"""loadtest/sustained.py: the verdict that a benchmark's fixed offered rate was sustained."""

from __future__ import annotations

from loadtest.sustained import Series, verdict


def _series(done_per_s: int, *, seconds: int = 70, rate: int = 1000) -> Series:
    """Offered `rate`/s; done `done_per_s` (capped by what is waiting), the rest drained."""
    offered: list[int] = []
    done: list[int] = []
    lag: list[float | None] = []
    backlog = 0
    for _ in range(seconds):
        backlog += rate
        d = min(done_per_s, backlog)
        backlog -= d
        offered.append(rate)
        done.append(d)
        lag.append(50.0 + 1000.0 * backlog / rate)
    while backlog:
        d = min(done_per_s, backlog)
        backlog -= d
        offered.append(0)
        done.append(d)
        lag.append(50.0)
    return Series(offered=offered, done=done, lag_p99_ms=lag)


def test_keeping_up_for_70_s_is_sustained() -> None:
    v = verdict(_series(1000), offering_s=70)
    assert v.sustained and v.backlog_bounded and v.lag_bounded
    assert v.done_per_s == 1000 and v.drain_s == 0


def test_falling_behind_by_5_percent_is_not() -> None:
    v = verdict(_series(950), offering_s=70)
    assert not v.sustained
    assert not v.backlog_bounded and v.backlog_slope_per_s > 40
    assert not v.lag_bounded and v.lag_p99_last_ms > v.lag_p99_middle_ms
    assert v.drain_s > 0


def test_a_short_run_is_a_burst_whatever_it_shows() -> None:
    v = verdict(_series(1000, seconds=20), offering_s=20)
    assert v.backlog_bounded and v.lag_bounded
    assert not v.long_enough and not v.sustained
    assert v.line().startswith("burst")


def test_per_request_lags_are_used_when_given() -> None:
    series = _series(1000)
    series.lag_ms = [[10.0] * 100 for _ in series.done]
    series.lag_ms[-1] = [10_000.0]  # one slow answer among the last third's 2,201
    v = verdict(series, offering_s=70)
    assert v.lag_p99_middle_ms == v.lag_p99_last_ms == 10.0
    series.lag_ms[-1] = [10_000.0] * 100  # a slow last second: 100 of 2,300
    assert verdict(series, offering_s=70).lag_p99_last_ms == 10_000.0
