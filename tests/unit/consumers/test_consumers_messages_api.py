"""The gateway's Anthropic Messages API: translation rules, and the real ``anthropic`` client against it.

Upstream is the fake OpenAI-compatible server (``CALL:<tool>`` in the last message: a tool call);
records go to a list. ``client.messages.stream`` accumulates the events with the SDK's own parser,
which raises on an event out of order.
"""

from __future__ import annotations

import asyncio
import json
import threading

import anthropic
import pytest

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers.gateway import Gateway
from streamrl.consumers.messages_api import MessagesCall, translate_request
from streamrl.consumers.translation import ChatOutput, ToolCall, TranslationError
from streamrl.sdk import LLM
from tests.support.fake_inference import FakeInferenceServer, fake_logprob, render_chat, tokenize

TOOL = {
    "name": "get_weather",
    "description": "Weather of a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_blocks_become_chat_messages_with_tool_calls_and_results() -> None:
    chat, call = translate_request(
        {
            "model": "policy",
            "max_tokens": 64,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "temperature": 0.7,
            "top_k": 5,
            "metadata": {"user_id": "u"},
            "thinking": {"type": "disabled"},
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
    ]
    assert chat["tools"][0]["function"]["parameters"] == TOOL["input_schema"]
    assert (chat["tool_choice"], chat["parallel_tool_calls"]) == ("required", False)
    assert (chat["max_tokens"], chat["stop"], chat["temperature"], chat["top_k"]) == (64, ["END"], 0.7, 5)
    assert call.stop_sequences == ["END"]


def test_prefill_continues_the_assistant_turn() -> None:
    chat, _ = translate_request(
        {
            "model": "m",
            "max_tokens": 8,
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "The answer is ("},
            ],
        }
    )
    assert chat["continue_final_message"] is True and chat["add_generation_prompt"] is False


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
        ({"container": "c"}, "container"),
        ({"mcp_servers": [{"url": "u"}]}, "mcp_servers"),
        ({"frobnicate": 1}, "frobnicate"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"max_tokens": None}, "max_tokens"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ],
)
def test_fields_that_cannot_be_honoured_are_400_naming_the_field(body, param) -> None:
    full = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(TranslationError) as err:
        translate_request(full)
    assert err.value.status == 400 and err.value.param == param


def test_stop_reasons_and_unparseable_tool_arguments() -> None:
    call = MessagesCall("msg_1", "m", ["END"])
    assert call.stop(ChatOutput(finish_reason="stop", stop_reason="END")) == ("stop_sequence", "END")
    assert call.stop(ChatOutput(finish_reason="stop")) == ("end_turn", None)
    assert call.stop(ChatOutput(finish_reason="length")) == ("max_tokens", None)
    out = call.complete(ChatOutput(finish_reason="tool_calls", tool_calls=[ToolCall("c", "f", "{not json")]))
    assert out["stop_reason"] == "end_turn" and out["content"][0]["type"] == "text"
    assert "{not json" in out["content"][0]["text"]  # what the model wrote, not a made-up input


# ------------------------------------------------------------------------------------------ over HTTP


class _ListSink:
    def __init__(self) -> None:
        self.records: list = []

    def publish(self, topic, key, record, on_ack=None):
        self.records.append(record)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@pytest.fixture(scope="module")
