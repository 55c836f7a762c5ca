"""The tools of the tool-call example, the requests that need them, and the reward of a call.

Three tools (OpenAI ``tools`` entries): ``get_weather(city, unit)``, ``convert_currency(amount,
from_currency, to_currency)`` and ``set_timer(minutes)``. A task is one user request and the one call
that answers it. :func:`score_call` is the verifiable reward, from the call's JSON alone.
"""

from __future__ import annotations

import json
from typing import Any

TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
    "convert_currency": {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount of money from one currency to another.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "from_currency": {"type": "string", "description": "ISO 4217 code, e.g. USD"},
                    "to_currency": {"type": "string", "description": "ISO 4217 code, e.g. EUR"},
                },
                "required": ["amount", "from_currency", "to_currency"],
            },
        },
    },
    "set_timer": {
        "type": "function",
        "function": {
            "name": "set_timer",
            "description": "Start a countdown timer.",
            "parameters": {
                "type": "object",
                "properties": {"minutes": {"type": "integer", "description": "Length in minutes"}},
                "required": ["minutes"],
            },
        },
    },
}
"""Every tool, by name."""

EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "get_weather": ("What is the weather in Oslo in fahrenheit?", {"city": "Oslo", "unit": "fahrenheit"}),
    "convert_currency": (
        "How much is 40 GBP in JPY?",
        {"amount": 40, "from_currency": "GBP", "to_currency": "JPY"},
    ),
    "set_timer": ("Start a 3 minute timer.", {"minutes": 3}),
}
"""One example exchange per tool (request, call arguments): the agent shows it before the real request.
No task uses these values."""

FORMAT_CREDIT = 0.2
"""Reward of a well-formed call (right JSON in ``<tool_call>`` tags) whatever its name and arguments."""


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float) and isinstance(got, int | float):
        return float(got) == float(want)
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().casefold() == want.casefold()
    return got == want


def score_call(calls: list[dict[str, Any]], name: str, arguments: dict[str, Any]) -> float:
    """Reward in [0, 1] of the tool calls a reply made, against the one expected call.

    0 without a call; otherwise ``FORMAT_CREDIT`` plus, if the first call has the right name and a
    JSON-object ``arguments``, ``(1 - FORMAT_CREDIT) * right / max(len(expected), len(given))`` where
    ``right`` counts the expected arguments given with the right value (strings compared without case,
    numbers by value), so an extra argument costs as much as a missing one. A perfect call scores 1.0.

    Args:
        calls: OpenAI ``tool_calls`` as dicts (``{"function": {"name", "arguments": <JSON string>}}``).
        name: the expected tool's name.
        arguments: the expected arguments.
    """
    if not calls:
        return 0.0
    fn = calls[0].get("function", {})
    if fn.get("name") != name:
        return FORMAT_CREDIT
    try:
        given = json.loads(fn.get("arguments") or "{}")
    except json.JSONDecodeError:
        return FORMAT_CREDIT
    if not isinstance(given, dict):
        return FORMAT_CREDIT
    right = sum(1 for k, v in arguments.items() if k in given and _same(given[k], v))
    share = right / max(len(arguments), len(given), 1)
    return 1.0 if share == 1.0 else FORMAT_CREDIT + (1 - FORMAT_CREDIT) * share  # exactly 1.0 when right
