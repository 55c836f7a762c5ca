"""Translated APIs through the gateway to the real CPU inference server (tiny local model), real SDK clients.

What the agent reads is what the model generated: the text of a Responses/Messages answer equals the
decoding of the recorded token ids, streamed or not, the recorded logprobs are the model's own, and
Anthropic's ``count_tokens`` counts exactly the prompt the model then sees.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import anthropic
import openai
import pytest
import torch

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers.gateway import Gateway
from streamrl.sdk import LLM

torch.set_num_threads(1)


class _ListSink:
    def __init__(self) -> None:
        self.records: list = []

    def publish(self, topic, key, record, on_ack=None):
        self.records.append(record)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def of(self, rid: str, n: int, timeout_s: float = 10.0) -> list:
        deadline = time.monotonic() + timeout_s
        while True:
            got = [r for r in self.records if r.rollout_id == rid]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.01)


@pytest.fixture(scope="module")
def stack(inference_model_dir: Path):
    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread

    svc = InferenceService(
        str(inference_model_dir), ServerOptions(served_model_name="policy", max_model_len=512)
    )
    svc.start()
    server = ServerThread(svc.app()).start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sink = _ListSink()
    gw = Gateway(GatewaySettings(upstream_url=server.url + "/v1", port=0), sink)
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result()

    def base(rid: str) -> tuple[str, str]:
        """The base URL and the token (API key) of a newly opened attempt of ``rid``."""

        async def _open() -> str:
            return gw.registry.open(rid, "a", None, 0).token

        token = asyncio.run_coroutine_threadsafe(_open(), loop).result()
        return LLM.scoped_base_url(gw.url, rid, "a", None), token

    yield base, sink
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.stop()
    svc.stop()


def test_responses_text_is_the_decoding_of_the_recorded_tokens(stack, tokenizer, model) -> None:
    base, sink = stack
    url, token = base("resp")
    client = openai.OpenAI(base_url=url, api_key=token, max_retries=0)
    plain = client.responses.create(
        model="policy", input="What is 2+3?", max_output_tokens=10, extra_body={"seed": 1}
    )
    with client.responses.stream(
        model="policy", input="What is 2+3?", max_output_tokens=10, extra_body={"seed": 2}
    ) as st:
        streamed = "".join(ev.delta for ev in st if ev.type == "response.output_text.delta")
    r1, r2 = sink.of("resp", 2)
    assert plain.output_text == tokenizer.decode(r1.response_token_ids, skip_special_tokens=True)
    assert streamed == tokenizer.decode(r2.response_token_ids, skip_special_tokens=True)
    assert r1.prompt_token_ids == r2.prompt_token_ids and plain.usage.input_tokens == len(r1.prompt_token_ids)
    ids = torch.tensor([r1.prompt_token_ids + r1.response_token_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, len(r1.prompt_token_ids) - 1 : -1].float(), -1)
    expect = lp.gather(-1, torch.tensor(r1.response_token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(r1.response_logprobs), expect, atol=2e-3)


def test_messages_count_tokens_stop_sequences_and_streaming(stack, tokenizer) -> None:
    base, sink = stack
    url, token = base("msg")
    client = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key=token, max_retries=0)
    ask = {"system": "Answer briefly.", "messages": [{"role": "user", "content": "What is 2+3?"}]}
    counted = client.messages.count_tokens(model="policy", **ask).input_tokens
    probe = client.messages.create(model="policy", max_tokens=12, extra_body={"seed": 5}, **ask)
    [rec] = sink.of("msg", 1)
    assert counted == len(rec.prompt_token_ids) == probe.usage.input_tokens
    assert probe.content[0].text == tokenizer.decode(rec.response_token_ids, skip_special_tokens=True)
    text = probe.content[0].text
    stop = text[3:5] if len(text) >= 5 else text[:1]
    got = client.messages.create(
        model="policy", max_tokens=12, stop_sequences=[stop], extra_body={"seed": 5}, **ask
    )
    assert (got.stop_reason, got.stop_sequence) == ("stop_sequence", stop)
    with client.messages.stream(model="policy", max_tokens=12, extra_body={"seed": 5}, **ask) as st:
        streamed = "".join(st.text_stream)
    assert streamed == text  # same seed, same tokens: streaming changes nothing
