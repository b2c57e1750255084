"""Starting a service's process with its output appended to a log file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def spawn_logged(command: list[str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Popen with stdout and stderr appended to `log`. The child has its own descriptor of
    the file; ours is closed as soon as the child started, not left to the garbage collector
    (which warns of every unclosed file)."""
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=out, **popen)
