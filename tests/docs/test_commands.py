"""Every command the docs give runs as written after the README's set-up: each one's program
and flags are checked by running it with `--help` appended (arguments before `--help` are
parsed and type-checked; nothing is started), and no command relies on an activated venv."""

from __future__ import annotations

import re

import pytest

from harness.services import ROOT, run_here

DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
_RUNNABLE = re.compile(r"^\.venv/bin/(python -m [\w.]+|locust)\b")
_BARE = re.compile(r"^(python3? -m|locust|pip) ")


def _code_block_commands(*, inline: bool = True) -> list[tuple[str, str]]:
    """(where, command) of each shell line in fenced blocks and, with `inline`, of inline
    `...` spans (where prose also names entry points, `python -m api`, as the README says)."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S):
            joined = re.sub(r"\\\n\s*", "", block)
            for line in joined.splitlines():
                found.append((doc.name, line.strip()))
        if inline:
            for span in re.findall(r"`([^`\n]+)`", text):
                found.append((doc.name, span.strip()))
    return found


def _runnable() -> list[tuple[str, str]]:
    return [(where, cmd) for where, cmd in _code_block_commands() if _RUNNABLE.match(cmd)]


def test_no_command_needs_an_activated_venv() -> None:
    blocks = _code_block_commands(inline=False)
    bare = [(where, cmd) for where, cmd in blocks if _BARE.match(cmd)]
    assert bare == []


def test_the_docs_give_commands_to_check() -> None:
    modules = {_RUNNABLE.match(cmd).group(1) for _, cmd in _runnable()}  # type: ignore[union-attr]
    assert {"python -m edge_simulator", "python -m loadtest.ingest", "locust"} <= modules


@pytest.mark.parametrize(("where", "command"), _runnable())
def test_command_runs_as_written(where: str, command: str) -> None:
    command = re.sub(r"\s+#\s.*$", "", command).rstrip(" &")
    # Input redirections name the reader's own files (`< pw`): not there, and not needed here.
    command = re.sub(r"\s<\s*\S+", "", command)
    done = run_here(["bash", "-c", f"{command} --help"], timeout=120)
    assert done.returncode == 0, f"{where}: {command}\n{done.stderr[-2000:]}"
    assert "usage" in done.stdout.lower(), done.stdout[-500:]
