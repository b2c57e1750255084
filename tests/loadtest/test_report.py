"""loadtest.report.header: the start every benchmark's results share."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from loadtest import report


def test_the_header_keeps_numbers_and_writes_paths_as_text() -> None:
    args = argparse.Namespace(
        repeat=3, rate=[1000.0, 2000.0], profile=Path("/tmp/p"), trees=[Path("a")], baseline=None
    )
    header = report.header("ingest", args)
    assert header["benchmark"] == "ingest"
    assert header["args"] == {
        "repeat": 3,
        "rate": [1000.0, 2000.0],
        "profile": "/tmp/p",
        "trees": ["a"],
        "baseline": None,
    }
    assert orjson.loads(orjson.dumps(header))["args"] == header["args"]