def gateway():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with FakeInferenceServer(policy_version=4) as upstream:
        sink = _ListSink()
        gw = Gateway(GatewaySettings(upstream_url=upstream.url, port=0), sink)
        asyncio.run_coroutine_threadsafe(gw.start(), loop).result()

        def open_attempt(rid: str, bearer: bool = False) -> anthropic.Anthropic:
            """A client of a new attempt of ``rid`` sending its token as ``x-api-key`` (or, with
            ``bearer``, as ``Authorization: Bearer``, the client's ``auth_token``)."""
            token = asyncio.run_coroutine_threadsafe(_open(gw, rid), loop).result()
            base = LLM.scoped_base_url(gw.url, rid, "a", None).removesuffix("/v1")
            key = {"api_key": None, "auth_token": token} if bearer else {"api_key": token}
            return anthropic.Anthropic(base_url=base, max_retries=0, **key)

        yield gw, sink, open_attempt
        asyncio.run_coroutine_threadsafe(gw.stop(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


async def _open(gw: Gateway, rid: str) -> str:
    return gw.registry.open(rid, "a", "agent-y", 0).token


def _records_of(sink, rid, n: int, timeout_s: float = 10.0):
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = [r for r in sink.records if r.rollout_id == rid]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def test_plain_message_and_its_record(gateway) -> None:
    _, sink, open_attempt = gateway
    client = open_attempt("plain")
    m = client.messages.create(
        model="policy", max_tokens=32, system="sys", messages=[{"role": "user", "content": "hi REPLY:hello"}]
    )
    assert (m.type, m.role, m.stop_reason, m.content[0].text) == ("message", "assistant", "end_turn", "hello")
    prompt = render_chat(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi REPLY:hello"}]
    )
    assert (m.usage.input_tokens, m.usage.output_tokens) == (len(prompt), 5)
    [rec] = _records_of(sink, "plain", 1)
    assert rec.prompt_token_ids == tokenize(prompt) and rec.response_token_ids == tokenize("hello")
    assert rec.response_logprobs == [fake_logprob(t) for t in tokenize("hello")]
    assert (rec.policy_version, rec.agent_name) == (4, "agent-y")


def test_tool_use_round_trip_plain_and_streamed(gateway) -> None:
    _, sink, open_attempt = gateway
    for stream in (False, True):
        client = open_attempt(f"tools-{stream}")
        messages = [{"role": "user", "content": "weather? CALL:get_weather"}]
        if stream:
            with client.messages.stream(model="policy", max_tokens=32, tools=[TOOL], messages=messages) as st:
                kinds = [ev.type for ev in st]
                first = st.get_final_message()
            assert kinds[0] == "message_start" and "content_block_start" in kinds
        else:
            first = client.messages.create(model="policy", max_tokens=32, tools=[TOOL], messages=messages)
        assert first.stop_reason == "tool_use"
        [use] = [b for b in first.content if b.type == "tool_use"]
        assert (use.name, use.input) == ("get_weather", {})
        messages += [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny REPLY:done"}],
            },
        ]
        second = client.messages.create(model="policy", max_tokens=32, tools=[TOOL], messages=messages)
        assert second.content[0].text == "done"
        _, rec = _records_of(sink, f"tools-{stream}", 2)
        assert "sunny REPLY:done" in "".join(map(chr, rec.prompt_token_ids))


def test_streamed_text_and_credentials_by_bearer(gateway) -> None:
    _, sink, open_attempt = gateway
    client = open_attempt("stream", bearer=True)  # Authorization: Bearer
    with client.messages.stream(
        model="policy", max_tokens=32, messages=[{"role": "user", "content": "REPLY:streamed"}]
    ) as st:
        text = "".join(st.text_stream)
        final = st.get_final_message()
    assert text == final.content[0].text == "streamed" and final.usage.output_tokens == len("streamed")
    [rec] = _records_of(sink, "stream", 1)
    assert rec.response_token_ids == tokenize("streamed")


def test_length_errors_and_unknown_endpoints_in_anthropic_format(gateway) -> None:
    _, _, open_attempt = gateway
    client = open_attempt("limits")
    m = client.messages.create(
        model="policy", max_tokens=3, messages=[{"role": "user", "content": "REPLY:abcdef"}]
    )
    assert (m.stop_reason, m.content[0].text) == ("max_tokens", "abc")
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="policy", max_tokens=8, messages=[{"role": "user", "content": "ERROR:400"}]
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="thinking"):
        client.messages.create(
            model="policy",
            max_tokens=8,
            messages=[{"role": "user", "content": "x"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    with pytest.raises(anthropic.NotFoundError, match=r"POST /v1/responses"):
        client.post("/v1/messages/batches", body={}, cast_to=object)
    assert json.loads(json.dumps(err.value.body))["type"] == "error"
