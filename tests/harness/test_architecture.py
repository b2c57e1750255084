from __future__ import annotations

from pathlib import Path

from harness.architecture import find_cycle, import_graph, render
from harness.services import ROOT


def _package(root: Path, name: str, source: str) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "mod.py").write_text(source)


def test_our_packages_depend_one_way() -> None:
    graph = import_graph(ROOT)
    assert {"telemetry", "db", "ingest", "bridge", "api", "harness", "tests"} <= graph.keys()
    assert find_cycle(graph) is None
    # The contract sits at the bottom and the SQL under the write path.
    assert graph["telemetry"] == {}
    assert "ingest" not in graph["db"]


def test_a_cycle_between_packages_is_found(tmp_path: Path) -> None:
    _package(tmp_path, "low", "def f() -> None:\n    from high.mod import g\n")
    _package(tmp_path, "high", "from low import mod\nimport os\n")
    _package(tmp_path, "other", "import high.mod\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "high": {"low": ["high.mod"]},
        "low": {"high": ["low.mod"]},
        "other": {"high": ["other.mod"]},
    }
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"low", "high"}
    assert "**Cycle:**" in render(graph)
