"""Pure logic: token bytes, request validation, the vLLM command/proxy helpers, the gate."""

from __future__ import annotations

import json
import threading
import time

import pytest

from streamrl.config import load_settings
from streamrl.inference.errors import RequestError
from streamrl.inference.model_builder import DEFAULT_TEXT, iter_text, train_tokenizer
from streamrl.inference.protocol import ChatRequest, CompletionRequest, TokenTable
from streamrl.inference.vllm_backend import VersionGate, prepare_body, tag_sse_line, vllm_command


def test_token_table_gives_exact_bytes_for_char_and_byte_level_tokens(tokenizer) -> None:
    table = TokenTable(tokenizer)
    ids = tokenizer.encode("7 apples", add_special_tokens=False)
    assert b"".join(bytes(table.entry(i)[1]) for i in ids) == b"7 apples"
    assert table.entry(tokenizer.eos_token_id) == ("<|im_end|>", list(b"<|im_end|>"))

    from transformers import PreTrainedTokenizerFast

    bpe = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(iter_text([DEFAULT_TEXT], max_chars=20_000), "bpe", 300)
    )
    table = TokenTable(bpe)
    text = "Weng earns ünïcödé ☃"
    ids = bpe.encode(text, add_special_tokens=False)
    assert b"".join(bytes(table.entry(i)[1]) for i in ids) == text.encode()


def test_requests_reject_what_would_bias_logprobs_and_accept_return_token_ids() -> None:
    req = ChatRequest(messages=[{"role": "user", "content": "hi"}], return_token_ids=True, stop="\n", seed=3)
    params = req.sampling(10, 2)
    assert params.stop == ("\n",) and params.seed == 3 and params.top_logprobs == 2
    with pytest.raises(RequestError, match="presence_penalty"):
        ChatRequest(messages=[{"role": "user", "content": "hi"}], presence_penalty=0.5).sampling(10, 0)
    with pytest.raises(RequestError, match="logit_bias"):
        ChatRequest(messages=[{"role": "user", "content": "hi"}], logit_bias={"5": 1.0}).sampling(10, 0)
    with pytest.raises(ValueError, match=r"messages\[0\]\.role"):
        ChatRequest(messages=[{"role": "robot", "content": "hi"}])
    assert CompletionRequest(prompt=[1, 2, 3]).prompts() == [[1, 2, 3]]
    assert CompletionRequest(prompt=["a", "b"]).prompts() == ["a", "b"]
    with pytest.raises(RequestError, match="echo"):
        CompletionRequest(prompt="a", echo=True).prompts()


def test_vllm_command_has_the_flags_training_needs() -> None:
    s = load_settings(
        None,
        inference={
            "backend": "vllm",
            "model": "/m",
            "max_model_len": 2048,
            "vllm": {"enable_lora": True, "max_lora_rank": 16},
        },
    )
    argv, env = vllm_command(s)
    joined = " ".join(argv)
    assert argv[:3] == ["vllm", "serve", "/m"]
    assert "--logprobs-mode processed_logprobs" in joined and "--max-model-len 2048" in joined
    assert "--enable-lora --max-lora-rank 16" in joined and "--served-model-name policy" in joined
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    raw = load_settings(None, inference={"backend": "vllm", "model": "/m", "logprobs_mode": "raw"})
    assert "raw_logprobs" in vllm_command(raw)[0]
    assert "--load-format safetensors" in joined  # never a pickled .bin
    gguf = load_settings(
        None, inference={"backend": "vllm", "model": "/m", "vllm": {"extra_args": ["--load-format=gguf"]}}
    )
    assert "safetensors" not in vllm_command(gguf)[0]
    # a request without a temperature samples at 1.0 (what the gateway records), not at the model's
    # generation_config.json default; a user's own --generation-config wins
    assert "--generation-config vllm" in joined
    own = load_settings(
        None,
        inference={"backend": "vllm", "model": "/m", "vllm": {"extra_args": ["--generation-config", "auto"]}},
    )
    assert vllm_command(own)[0].count("--generation-config") == 1


def test_proxy_body_and_sse_tagging() -> None:
    body = prepare_body({"model": "x", "messages": [], "stream": True}, chat=True, model="policy-v3")
    assert body["model"] == "policy-v3" and body["return_token_ids"] is True and body["logprobs"] is True
    assert prepare_body({"prompt": "a"}, chat=False, model="p")["logprobs"] == 0
    tagged = tag_sse_line('data: {"id": "c", "choices": []}', 7)
    assert json.loads(tagged[len("data: ") :]) == {"id": "c", "choices": [], "policy_version": 7}
    assert tag_sse_line("data: [DONE]", 7) == "data: [DONE]"
    assert tag_sse_line("", 7) == ""


def test_version_gate_drains_in_flight_requests_before_switching() -> None:
    gate = VersionGate(0)
    assert gate.try_enter() == 0  # an in-flight request on v0
    switched = threading.Event()

    def reload() -> None:
        with gate.exclusive(timeout_s=5):
            gate.version = 1
        switched.set()

    t = threading.Thread(target=reload)
    t.start()
    deadline = time.monotonic() + 5
    while (entered := gate.try_enter()) is not None:  # until the reload has closed the gate
        gate.exit()
        assert time.monotonic() < deadline, f"the reload never closed the gate (v{entered})"
        time.sleep(0.001)
    assert not switched.is_set()  # it waits for the in-flight request
    assert gate.try_enter() is None  # new requests are held back meanwhile
    gate.exit()
    t.join(5)
    assert switched.is_set() and gate.enter(timeout_s=1) == 1
    gate.exit()
    gate.try_enter()
    with pytest.raises(TimeoutError, match="1 requests still in flight"):
        with gate.exclusive(timeout_s=0.1):
            pass
    assert gate.try_enter() == 1  # the gate reopened after the timeout
