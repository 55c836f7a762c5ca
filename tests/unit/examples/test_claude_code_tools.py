"""The Claude-Code-style recipe's tools (examples/frameworks/claude_code.py) on a real workspace.

The recipe's loop runs against the policy in tests/integration/frameworks/test_frameworks.py; here its
tools: bash in the workspace, the editor's commands and the errors the model gets back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from examples.frameworks.claude_code import MAX_OUTPUT_CHARS, ToolError, edit, run_tool


def _run(workspace: Path, name: str, **args) -> str:
    return asyncio.run(run_tool(workspace, name, args))


def test_bash_runs_in_the_workspace_and_reports_a_failing_exit_code(tmp_path: Path) -> None:
    (tmp_path / "weather.txt").write_text("Sunny, 22 C in Paris")
    assert _run(tmp_path, "bash", command="cat weather.txt") == "Sunny, 22 C in Paris"
    assert _run(tmp_path, "bash", command="echo oops >&2; exit 3") == "oops\n\n[exit code 3]"
    long = _run(tmp_path, "bash", command=f"head -c {MAX_OUTPUT_CHARS * 2} /dev/zero | tr '\\0' a")
    assert len(long) < MAX_OUTPUT_CHARS + 100 and "characters cut" in long


def test_the_editor_creates_views_replaces_and_inserts(tmp_path: Path) -> None:
    assert edit(tmp_path, "create", "src/calc.py", file_text="def add(a, b):\n    return a - b\n")
    assert edit(tmp_path, "view", "src/calc.py") == "     1\tdef add(a, b):\n     2\t    return a - b"
    edit(tmp_path, "str_replace", "src/calc.py", old_str="a - b", new_str="a + b")
    edit(tmp_path, "insert", "src/calc.py", insert_line=0, new_str='"""Arithmetic."""')
    assert (tmp_path / "src/calc.py").read_text() == '"""Arithmetic."""\ndef add(a, b):\n    return a + b\n'
    assert edit(tmp_path, "view", ".") == "src\nsrc/calc.py"


@pytest.mark.parametrize(
    ("name", "args", "error"),
    [
        (
            "str_replace_based_edit_tool",
            {"command": "view", "path": "../etc/passwd"},
            "outside the workspace",
        ),
        ("str_replace_based_edit_tool", {"command": "view", "path": "nope.py"}, "no such file"),
        (
            "str_replace_based_edit_tool",
            {"command": "str_replace", "path": "a.py", "old_str": "x"},
            "occurs 2 times",
        ),
        (
            "str_replace_based_edit_tool",
            {"command": "insert", "path": "a.py", "insert_line": 9},
            "from 0 to 1",
        ),
        ("str_replace_based_edit_tool", {"command": "delete", "path": "a.py"}, "unknown command"),
        ("str_replace_based_edit_tool", {"path": "a.py"}, "bad arguments"),
        ("bash", {}, "bad arguments"),
        ("get_weather", {"city": "Paris"}, "unknown tool 'get_weather'"),
    ],
)
def test_a_tool_call_it_cannot_carry_out_is_an_error_for_the_model(tmp_path: Path, name, args, error) -> None:
    (tmp_path / "a.py").write_text("x = x\n")
    with pytest.raises(ToolError, match=error):
        _run(tmp_path, name, **args)
