"""Fixtures of the deployment tests (compose/, the Helm chart): the CLI resolver and the k8s tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from streamrl.cli import app

ROOT = Path(__file__).resolve().parents[3]


def resolve_cli(argv: list[str]) -> Any:
    """Resolve ``streamrl a b ...`` to its (typer-vendored click) command and parse the rest of the
    arguments with it, failing on an unknown command, option or bad value. Returns the command."""
    assert argv[0] == "streamrl", argv
    cmd: Any = typer.main.get_command(app)
    args = argv[1:]
    while hasattr(cmd, "list_commands"):  # a group: descend into the named sub-command
        name, args = args[0], args[1:]
        sub = cmd.get_command(cmd.make_context("streamrl", [name, "--help"], resilient_parsing=True), name)
        assert sub is not None, f"`{' '.join(argv)}`: no command {name!r}"
        cmd = sub
    cmd.make_context(" ".join(argv[:2]), list(args))  # raises UsageError on unknown options/values
    return cmd


@pytest.fixture
def cli_command() -> Callable[[list[str]], Any]:
    """:func:`resolve_cli`."""
    return resolve_cli


@pytest.fixture(scope="session")
def deploy_tools() -> dict[str, Any]:
    """helm, kubeconform, docker-compose and the JSON schemas (``tools/deploy_tools.py``: built once, cached in ~/.cache).

    Needs go, java and mvn; without them the tests skip locally and fail under CI (``CI=true``).
    """
    missing = [t for t in ("go", "java", "mvn") if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the chart checks need {missing} on PATH")
        pytest.skip(f"{missing} not installed: cannot build helm/kubeconform and the schemas")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "deploy_tools.py")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)
