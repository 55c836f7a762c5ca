"""Tool calling: the Hermes parser (whole and streamed), the system-prompt fallback, the template probe."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrl.inference.errors import RequestError
from streamrl.inference.protocol import ChatRequest
from streamrl.inference.tools import (
    ToolCallStream,
    example_call,
    fallback_messages,
    parse_tool_calls,
    template_renders_tools,
    tools_system_prompt,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}
# SmolLM2-135M-Instruct's own chat template (it ignores `tools` and prints content with `+`).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_parse_tool_calls() -> None:
    text = 'Let me compute.\n<tool_call>\n{"name": "calc", "arguments": {"x": 2}}\n</tool_call>'
    content, calls = parse_tool_calls(text)
    assert content == "Let me compute.\n"
    assert (
        calls[0]["function"] == {"name": "calc", "arguments": '{"x": 2}'} and calls[0]["type"] == "function"
    )
    assert calls[0]["id"].startswith("call_")
    assert parse_tool_calls("<tool_call>{not json}</tool_call>") == ("<tool_call>{not json}</tool_call>", [])
    assert parse_tool_calls('<tool_call>["no name"]</tool_call>')[1] == []
    assert parse_tool_calls("plain") == ("plain", [])
    # whitespace-only content is None; text after the calls is dropped; a bad block before a call stays content
    content, calls = parse_tool_calls(
        '\n<tool_call>{"name": "a"}</tool_call> bye <tool_call>{"name": "b"}</tool_call>'
    )
    assert content is None and [c["function"]["name"] for c in calls] == ["a", "b"]
    assert calls[0]["function"]["arguments"] == "{}"
    content, calls = parse_tool_calls('<tool_call>{x}</tool_call><tool_call>{"name": "a"}</tool_call>')
    assert content == "<tool_call>{x}</tool_call>" and len(calls) == 1


def _stream(text: str, cuts: list[int]) -> tuple[str, list[dict], list[str]]:
    parser, out, calls = ToolCallStream(), [], []
    for cut in sorted(set(cuts)):
        piece, new = parser.feed(text[:cut])
        out.append(piece)
        calls += new
    piece, new = parser.feed(text)
    out.append(piece)
    calls += new
    piece, new = parser.finish()
    out.append(piece)
    calls += new
    return "".join(out), calls, out


PIECES = st.sampled_from(
    ["hi", " ", "\n", "<tool", "_call>", "<tool_call>", "</tool_call>", '{"name": "f", "arguments": {"a": 1}}',
     "{bad", "</tool", "x<", "<tool_call>\n", "\n</tool_call>"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(PIECES, max_size=12), data=st.data())
def test_streamed_parse_says_what_the_whole_parse_says(parts: list[str], data: st.DataObject) -> None:
    text = "".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    content, calls = parse_tool_calls(text)
    streamed, streamed_calls, _ = _stream(text, cuts)
    assert [c["function"] for c in streamed_calls] == [c["function"] for c in calls]
    assert [c["index"] for c in streamed_calls] == list(range(len(calls)))
    assert streamed == (content or "")


def test_stream_holds_a_partial_tag_and_sends_the_call_when_its_block_closes() -> None:
    parser = ToolCallStream()
    assert parser.feed("Sure <tool") == ("Sure ", [])
    assert parser.feed('Sure <tool_call>{"name": "f"') == ("", [])
    text, calls = parser.feed('Sure <tool_call>{"name": "f"}</tool_call>')
    assert text == "" and calls[0]["function"]["name"] == "f" and calls[0]["index"] == 0
    assert parser.finish() == ("", [])


def test_example_call_takes_values_from_the_schema() -> None:
    assert example_call(WEATHER) == {
        "name": "get_weather",
        "arguments": {"city": "text", "unit": "celsius", "days": 1},
    }


def test_tools_system_prompt_has_the_tools_the_format_and_one_example() -> None:
    prompt = tools_system_prompt([WEATHER], "Be brief.")
    assert prompt.startswith("Be brief.\n\n# Tools\n")
    assert json.dumps(WEATHER) in prompt
    assert prompt.endswith(
        'For example:\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "text", "unit": "celsius", "days": 1}}\n</tool_call>'
    )


def test_fallback_messages_render_a_whole_agent_conversation_as_text() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
    ]  # fmt: skip
    out = fallback_messages(messages, [WEATHER])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"] == tools_system_prompt([WEATHER], "Be brief.")
    assert out[1]["content"] == "Weather in Oslo?"
    assert (
        out[2]["content"]
        == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert out[3]["content"] == "<tool_response>\n4 C\n</tool_response>"
    assert messages[1]["content"][0]["text"] == "Weather in Oslo?"  # input untouched
    # no tools: no system prompt is added, content still becomes text
    assert fallback_messages([{"role": "user", "content": None}], None) == [{"role": "user", "content": ""}]


def test_template_probe_tells_which_templates_render_tools(tokenizer) -> None:
    assert template_renders_tools(tokenizer)  # the built models' ChatML template (Qwen2.5 layout)
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = SMOLLM2_TEMPLATE
        assert not template_renders_tools(tokenizer)
        text = tokenizer.apply_chat_template(
            fallback_messages([{"role": "user", "content": "Weather in Oslo?"}], [WEATHER]),
            tokenize=False,
            add_generation_prompt=True,
        )
        assert text.startswith("<|im_start|>system\n# Tools\n") and "<tools>\n" in text
        assert text.endswith("<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n")
    finally:
        tokenizer.chat_template = original


def test_tool_choice() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}
    assert ChatRequest(**base).active_tools() == [WEATHER]
    assert ChatRequest(**base, tool_choice="auto").active_tools() == [WEATHER]
    assert ChatRequest(**base, tool_choice="none").active_tools() is None
    assert ChatRequest(messages=base["messages"]).active_tools() is None
    with pytest.raises(RequestError, match="tool_choice"):
        ChatRequest(**base, tool_choice="required").active_tools()
