"""The package layout and the layer contracts.

Every package installs as ``streamrl.<name>`` (``package-dir`` in pyproject.toml), so no import name
is generic; the layers (entry points > stages > core glue > records) are import-linter contracts run
on the installed layout by ``tools/lint_imports.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
lint_imports = importlib.import_module("lint_imports")

MAPPED = lint_imports.package_dirs(ROOT)
BARE_NAMES = {pkg.split(".")[-1] for pkg in MAPPED if pkg != "streamrl"}


def _packages_in_pyproject() -> set[str]:
    cfg = lint_imports.tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(cfg["tool"]["setuptools"]["packages"])


def _package_folders() -> dict[str, Path]:
    """Every folder with an ``__init__.py`` under a mapped folder, by its installed package name."""
    found: dict[str, Path] = {}
    for pkg, folder in MAPPED.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            name = ".".join([pkg, *rel.parts])
            if any(name.startswith(f"{p}.") and name != p and MAPPED[p] != folder for p in MAPPED):
                continue  # a folder mapped on its own (e.g. streamrl.schemas is not streamrl/schemas)
            found[name] = init.parent
    return found


def test_every_package_folder_is_installed():
    missing = sorted(set(_package_folders()) - _packages_in_pyproject())
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_product_code_imports_only_streamrl_names():
    bad = []
    for folder in {*MAPPED.values(), ROOT / "bench", ROOT / "examples", ROOT / "tests"}:
        for path in folder.rglob("*.py"):
            if ".venv" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                bad += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: {n}"
                    for n in names
                    if n.split(".")[0] in BARE_NAMES
                ]
    assert not bad, "import these as streamrl.<name>:\n" + "\n".join(bad)


def test_every_core_module_is_in_the_core_layer():
    cfg = lint_imports.tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = cfg["tool"]["importlinter"]["contracts"][0]["layers"]
    core_layer = {m.strip() for m in layers[3].split(":")}
    core = {
        f"streamrl.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "streamrl").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert core == core_layer, (
        "list every module of streamrl/ (core glue) in the core layer of the layers contract"
    )


@pytest.fixture(scope="module")
def lint_result():
    return lint_imports.lint(ROOT)


def test_layer_contracts_are_kept(lint_result):
    assert lint_result.returncode == 0, lint_result.stdout + lint_result.stderr
    assert "2 kept, 0 broken" in lint_result.stdout


@pytest.mark.parametrize(
    ("path", "source", "broken"),
    [
        # a stage importing another stage
        ("streamrl/trainer/_probe.py", "import streamrl.streams.rows\n", "no stage imports another"),
        # core glue importing a stage
        ("streamrl/kafka.py", "import streamrl.consumers.worker\n", "no stage imports another"),
        # a stage importing the CLI
        ("streamrl/producers/_probe.py", "import streamrl.cli\n", "no stage imports another"),
        # records importing torch
        ("streamrl/schemas/_probe.py", "import torch\n", "or Faust"),
    ],
)
def test_a_violation_breaks_a_contract(path, source, broken):
    result = lint_imports.lint(ROOT, extra={path: source})
    assert result.returncode != 0
    assert "1 broken" in result.stdout
    words = " ".join(result.stdout.split())  # lint-imports wraps long contract names
    assert f"{broken} BROKEN" in words, result.stdout


def test_tests_support_is_the_repositorys_own():
    """``tests/`` is a regular package: verl installs a top-level ``tests`` package that would
    otherwise shadow the repository's namespace package, and bench/ imports ``tests.support``."""
    import subprocess

    code = "import tests.support.kafka as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).resolve().is_relative_to(ROOT / "tests"), out.stdout
