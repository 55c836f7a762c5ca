"""A GSM8K math agent: the official ``openai`` SDK, a calculator tool by function calling, several turns.

The only StreamRL import is ``@rollout``; the agent talks to whatever ``llm.base_url`` it is given
(the worker's recording gateway during training, any OpenAI-compatible server otherwise). Reward: 1.0
when the last number of the final answer equals the number after ``####`` in the GSM8K solution,
else 0.0.

Run it through StreamRL::

    streamrl worker --agent examples.gsm8k.agent:solve        # or worker.agent in the config
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from typing import Any

from openai import OpenAI

from streamrl import rollout

MAX_TURNS = 4
"""Model calls per rollout at most (each tool round is one more call)."""

SYSTEM = (
    "Solve the math word problem step by step. Use the calculator tool for arithmetic. "
    "End with the final answer as a number on its own line, like: #### 42"
)

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "e.g. (48 / 2) + 48"}},
            "required": ["expression"],
        },
    },
}

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}

# One client (one HTTP connection pool) per process; each rollout uses a cheap copy with its own base_url.
_CLIENT = OpenAI(base_url="http://127.0.0.1:1/v1", api_key="unused", max_retries=0)


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression safely (numbers and + - * / // % ** only, no names or calls).

    Raises:
        ValueError: anything else, a too-long expression, or a too-large power.
    """
    if len(expression) > 200:
        raise ValueError("expression longer than 200 characters")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent larger than 64")
            return float(_OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.operand)))
        raise ValueError(f"unsupported syntax: {type(node).__name__}")

    try:
        tree = ast.parse(expression.replace(",", "").replace("^", "**"), mode="eval")
        return ev(tree)
    except (SyntaxError, ZeroDivisionError, OverflowError, TypeError) as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from exc


def reference_answer(solution: str) -> float:
    """The number after ``####`` in a GSM8K solution.

    Raises:
        ValueError: no ``#### N`` line.
    """
    _, sep, tail = solution.rpartition("####")
    numbers = _NUMBER.findall(tail) if sep else []
    if not numbers:
        raise ValueError("GSM8K answer has no '#### N' line")
    return float(numbers[0].replace(",", ""))


def final_number(text: str) -> float | None:
    """The number after the last ``####`` in ``text``, else its last number, else None."""
    _, sep, tail = text.rpartition("####")
    numbers = _NUMBER.findall(tail if sep else text)
    if not numbers:
        return None
    try:
        return float(numbers[-1 if not sep else 0].replace(",", ""))
    except ValueError:
        return None


def reward(text: str, solution: str) -> float:
    """1.0 if the final number of ``text`` equals the GSM8K reference (within 1e-6), else 0.0."""
    got = final_number(text)
    return 1.0 if got is not None and math.isclose(got, reference_answer(solution), abs_tol=1e-6) else 0.0


def _tool_result(call: Any) -> str:
    if call.function.name != "calculator":
        return f"error: unknown tool {call.function.name!r}"
    try:
        args = json.loads(call.function.arguments or "{}")
        value = calculate(str(args["expression"]))
    except (ValueError, KeyError, TypeError) as exc:  # the model's mistake: tell it, as a tool would
        return f"error: {exc}"
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


@rollout(name="gsm8k")
def solve(task: dict, llm: Any) -> float:
    """One GSM8K rollout: up to ``MAX_TURNS`` model calls with calculator rounds; returns the reward."""
    client = _CLIENT.with_options(base_url=llm.base_url, api_key=llm.api_key)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": task["question"]},
    ]
    text = ""
    for _ in range(MAX_TURNS):
        out = client.chat.completions.create(
            model=llm.model, messages=messages, tools=[CALCULATOR], **dict(llm.sampling)
        )
        msg = out.choices[0].message
        text = msg.content or ""
        if not msg.tool_calls:
            break
        messages.append(
            {
                "role": "assistant",
                "content": msg.content,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in msg.tool_calls
                ],
            }
        )
        for call in msg.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": _tool_result(call)})
    return reward(text, task["answer"])
