"""Check the layer contracts (``[tool.importlinter]`` in pyproject.toml) with import-linter.

Every package installs as ``streamrl.<name>`` mapped from a top-level folder (``package-dir`` in
pyproject.toml). import-linter's graph builder (grimp) finds a package's modules by walking the one
folder that holds its top-level package, so it cannot see ``streamrl.schemas`` living in
``schemas/``. This script stages the installed layout in a temporary directory (a copy of the
``.py`` files, as a wheel would lay them out) and runs ``lint-imports`` on it.

Usage: ``python tools/lint_imports.py`` (what ``make lint`` runs); exit status is lint-imports'.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """``{package name: folder}`` from ``[tool.setuptools.package-dir]`` of ``root/pyproject.toml``."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return {pkg: root / folder for pkg, folder in cfg["tool"]["setuptools"]["package-dir"].items()}


def stage_layout(dest: Path, root: Path = ROOT) -> Path:
    """Copy every mapped package's ``.py`` files to ``dest/<package path>``; returns ``dest``.

    Mapped folders are copied shallowest package first, so ``streamrl.schemas`` (from ``schemas/``)
    lands inside ``streamrl/`` as the wheel has it. ``__pycache__`` is skipped.
    """
    for pkg, folder in sorted(package_dirs(root).items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(
            folder,
            dest.joinpath(*pkg.split(".")),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "avsc"),
            dirs_exist_ok=True,
        )
    return dest


def lint(root: Path = ROOT, *, extra: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with ``root/pyproject.toml`` on a staged copy of ``root``.

    Args:
        root: the repository root.
        extra: ``{relative path in the staged tree: source}`` written after staging (tests use it
            to show that a contract breaks).
    """
    with tempfile.TemporaryDirectory(prefix="streamrl-lint-") as tmp:
        stage_layout(Path(tmp), root)
        for rel, source in (extra or {}).items():
            Path(tmp, rel).write_text(source, encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": tmp}
        lint_imports = Path(sys.executable).with_name("lint-imports")
        return subprocess.run(
            [str(lint_imports), str(root / "pyproject.toml"), "--no-cache"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )


if __name__ == "__main__":
    result = lint()
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
