"""Where a run comes from: the git commit of the working tree and the versions of the main packages."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any


def git_info(cwd: str | Path | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirty flag (tracked files only) of the working tree, or None outside git."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        branch, dirty = None, None
    return {"commit": commit, "branch": branch, "dirty": dirty}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("neurotrain", "torch", "pytorch-lightning", "wandb"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
