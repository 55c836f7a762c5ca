"""The CPU server over real HTTP, called with the official ``openai`` client."""

from __future__ import annotations

import concurrent.futures as cf
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch

from streamrl.inference.server import InferenceService, ServerOptions, ServerThread

MESSAGES = [
    {"role": "system", "content": "Answer with one digit."},
    {"role": "user", "content": "Which is larger, 3 or 8?"},
]


@pytest.fixture(scope="module")
def server(inference_model_dir: Path) -> Iterator[tuple[InferenceService, str]]:
    svc = InferenceService(
        str(inference_model_dir),
        ServerOptions(served_model_name="policy", initial_version=5, max_model_len=256, max_batch_wait_ms=20),
    )
    svc.start()
    thread = ServerThread(svc.app()).start()
    yield svc, thread.url
    thread.stop()
    svc.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0)


def _forward_logprobs(model, prompt_ids: list[int], token_ids: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1] / temperature, dim=-1)
    return lp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def test_chat_returns_token_ids_logprobs_and_version(client, tokenizer, model) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="policy",
        messages=MESSAGES,
        max_tokens=24,
        temperature=0.8,
        seed=1,
        extra_body={"return_token_ids": True},
    )
    assert raw.headers["x-policy-version"] == "5"
    resp = raw.parse()
    extra = resp.model_extra or {}
    assert extra["policy_version"] == 5
    expected_prompt = tokenizer.encode(
        tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )
    assert extra["prompt_token_ids"] == expected_prompt
    choice = resp.choices[0]
    token_ids = (choice.model_extra or {})["token_ids"]
    assert 1 <= len(token_ids) <= 24
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == choice.message.content
    content = choice.logprobs.content
    assert len(content) == len(token_ids)
    assert [e.token for e in content] == [tokenizer.decode([t]) for t in token_ids]
    expected = _forward_logprobs(model, expected_prompt, token_ids, 0.8)
    torch.testing.assert_close(torch.tensor([e.logprob for e in content]), expected, atol=2e-4, rtol=0)
    assert resp.usage.prompt_tokens == len(expected_prompt) and resp.usage.completion_tokens == len(token_ids)


def test_streaming_carries_ids_logprobs_and_version_in_every_chunk(client, tokenizer, model) -> None:
    stream = client.chat.completions.create(
        model="policy", messages=MESSAGES, max_tokens=16, temperature=1.0, stream=True, n=2,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = list(stream)
    assert all((c.model_extra or {}).get("policy_version") == 5 for c in chunks)
    prompt_ids = next(
        (c.model_extra or {}).get("prompt_token_ids")
        for c in chunks
        if (c.model_extra or {}).get("prompt_token_ids")
    )
    ids: dict[int, list[int]] = {0: [], 1: []}
    lps: dict[int, list[float]] = {0: [], 1: []}
    text = {0: "", 1: ""}
    finish = {}
    for c in chunks:
        for ch in c.choices:
            ids[ch.index] += (ch.model_extra or {}).get("token_ids") or []
            if ch.logprobs and ch.logprobs.content:
                lps[ch.index] += [e.logprob for e in ch.logprobs.content]
            text[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 32
    for i in (0, 1):
        assert len(ids[i]) == len(lps[i]) == 16 and finish[i] == "length"
        assert text[i] == tokenizer.decode(ids[i], skip_special_tokens=True)
        torch.testing.assert_close(
            torch.tensor(lps[i]), _forward_logprobs(model, prompt_ids, ids[i], 1.0), atol=2e-4, rtol=0
        )


def test_completions_endpoint_with_token_prompt(client, tokenizer) -> None:
    prompt = tokenizer.encode("3 or 8? ", add_special_tokens=False)
    resp = client.completions.create(model="policy", prompt=prompt, max_tokens=6, logprobs=2, temperature=0.5)
    choice = resp.choices[0]
    extra = choice.model_extra or {}
    assert extra["prompt_token_ids"] == prompt
    assert len(choice.logprobs.token_logprobs) == len(extra["token_ids"]) == len(choice.logprobs.tokens)
    assert all(len(t) == 2 for t in choice.logprobs.top_logprobs)
    assert (resp.model_extra or {})["policy_version"] == 5


def test_context_overflow_is_http_400_with_a_clear_message(client) -> None:
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256 tokens"):
        client.chat.completions.create(
            model="policy", messages=[{"role": "user", "content": "9" * 300}], max_tokens=5
        )
    with pytest.raises(
        openai.BadRequestError,
        match=r"you requested \d+ tokens \(\d+ in the messages, 250 in the completion\)",
    ):
        client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=250)
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=5, presence_penalty=1.0)


