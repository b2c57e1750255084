"""Route modules share parsing and documents through modules of their own, never each other."""

from __future__ import annotations

import ast

from harness.services import ROOT


def _imported_modules(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_route_module_imports_another() -> None:
    routes = sorted((ROOT / "api" / "routes").glob("*.py"))
    assert len(routes) > 5
    offenders = {
        path.name: sorted(
            m for m in _imported_modules(path.read_text()) if m.startswith("api.routes")
        )
        for path in routes
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}
