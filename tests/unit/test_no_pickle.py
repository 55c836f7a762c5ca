"""No pickle on load anywhere in the product (issue 16, docs/SECURITY.md "Checkpoints").

Unpickling a file runs whatever code it names, so a tampered checkpoint directory would run code in
the trainer or the inference server. The product (every installed package, ``bench/`` and
``examples/``) is parsed, not grepped, so docstrings that explain the rule do not count and no
spelling of a call escapes: a call with ``weights_only=False``, ``torch.load`` without
``weights_only=True``, ``numpy.load(allow_pickle=True)``, an import of a pickle-family module, an
unsafe YAML load, or a ``"pickle"`` serializer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PICKLE_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
)
UNSAFE_YAML = frozenset({"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"})


def _kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def violations(source: str, where: str) -> list[str]:
    """The pickle-on-load uses in one module's ``source``, as ``where:line: what``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] in PICKLE_MODULES:
                    out.append(f"{line}: imports {name}")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if _kw(node, "weights_only") is False:
                out.append(f"{line}: {func}(weights_only=False)")
            elif func.endswith("torch.load") and _kw(node, "weights_only") is not True:
                out.append(f"{line}: {func} without weights_only=True")
            if (
                func.split(".")[-1] == "load"
                and func.split(".")[0] in ("np", "numpy")
                and _kw(node, "allow_pickle")
            ):
                out.append(f"{line}: {func}(allow_pickle=True)")
            if func.startswith("yaml.") and func.split(".")[-1] in UNSAFE_YAML:
                loader = next((kw.value for kw in node.keywords if kw.arg == "Loader"), None)
                if loader is None or "Safe" not in _dotted(loader):
                    out.append(f"{line}: {func} without a SafeLoader")
        elif isinstance(node, ast.Constant) and node.value == "pickle":
            out.append(f"{line}: a 'pickle' serializer")
    return out


def _product_files() -> list[Path]:
    dirs = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    dirs |= {"bench", "examples"}
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def test_the_scanner_finds_each_kind_of_pickle_load() -> None:
    bad = """
import pickle
from dill import loads
import torch, numpy as np, yaml
torch.load(path, map_location="cpu", weights_only=False)
torch.load(path)
np.load(path, allow_pickle=True)
yaml.load(text)
faust.Record(serializer="pickle")
"""
    found = violations(bad, "x.py")
    assert len(found) == 7, found
    good = 'import torch, yaml\ntorch.load(p, weights_only=True)\nyaml.load(t, Loader=yaml.SafeLoader)\n"""no pickle here"""'
    assert violations(good, "y.py") == []


def test_no_pickle_load_in_the_product() -> None:
    files = _product_files()
    assert len(files) > 100 and any(p.name == "torch_backend.py" for p in files)
    found = [v for p in files for v in violations(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []
