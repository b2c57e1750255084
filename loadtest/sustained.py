"""Whether a fixed offered rate was sustained, from per-second series; and its plot.

Issue 15's definition: a rate is sustained when, held for at least 60 s, the backlog (offered
and not yet done) and the lag (offer to done: publish to commit, or a request's scheduled
send to its answer) stay bounded, i.e. stop growing. Short runs drain a burst; they are
reported as bursts, never as sustained.

The verdict compares the second half of the offering window with the first half's end:
- backlog: the least-squares slope of the backlog over the second half, as a share of the
  offered rate. A pipeline that keeps up has a backlog that wobbles with its batches (slope
  near 0); one that does not grows it by (offered - done) per second. Bounded when the backlog
  grows by less than `BACKLOG_SLACK_S` seconds' worth of offered work over the second half;
- lag: the p99 of the last third's lag against the middle third's. Bounded when it is at most
  `LAG_GROWTH` times the middle third's plus `LAG_SLACK_MS` (batches and checkpoints make the
  lag wobble; a backlog makes it climb without end).
Both must hold, and the run must have offered for at least `MIN_SECONDS`.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIN_SECONDS = 60.0
BACKLOG_SLACK_S = 0.5
LAG_GROWTH = 1.5
LAG_SLACK_MS = 100.0


@dataclass(slots=True)
class Series:
    """Per-second buckets from the start of the offering (second k = [k, k+1))."""

    offered: list[int] = field(default_factory=list)  # items offered (published, scheduled)
    done: list[int] = field(default_factory=list)  # items done (committed, answered)
    lag_p99_ms: list[float | None] = field(default_factory=list)  # of items done that second
    lag_ms: list[list[float]] | None = None  # optional raw lags per second (REST)

    def backlog(self) -> list[int]:
        out, offered, done = [], 0, 0
        for o, d in zip(self.offered, self.done, strict=True):
            offered += o
            done += d
            out.append(offered - done)
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    offered_per_s: float  # over the offering window
    done_per_s: float  # items done within the offering window, per second of it
    offering_s: float
    backlog_slope_per_s: float  # growth of the backlog over the second half
    backlog_max: int
    lag_p99_middle_ms: float
    lag_p99_last_ms: float
    drain_s: float  # after the offering stopped, until the last item was done
    long_enough: bool
    backlog_bounded: bool
    lag_bounded: bool

    @property
    def sustained(self) -> bool:
        return self.long_enough and self.backlog_bounded and self.lag_bounded

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sustained": self.sustained}

    def line(self) -> str:
        word = "SUSTAINED" if self.sustained else ("burst" if not self.long_enough else "NOT kept")
        return (
            f"{word}: offered {self.offered_per_s:,.0f}/s, done {self.done_per_s:,.0f}/s over "
            f"{self.offering_s:.0f} s; backlog slope {self.backlog_slope_per_s:+,.0f}/s "
            f"(max {self.backlog_max:,}); lag p99 middle third {self.lag_p99_middle_ms:.0f} ms, "
            f"last third {self.lag_p99_last_ms:.0f} ms; drained {self.drain_s:.1f} s after"
        )


def _slope(ys: list[int]) -> float:
    if len(ys) < 2:
        return 0.0
    xs = list(range(len(ys)))
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def verdict(series: Series, *, offering_s: float) -> Verdict:
    """`offering_s`: how long the offering lasted (buckets past it are the drain)."""
    n = max(1, int(offering_s))
    offered = sum(series.offered[:n])
    done = sum(series.done[:n])
    backlog = series.backlog()
    half = backlog[n // 2 : n]
    slope = _slope(half)
    rate = offered / n

    def lag_of(lo: int, hi: int) -> float:
        if series.lag_ms is not None:
            return _p99([x for sec in series.lag_ms[lo:hi] for x in sec])
        # Per-second p99s weighted by nothing: the worst second's p99 is what a user sees.
        values = [v for v in series.lag_p99_ms[lo:hi] if v is not None]
        return statistics.median(values) if values else 0.0

    middle = lag_of(n // 3, 2 * n // 3)
    last = lag_of(2 * n // 3, n)
    last_done = max((k for k, d in enumerate(series.done) if d), default=0)
    return Verdict(
        offered_per_s=rate,
        done_per_s=done / n,
        offering_s=offering_s,
        backlog_slope_per_s=slope,
        backlog_max=max(backlog[:n], default=0),
        lag_p99_middle_ms=middle,
        lag_p99_last_ms=last,
        drain_s=max(0.0, last_done + 1 - offering_s),
        long_enough=offering_s >= MIN_SECONDS,
        backlog_bounded=slope * len(half) <= BACKLOG_SLACK_S * rate,
        lag_bounded=last <= LAG_GROWTH * middle + LAG_SLACK_MS,
    )


def plot(path: Path, *, title: str, runs: dict[str, Series], unit: str) -> None:
    """Three panels over time: offered and done per second, backlog, lag p99 per second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for label, s in runs.items():
        xs = list(range(len(s.done)))
        (line,) = axes[0].plot(xs, s.done, label=f"{label}: done")
        axes[0].plot(xs, s.offered, ls=":", color=line.get_color(), label=f"{label}: offered")
        axes[1].plot(xs, s.backlog(), color=line.get_color(), label=label)
        lag = s.lag_p99_ms
        if s.lag_ms is not None:
            lag = [_p99(v) if v else None for v in s.lag_ms]
        axes[2].plot(
            xs,
            [float("nan") if v is None else v for v in lag],
            color=line.get_color(),
            label=label,
        )
    axes[0].set_ylabel(f"{unit}/s")
    axes[1].set_ylabel(f"backlog ({unit})")
    axes[2].set_ylabel("lag p99 (ms)")
    axes[2].set_xlabel("seconds since the offering started")
    axes[0].set_title(title)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
