"""Writing a run's results: JSON (everything), a Markdown table, PNG plots."""

from __future__ import annotations

import argparse
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).with_name("results")


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "?"

    import os

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgresql": version(["psql", "--version"]),
        "redis": version(["redis-server", "--version"]).split(" sha")[0],
        "mosquitto": version(["sh", "-c", "mosquitto -h | head -1"]),
        "load_average_at_start": os.getloadavg(),
    }


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def header(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """What every benchmark's results begin with: its name, the machine, when, and its
    arguments (paths as text, so that the JSON holds them)."""
    return {
        "benchmark": name,
        "machine": machine(),
        "started_at": stamp(),
        "args": {k: _plain(v) for k, v in vars(args).items()},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write(*, name: str, data: dict[str, Any], markdown: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    base = RESULTS / f"{name}-{stamp()}"
    base.with_suffix(".json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    base.with_suffix(".md").write_text(markdown)
    return base


def require_plotting() -> None:
    """Exits at once, before any measuring, when the plots could not be drawn at the end."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "loadtest: matplotlib is missing; it comes with the `bench` extra, which "
            "scripts/setup installs (or: .venv/bin/python -m pip install -e '.[bench]')"
        ) from None


def plot_lines(
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[list[float], list[float]]],
    logy: bool = False,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) < 8 else None)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(
    path: Path,
    *,
    title: str,
    ylabel: str,
    labels: list[str],
    groups: dict[str, list[float]],
    logy: bool = False,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.9), 5))
    width = 0.8 / max(len(groups), 1)
    for k, (name, values) in enumerate(groups.items()):
        ax.bar([i + k * width for i in range(len(labels))], values, width, label=name)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(labels))])
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if logy:
        # Backlog ages (seconds) and paced latencies (tens of ms) on one readable axis.
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_panels(
    path: Path,
    *,
    title: str,
    xlabel: str,
    panels: list[tuple[str, dict[str, tuple[list[float], list[float]]]]],
    logx: bool = False,
) -> None:
    """Stacked panels sharing one x axis: one (ylabel, {label: (xs, ys)}) per panel; a label
    starting with "--" is drawn dashed (a target or an offered rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), sharex=True)
    for ax, (ylabel, series) in zip(axes, panels, strict=True):
        for label, (xs, ys) in series.items():
            dashed = label.startswith("--")
            ax.plot(
                xs,
                ys,
                ls="--" if dashed else "-",
                marker=None if dashed else "o",
                label=label.removeprefix("--"),
            )
        ax.set_ylabel(ylabel)
        # From 0, with room above the highest point (a flat line at the top stays visible).
        top = max((y for _, ys in series.values() for y in ys), default=1.0)
        ax.set_ylim(0, top * 1.15 or 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if logx:
        axes[-1].set_xscale("log")
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grid(
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    panels: dict[str, dict[str, tuple[list[float], list[float]]]],
    logx: bool = False,
    logy: bool = False,
) -> None:
    """One small chart per panel (its title: the key), side by side in rows of three, each
    with its own lines (label -> xs, ys) and the same axes' labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, max(len(panels), 1))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels.items(), strict=False):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label, marker="o")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if logx:
            ax.set_xscale("log")
            ticks = sorted({x for xs, _ in series.values() for x in xs})
            ax.set_xticks(ticks, [f"{x:,.0f}" for x in ticks])
            ax.minorticks_off()
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
