"""The gateway's Responses API: translation rules, and the real ``openai`` client against the real gateway.

Upstream is the fake OpenAI-compatible server (a ``CALL:<tool>`` directive in the last message makes it
answer with a tool call); records go to a list. The ``openai`` client's own stream state machine
(``client.responses.stream``) checks the event sequence: it raises on any event out of order.
"""

from __future__ import annotations

import asyncio
import threading

import openai
import pytest

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers.gateway import Gateway
from streamrl.consumers.responses_api import StoredResponse, translate_request
from streamrl.consumers.translation import TranslationError
from streamrl.sdk import LLM
from tests.support.fake_inference import FakeInferenceServer, fake_logprob, render_chat, tokenize

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _none(_: str) -> StoredResponse | None:
    return None


# ------------------------------------------------------------------------------------------ translation


def test_items_become_chat_messages_with_tool_calls_and_results() -> None:
    chat, call = translate_request(
        {
            "model": "policy",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Let me see."}],
                },
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "max_output_tokens": 32,
            "temperature": 0.5,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "reasoning": {"effort": "low"},
            "store": True,
            "metadata": {"k": "v"},
            "extra_vllm": None,
            "seed": 7,
        },
        _none,
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Let me see.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": TOOL["parameters"],
                "description": "Weather of a city.",
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (chat["max_tokens"], chat["temperature"], chat["seed"], chat["reasoning_effort"]) == (
        32,
        0.5,
        7,
        "low",
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}},
    }
    assert "stream" not in chat and call.store and not call.include_logprobs
    assert call.history == chat["messages"][1:]  # instructions are not carried over


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": "x", "context_management": [{"type": "compaction"}]}, "context_management"),
        ({"input": "x", "frobnicate": 1}, "frobnicate"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": "x", "previous_response_id": "resp_unknown"}, "previous_response_id"),
        ({"instructions": "only"}, "input"),
    ],
)
def test_fields_that_cannot_be_honoured_are_400_naming_the_field(body, param) -> None:
    with pytest.raises(TranslationError) as err:
        translate_request({"model": "m", **body}, _none)
    assert err.value.status == 400 and err.value.param == param


def test_previous_response_continues_its_conversation_without_its_instructions() -> None:
    stored = {
        "resp_1": StoredResponse(
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], {}
        )
    }
    chat, _ = translate_request(
        {"model": "m", "instructions": "new", "input": "c", "previous_response_id": "resp_1", "stream": True},
        stored.get,
    )
    assert [m["content"] for m in chat["messages"]] == ["new", "a", "b", "c"]
    assert chat["stream"] and chat["stream_options"] == {"include_usage": True}


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
    """A gateway on its own loop thread in front of the fake server; yields ``(gateway, sink, open)``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with FakeInferenceServer(policy_version=6) as upstream:
        sink = _ListSink()
        gw = Gateway(GatewaySettings(upstream_url=upstream.url, port=0), sink)
        asyncio.run_coroutine_threadsafe(gw.start(), loop).result()

        def open_attempt(rid: str, aid: str = "a") -> openai.OpenAI:
            token = asyncio.run_coroutine_threadsafe(_open(gw, rid, aid), loop).result()
            return openai.OpenAI(
                base_url=LLM.scoped_base_url(gw.url, rid, aid, None), api_key=token, max_retries=0
            )

        yield gw, sink, open_attempt
        asyncio.run_coroutine_threadsafe(gw.stop(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


async def _open(gw: Gateway, rid: str, aid: str) -> str:
    return gw.registry.open(rid, aid, "agent-x", 0).token


def _records_of(sink, rid, n: int | None = None, timeout_s: float = 10.0):
    """The records of rollout ``rid``; with ``n``, wait until there are ``n`` (recording follows the answer)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = [r for r in sink.records if r.rollout_id == rid]
        if n is None or len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def test_plain_response_and_its_record(gateway) -> None:
    _, sink, open_attempt = gateway
    client = open_attempt("plain")
    r = client.responses.create(model="policy", input="hi REPLY:hello", instructions="sys")
    assert r.status == "completed" and r.output_text == "hello" and r.object == "response"
    prompt = render_chat(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi REPLY:hello"}]
    )
    assert (r.usage.input_tokens, r.usage.output_tokens) == (len(prompt), 5)
    [rec] = _records_of(sink, "plain", 1)
    assert rec.prompt_token_ids == tokenize(prompt) and rec.response_token_ids == tokenize("hello")
    assert rec.response_logprobs == [fake_logprob(t) for t in tokenize("hello")]
    assert (rec.policy_version, rec.agent_name, rec.sequence) == (6, "agent-x", 0)
    assert client.responses.retrieve(r.id).output_text == "hello"  # GET /v1/responses/<id>


