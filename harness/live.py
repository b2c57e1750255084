"""The live service as a real process (`python -m live`), for tests and benchmarks."""

from __future__ import annotations

from harness.module_process import ModuleProcess


class LiveProcess(ModuleProcess):
    module = "live"
