"""A Claude-Code-style coding agent: the ``anthropic`` SDK's tool-use loop with a shell and a file editor.

Claude Code's loop, reduced to what training needs: a system prompt, the user's request, and two tools,
``bash`` (run a command in the workspace) and ``str_replace_based_edit_tool`` (``view``, ``create``,
``str_replace`` and ``insert``, the commands of Anthropic's text-editor tool); the model is called
again with every tool result until it answers without a tool call (at most :data:`MAX_TURNS` calls).
Each rollout works in a workspace of its own: a temporary directory holding the task's ``files``,
deleted at the end, so concurrent rollouts never see each other's edits.

Task fields: ``question`` (the request), ``files`` (``{relative path: text}``, optional), ``check``
(optional: a bash command run in the workspace at the end; exit code 0 is reward 1, e.g. the tests of
the code the agent was asked to fix) or else ``expect`` (a text the final answer must contain, case
ignored; default ``"sunny"``, the weather report of the framework tests), and ``stream``.

Changed for StreamRL, and why:
- ``AsyncAnthropic(base_url=llm.anthropic_base_url, api_key=llm.api_key)`` and ``model=llm.model``:
  the rollout's gateway translates each Messages call into one chat completion of the policy and
  records it with its token ids;
- the tools are client tools (a JSON schema each), not Anthropic's versioned ``bash_20250124`` /
  ``text_editor_*`` types: those schemas live in Anthropic's service and only its models know them; a
  served policy needs the schema in its prompt, which the gateway's chat template puts there.
Commands run with the worker's permissions (``bash -c`` in the workspace, ``BASH_TIMEOUT_S`` each,
output cut at ``MAX_OUTPUT_CHARS``): run such a worker where the policy's commands can do no harm
(a container), as one runs Claude Code.
Run: ``streamrl worker --agent examples.frameworks.claude_code:solve``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from anthropic import AsyncAnthropic

from streamrl import rollout
from streamrl.errors import StreamRLError

MAX_TURNS = 8
"""Model calls per rollout at most."""
BASH_TIMEOUT_S = 30.0
"""Wall-clock limit of one ``bash`` command, in seconds (it is killed after)."""
MAX_OUTPUT_CHARS = 10_000
"""A tool result longer than this is cut (the head and the tail are kept)."""

SYSTEM = (
    "You are a coding agent working in a workspace directory. Use the bash tool to run commands and "
    "the str_replace_based_edit_tool to view and edit files. When the task is done, answer briefly."
)

TOOLS: list[dict[str, Any]] = [
    {
        "name": "bash",
        "description": "Run a bash command in the workspace and return its output (stdout and stderr).",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command to run."}},
            "required": ["command"],
        },
    },
    {
        "name": "str_replace_based_edit_tool",
        "description": (
            "View, create and edit files in the workspace. view: a file with line numbers, or a directory; "
            "create: write file_text to path; str_replace: replace old_str, which must occur exactly once, "
            "with new_str; insert: insert new_str after line insert_line (0: at the top)."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert"]},
                "path": {"type": "string", "description": "Path relative to the workspace."},
                "file_text": {"type": "string"},
                "old_str": {"type": "string"},
                "new_str": {"type": "string"},
                "insert_line": {"type": "integer"},
            },
            "required": ["command", "path"],
        },
    },
]


class ToolError(StreamRLError):
    """A tool call the agent cannot carry out (its message goes back to the model as an error result)."""


def _cut(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    half = MAX_OUTPUT_CHARS // 2
    return f"{text[:half]}\n... [{len(text) - MAX_OUTPUT_CHARS} characters cut] ...\n{text[-half:]}"


async def bash(workspace: Path, command: str) -> str:
    """Run ``command`` with ``bash -c`` in ``workspace``; its output, and the exit code when not 0."""
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=workspace, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), BASH_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ToolError(f"the command ran longer than {BASH_TIMEOUT_S:g} s and was killed") from None
    text = out.decode(errors="replace")
    return _cut(text if proc.returncode == 0 else f"{text}\n[exit code {proc.returncode}]")


def _inside(workspace: Path, path: str) -> Path:
    target = (workspace / path).resolve()
    if not target.is_relative_to(workspace.resolve()):
        raise ToolError(f"{path}: outside the workspace")
    return target


def edit(workspace: Path, command: str, path: str, **args: Any) -> str:
    """One command of the file editor (see :data:`TOOLS`).

    Raises:
        ToolError: an unknown command, a path outside the workspace or missing, an ``old_str`` that
            does not occur exactly once, a line number out of range.
    """
    target = _inside(workspace, path)
    if command == "create":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(args.get("file_text", "")))
        return f"created {path}"
    if not target.exists():
        raise ToolError(f"{path}: no such file or directory")
    if command == "view":
        if target.is_dir():
            return "\n".join(sorted(str(p.relative_to(workspace)) for p in target.rglob("*")))
        lines = target.read_text(errors="replace").splitlines()
        return _cut("\n".join(f"{i:6}\t{line}" for i, line in enumerate(lines, 1)))
    text = target.read_text()
    if command == "str_replace":
        old, new = str(args.get("old_str", "")), str(args.get("new_str", ""))
        count = text.count(old) if old else 0
        if count != 1:
            raise ToolError(f"{path}: old_str occurs {count} times, it must occur exactly once")
        target.write_text(text.replace(old, new))
        return f"edited {path}"
    if command == "insert":
        lines = text.splitlines(keepends=True)
        at = args.get("insert_line")
        if not isinstance(at, int) or not 0 <= at <= len(lines):
            raise ToolError(f"{path}: insert_line must be a line number from 0 to {len(lines)}")
        new = str(args.get("new_str", ""))
        lines.insert(at, new if new.endswith("\n") else new + "\n")
        target.write_text("".join(lines))
        return f"inserted into {path} after line {at}"
    raise ToolError(f"unknown command {command!r} (view, create, str_replace, insert)")


async def run_tool(workspace: Path, name: str, args: dict[str, Any]) -> str:
    """Carry out one ``tool_use`` block.

    Raises:
        ToolError: an unknown tool, missing arguments, or the tool's own error.
    """
    try:
        if name == "bash":
            return await bash(workspace, str(args["command"]))
        if name == "str_replace_based_edit_tool":
            return edit(workspace, **args)
    except (KeyError, TypeError) as exc:
        raise ToolError(f"{name}: bad arguments {args!r} ({exc})") from None
    raise ToolError(f"unknown tool {name!r} (bash, str_replace_based_edit_tool)")


async def _call(client: AsyncAnthropic, model: str, messages: list, stream: bool) -> Any:
    args = {"model": model, "max_tokens": 1024, "system": SYSTEM, "tools": TOOLS, "messages": messages}
    if stream:
        async with client.messages.stream(**args) as s:
            return await s.get_final_message()
    return await client.messages.create(**args)


@rollout
async def solve(task: dict, llm) -> float:
    client = AsyncAnthropic(base_url=llm.anthropic_base_url, api_key=llm.api_key)
    with tempfile.TemporaryDirectory(prefix="claude-code-") as tmp:
        workspace = Path(tmp)
        for path, text in (task.get("files") or {}).items():
            target = _inside(workspace, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        messages: list[dict[str, Any]] = [{"role": "user", "content": task["question"]}]
        used_tools, answer = False, None
        for _ in range(MAX_TURNS):
            response = await _call(client, llm.model, messages, bool(task.get("stream")))
            messages.append({"role": "assistant", "content": response.content})
            if response.stop_reason != "tool_use":
                answer = "".join(block.text for block in response.content if block.type == "text")
                break
            results = []
            for block in response.content:
                if block.type != "tool_use":
                    continue
                used_tools = True
                try:
                    out = await run_tool(workspace, block.name, dict(block.input))
                    results.append({"type": "tool_result", "tool_use_id": block.id, "content": out})
                except ToolError as exc:
                    results.append(
                        {
                            "type": "tool_result",
                            "tool_use_id": block.id,
                            "content": str(exc),
                            "is_error": True,
                        }
                    )
            messages.append({"role": "user", "content": results})
        if answer is None:
            return 0.0  # out of turns
        if task.get("check"):  # e.g. the tests of the code the agent was asked to fix
            return 1.0 if await _exit_code(workspace, task["check"]) == 0 else 0.0
        return float(used_tools and str(task.get("expect", "sunny")).lower() in answer.lower())


async def _exit_code(workspace: Path, command: str) -> int | None:
    """Exit code of ``command`` run in ``workspace`` (None: killed after ``BASH_TIMEOUT_S``)."""
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=workspace,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(proc.wait(), BASH_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