def test_tool_call_round_trip_plain_and_streamed(gateway) -> None:
    _, sink, open_attempt = gateway
    for stream in (False, True):
        client = open_attempt(f"tools-{stream}")
        kwargs = {"model": "policy", "tools": [TOOL], "input": "weather? CALL:get_weather"}
        if stream:
            with client.responses.stream(**kwargs) as st:
                kinds = [ev.type for ev in st]
                first = st.get_final_response()
            assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
        else:
            first = client.responses.create(**kwargs)
        [fc] = [o for o in first.output if o.type == "function_call"]
        assert (fc.name, fc.arguments, fc.status) == ("get_weather", "{}", "completed")
        follow = [
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": fc.call_id, "output": "sunny REPLY:done"},
        ]
        second = client.responses.create(
            model="policy", tools=[TOOL], input=["weather? CALL:get_weather", *follow][1:]
        )
        assert second.output_text == "done"
        _, second_rec = _records_of(sink, f"tools-{stream}", 2)
        assert second_rec.sequence == 1
        assert "sunny REPLY:done" in "".join(
            map(chr, second_rec.prompt_token_ids)
        )  # the tool result reached the prompt


def test_streamed_text_deltas_equal_the_final_text_and_the_record(gateway) -> None:
    _, sink, open_attempt = gateway
    client = open_attempt("stream")
    with client.responses.stream(
        model="policy", input="REPLY:streamed", include=["message.output_text.logprobs"]
    ) as st:
        deltas = [ev.delta for ev in st if ev.type == "response.output_text.delta"]
        final = st.get_final_response()
    assert "".join(deltas) == final.output_text == "streamed"
    part = final.output[0].content[0]
    assert [lp.logprob for lp in part.logprobs] == [fake_logprob(t) for t in tokenize("streamed")]
    [rec] = _records_of(sink, "stream", 1)
    assert rec.response_token_ids == tokenize("streamed") and rec.ttft_ms is not None


def test_previous_response_id_continues_and_store_false_is_not_kept(gateway) -> None:
    _, sink, open_attempt = gateway
    client = open_attempt("prev")
    r1 = client.responses.create(model="policy", input="one REPLY:two")
    r2 = client.responses.create(model="policy", input="three", previous_response_id=r1.id)
    assert r2.previous_response_id == r1.id
    _, rec2 = _records_of(sink, "prev", 2)
    assert "".join(map(chr, rec2.prompt_token_ids)) == render_chat(
        [
            {"role": "user", "content": "one REPLY:two"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ]
    )
    r3 = client.responses.create(model="policy", input="x", store=False)
    with pytest.raises(openai.BadRequestError, match=r"previous_response_id|not held"):
        client.responses.create(model="policy", input="y", previous_response_id=r3.id)
    other = open_attempt("prev-other")  # responses live with their attempt only
    with pytest.raises(openai.BadRequestError):
        other.responses.create(model="policy", input="y", previous_response_id=r1.id)


def test_length_stop_is_incomplete_and_errors_keep_their_status(gateway) -> None:
    _, sink, open_attempt = gateway
    client = open_attempt("limits")
    r = client.responses.create(model="policy", input="REPLY:abcdefgh", max_output_tokens=3)
    assert (
        r.status == "incomplete"
        and r.incomplete_details.reason == "max_output_tokens"
        and r.output_text == "abc"
    )
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.responses.create(model="policy", input="ERROR:400")
    with pytest.raises(openai.BadRequestError, match="web_search"):
        client.responses.create(model="policy", input="x", tools=[{"type": "web_search"}])
    assert len(_records_of(sink, "limits", 1)) == 1  # only the generation that happened is recorded
