"""The README's bad-input table is the catalogue the stage tests run (tests/support/bad_input.py), and
every stage's catalogue test covers each of its kinds."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.bad_input import CATALOGUE, readme_table

ROOT = Path(__file__).resolve().parents[2]
TESTS = {
    "publish": "tests/integration/producers/test_publish_bad_input.py",
    "config": "tests/unit/cli/test_cli_bad_input.py",
    "sampler": "tests/integration/producers/test_sampler_bad_input.py",
    "worker": "tests/integration/consumers/test_consumers_bad_input.py",
    "inference": "tests/integration/inference/test_inference_bad_input.py",
    "streams": "tests/integration/streams/test_streams_bad_input.py",
    "trainer": "tests/integration/trainer/test_trainer_bad_input.py",
}


def test_the_readme_lists_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_table() in readme, (
        "README's bad-input table differs: paste `python -m tests.support.bad_input`"
    )
    assert len(CATALOGUE) >= 40 and len({k.id for k in CATALOGUE}) == len(CATALOGUE)


def test_every_stage_has_one_parametrized_catalogue_test_naming_its_kinds() -> None:
    assert {k.stage for k in CATALOGUE} == set(TESTS)
    for stage, path in TESTS.items():
        source = (ROOT / path).read_text()
        tree = ast.parse(source)
        tests = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        assert tests == [f"test_{stage}_bad_input"], (path, tests)
        assert f'kinds("{stage}")' in source, path
        missing = [k.id for k in CATALOGUE if k.stage == stage and f'"{k.id}"' not in source]
        assert not missing, f"{path} has no check for {missing}"  # each kind spelled out in its module
