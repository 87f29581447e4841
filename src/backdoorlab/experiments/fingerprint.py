"""The fingerprint of the code that determines a trained model, so that a model or a result made by other code is
never taken for one made by this code.

A model is determined by the data loaders, the architectures and training loop, the triggers and the attacks: the
source files under ``backdoorlab/{data,models,triggers,attacks}/``. Their sha256 (files read in sorted order, each
with its path) goes into every model cache key; the package version goes in as well. The git commit is recorded when
the package runs from a git checkout, but it is not part of the key: a commit that touches only docs, defenses or
the report keeps every cached model.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

PACKAGE = Path(__file__).resolve().parents[1]
MODEL_PACKAGES = ("data", "models", "triggers", "attacks")


@dataclass(frozen=True)
class CodeFingerprint:
    """``version`` of the package, ``source``: sha256 (hex) of the model-determining sources, ``commit``: the git
    commit of the checkout the package runs from (None when it is not one)."""

    version: str
    source: str
    commit: str | None = None

    def describe(self) -> str:
        """``backdoorlab 0.1.0, model sources sha256 3f2a9c01d4e5, git commit 20258fb1c0de``."""
        text = f"backdoorlab {self.version}, model sources sha256 {self.source[:12]}"
        return text + (f", git commit {self.commit[:12]}" if self.commit else "")


def model_source_files() -> list[Path]:
    """The source files that determine a trained model, in sorted order."""
    return sorted(p for sub in MODEL_PACKAGES for p in (PACKAGE / sub).rglob("*.py") if "__pycache__" not in p.parts)


def source_hash(files: list[Path], root: Path = PACKAGE) -> str:
    """sha256 over each file's path (relative to ``root`` where it lies below it) and bytes, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def git_commit(directory: Path = PACKAGE) -> str | None:
    """The commit checked out where ``directory`` lies, or None (not a git checkout, or no git)."""
    if not any((parent / ".git").exists() for parent in (directory, *directory.parents)):
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


@functools.cache
def code_fingerprint() -> CodeFingerprint:
    """This process's fingerprint (computed once: the sources are read on the first call only)."""
    return CodeFingerprint(__version__, source_hash(model_source_files()), git_commit())
