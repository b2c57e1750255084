"""The import graph of our top-level packages, read from the source (AST), and its cycles.

`python -m harness.architecture` rewrites docs/architecture.md from the code; `--check` only
reports whether that page is current. tests/harness/test_architecture.py fails on a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from harness.services import ROOT

DOC = ROOT / "docs" / "architecture.md"
_SKIPPED_DIRS = {".venv", "build", "dist", "node_modules"}

# package -> package it imports -> modules of the first that import the second
Graph = dict[str, dict[str, list[str]]]


def packages(root: Path) -> list[str]:
    """Top-level directories that are Python packages."""
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and d.name not in _SKIPPED_DIRS and (d / "__init__.py").is_file()
    )


def _source_files(package_dir: Path) -> Iterator[Path]:
    for path in sorted(package_dir.rglob("*.py")):
        if not _SKIPPED_DIRS.intersection(path.parts):
            yield path


def _imported_tops(tree: ast.AST) -> Iterator[str]:
    # Every import counts, also those inside functions or under TYPE_CHECKING: each is a
    # dependency a cycle can run through.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def import_graph(root: Path) -> Graph:
    ours = packages(root)
    graph: Graph = {p: {} for p in ours}
    for package in ours:
        for path in _source_files(root / package):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for top in set(_imported_tops(tree)):
                if top in graph and top != package:
                    graph[package].setdefault(top, []).append(module)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle among the packages (its first package repeated at the end), or None."""
    try:
        tuple(TopologicalSorter({p: set(deps) for p, deps in graph.items()}).static_order())
    except CycleError as exc:
        cycle: list[str] = list(reversed(exc.args[1]))
        return cycle
    return None


def render(graph: Graph) -> str:
    cycle = find_cycle(graph)
    layers = (
        []
        if cycle
        else list(TopologicalSorter({p: set(deps) for p, deps in graph.items()}).static_order())
    )
    lines = [
        "# Architecture: the package import graph",
        "",
        "Generated from the code by `python -m harness.architecture` (do not edit by hand; run",
        "it after changing an import between packages). An arrow `a --> b` means a module of",
        "`a` imports from `b`. Packages depend one way: `tests/harness/test_architecture.py`",
        "fails when a cycle appears.",
        "",
        "```mermaid",
        "flowchart TD",
    ]
    for package, deps in graph.items():
        if not deps:
            lines.append(f"    {package}")
        lines.extend(f"    {package} --> {dep}" for dep in sorted(deps))
    lines += ["```", ""]
    if cycle:
        lines += [f"**Cycle:** {' → '.join(cycle)}", ""]
    else:
        lines += ["From the bottom up: " + ", ".join(f"`{p}`" for p in layers) + ".", ""]
    lines += ["| package | imports from |", "|---|---|"]
    for package, deps in graph.items():
        lines.append(
            f"| `{package}` | {', '.join(f'`{d}`' for d in sorted(deps)) or '(none of ours)'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.architecture", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    graph = import_graph(ROOT)
    text = render(graph)
    if args.check:
        current = DOC.is_file() and DOC.read_text(encoding="utf-8") == text
        print(f"{DOC.relative_to(ROOT)} is {'current' if current else 'stale'}")
        return 0 if current else 1
    DOC.write_text(text, encoding="utf-8")
    cycle = find_cycle(graph)
    if cycle:
        print("cycle: " + " -> ".join(cycle), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
