"""What a GPU results file records about the code that made it (opforge.verify.results)."""

from __future__ import annotations

import subprocess

from opforge.verify.results import bundle_commit


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_a_bundle_built_from_uncommitted_code_says_so(tmp_path, monkeypatch):
    """The commit a bundle names, with -dirty when a tracked file differs from it (untracked files do not count)."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "kernel.py").write_text("x = 1\n")
    _git(tmp_path, "add", "kernel.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = _git(tmp_path, "rev-parse", "--short", "HEAD")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert bundle_commit() == sha
    (tmp_path / "kernel.py").write_text("x = 2\n")
    assert bundle_commit() == f"{sha}-dirty"
