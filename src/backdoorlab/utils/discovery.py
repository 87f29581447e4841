"""Import every module of a package, so modules that register methods need no import line anywhere else."""

from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, package_path: list[str], prefix: str = "") -> None:
    """Import each module (and subpackage) of the package whose name starts with ``prefix``."""
    for info in pkgutil.iter_modules(package_path):
        if info.name.startswith(prefix) and not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
