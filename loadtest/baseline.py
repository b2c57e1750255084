"""A previous commit checked out beside this tree, for benchmarks that run both in one sitting.

The machine is shared and noisy: a figure is only comparable with one measured in the same run.
`checkout(rev)` adds a detached `git worktree` of `rev` in a temporary directory and removes it
afterwards; `python_env(root)` is the environment that makes `python -m bridge` / `python -m api`
import that tree's packages (its directory first on PYTHONPATH, ahead of this tree's editable
install), with this tree's virtualenv and dependencies.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness.services import ROOT


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="rs-baseline-")) / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(where), rev],
        check=True,
    )
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], check=False
        )


def describe(root: Path) -> str:
    """`<short hash> <subject>` of the tree at `root` (`<hash>+changes` when it has
    uncommitted changes, which are what runs)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    short, _, subject = git("log", "-1", "--format=%h %s").partition(" ")
    return f"{short}{dirty} {subject}"[:72]


def python_env(root: Path) -> dict[str, str]:
    """Extra environment for a child Python that must run the tree at `root`."""
    if root.resolve() == ROOT.resolve():
        return {}
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def trees(stack: ExitStack, baseline: str | None) -> list[tuple[str, Path]]:
    """The trees a benchmark runs, labelled: this one, after a checkout of `baseline` (kept
    until `stack` closes) when one is named. Prints what each label runs."""
    out = [("this", ROOT)]
    if baseline:
        out.insert(0, ("baseline", stack.enter_context(checkout(baseline))))
    for label, root in out:
        print(f"{label}: {describe(root)}", flush=True)
    return out