def test_models_health_and_metrics(server) -> None:
    _svc, url = server
    models = httpx.get(f"{url}/v1/models").json()
    assert models["data"][0]["id"] == "policy" and models["data"][0]["max_model_len"] == 256
    assert httpx.get(f"{url}/health").json()["policy_version"] == 5
    text = httpx.get(f"{url}/metrics").text
    assert "streamrl_inference_policy_version 5.0" in text
    assert "streamrl_inference_generated_tokens_total" in text


def test_concurrent_requests_are_batched(server, client) -> None:
    svc, _url = server
    before = svc.batcher.batches_run

    def call(k: int) -> int:
        r = client.chat.completions.create(
            model="policy",
            messages=[{"role": "user", "content": f"{k}"}],
            max_tokens=8,
            extra_body={"ignore_eos": True},
        )
        return len((r.choices[0].model_extra or {})["token_ids"])

    with cf.ThreadPoolExecutor(16) as pool:
        lengths = list(pool.map(call, range(16)))
    assert lengths == [8] * 16
    batches = svc.batcher.batches_run - before
    assert batches < 16, f"16 concurrent requests ran in {batches} batches: no batching"
    hist = {s.name: s.value for m in svc.metrics.batch_size.collect() for s in m.samples}
    assert hist["streamrl_inference_batch_size_sum"] > hist["streamrl_inference_batch_size_count"]


def test_raw_sse_format(server) -> None:
    _svc, url = server
    body = {
        "model": "policy",
        "messages": MESSAGES,
        "max_tokens": 3,
        "stream": True,
        "return_token_ids": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.headers["x-policy-version"] == "5" and r.headers["content-type"].startswith(
            "text/event-stream"
        )
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant" and first["prompt_token_ids"]


def test_tokenize_matches_the_chat_prompt_and_stop_reason_names_the_stop(server, client, tokenizer) -> None:
    """vLLM's ``/tokenize`` (the gateway's count_tokens uses it) and per-choice ``stop_reason``."""
    url = server[1]
    out = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=3, seed=1)
    r = httpx.post(url + "/tokenize", json={"model": "policy", "messages": MESSAGES}, timeout=10)
    assert r.status_code == 200
    assert r.json()["tokens"] == out.model_extra["prompt_token_ids"] and r.json()["max_model_len"] == 256
    r = httpx.post(url + "/tokenize", json={"prompt": "12 apples"}, timeout=10)
    assert r.json()["tokens"] == tokenizer.encode("12 apples", add_special_tokens=False)
    # a stop string that the sampled text contains: stop_reason names it (vLLM's field)
    probe = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=12, seed=3)
    text = probe.choices[0].message.content
    stop = text[2:4] if len(text) >= 4 else text[:1]
    got = client.chat.completions.create(
        model="policy", messages=MESSAGES, max_tokens=12, seed=3, stop=[stop, "@@"]
    )
    assert got.choices[0].finish_reason == "stop" and got.choices[0].model_extra["stop_reason"] == stop
    assert probe.choices[0].model_extra["stop_reason"] is None


def test_continue_final_message_extends_the_assistant_turn(server, client, tokenizer) -> None:
    msgs = [*MESSAGES, {"role": "assistant", "content": "The answer is"}]
    out = client.chat.completions.create(
        model="policy",
        messages=msgs,
        max_tokens=2,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    prompt = tokenizer.decode(out.model_extra["prompt_token_ids"])
    assert prompt.endswith("assistant\nThe answer is")  # no end-of-turn after the prefix
    with pytest.raises(openai.BadRequestError, match="add_generation_prompt"):
        client.chat.completions.create(
            model="policy", messages=msgs, max_tokens=2, extra_body={"continue_final_message": True}
        )
