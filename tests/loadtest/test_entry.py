"""The benchmarks refuse to start, rather than fail after measuring, without their plotting
library."""

from __future__ import annotations

import sys

import pytest

from harness.services import run_here

_WITHOUT_MATPLOTLIB = """
import sys
class NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("no matplotlib here")
        return None
sys.meta_path.insert(0, NoMatplotlib())
import runpy
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["loadtest.rest", "--sizes", "--duration", "1"],
        ["loadtest.ingest", "--quick", "--no-ceilings", "--no-half-rate"],
        ["loadtest.fleet_reads", "--robots", "10", "--stream-clients", "0"],
    ],
)
def test_missing_matplotlib_stops_before_measuring(argv: list[str]) -> None:
    done = run_here([sys.executable, "-c", _WITHOUT_MATPLOTLIB, *argv])
    assert done.returncode == 1
    assert "matplotlib is missing" in done.stderr
    assert "bench" in done.stderr
    # Nothing was started: no measurement output.
    assert done.stdout == ""
