"""harness.spawn: a child's output goes to its log; the parent closes its own handle at once."""

from __future__ import annotations

import gc
import sys
import warnings
from pathlib import Path

from harness.spawn import spawn_logged


def test_the_child_writes_its_log_and_the_parent_closes_its_handle(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_bytes(b"before\n")
    with warnings.catch_warnings(record=True) as caught:
        # An unclosed file warns when it is collected: closed by us, it never does.
        warnings.simplefilter("always", ResourceWarning)
        proc = spawn_logged(
            [sys.executable, "-c", "import sys; print('out', flush=True); sys.exit('err')"], log
        )
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert proc.wait(timeout=30) == 1
    assert log.read_text().splitlines() == ["before", "out", "err"]
