"""The vLLM backend on a real GPU: same API as the CPU server, full and LoRA reload.

Skipped (with the reason) where there is no CUDA device or vLLM is not installed; never faked.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None or shutil.which("vllm") is None,
        reason="vLLM is not installed (pip install -e '.[gpu]')",
    ),
]

MESSAGES = [{"role": "user", "content": "Which is larger, 3 or 8?"}]


def _forward_logprobs(model, prompt_ids: list[int], token_ids: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    return lp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def _check(client, hf_model, version: int) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="policy", messages=MESSAGES, max_tokens=12, temperature=1.0, seed=0
    )
    resp = raw.parse()
    extra = resp.model_extra or {}
    assert raw.headers["x-policy-version"] == str(version) and extra["policy_version"] == version
    ids = (resp.choices[0].model_extra or {})["token_ids"]
    lps = torch.tensor([e.logprob for e in resp.choices[0].logprobs.content])
    assert len(ids) == len(lps) >= 1
    torch.testing.assert_close(
        lps, _forward_logprobs(hf_model, extra["prompt_token_ids"], ids), atol=2e-3, rtol=0
    )


def test_vllm_backend_serves_and_reloads(tmp_path: Path) -> None:
    import openai
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from streamrl.config import load_settings
    from streamrl.inference.model_builder import build_model
    from streamrl.inference.server import ServerThread
    from streamrl.inference.vllm_backend import VllmService
    from streamrl.schemas import CheckpointEvent, CheckpointKind, digest_dir
    from tests.support.kafka import free_port

    base = tmp_path / "base"
    build_model(base, tokenizer="char", max_chars=50_000)
    settings = load_settings(
        None,
        inference={
            "backend": "vllm", "model": str(base), "max_model_len": 512, "dtype": "float32",
            "vllm": {"port": free_port(), "gpu_memory_utilization": 0.2, "enforce_eager": True,
                     "enable_lora": True, "max_lora_rank": 8, "startup_timeout_s": 400},
        },
    )  # fmt: skip
    svc = VllmService(settings)
    svc.start()
    thread = ServerThread(svc.app()).start()
    try:
        client = openai.OpenAI(base_url=thread.url + "/v1", api_key="unused", max_retries=0)
        _check(client, AutoModelForCausalLM.from_pretrained(base), 0)

        chunks = list(
            client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=5, stream=True)
        )
        assert all((c.model_extra or {}).get("policy_version") == 0 for c in chunks)
        assert (
            sum(len((ch.model_extra or {}).get("token_ids") or []) for c in chunks for ch in c.choices) >= 1
        )

        # Full weights: a perturbed copy as version 1.
        v1_model = AutoModelForCausalLM.from_pretrained(base)
        with torch.no_grad():
            for p in v1_model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        v1 = shutil.copytree(base, tmp_path / "v1")
        v1_model.save_pretrained(v1)
        ev1 = CheckpointEvent(
            policy_name="policy", version=1, kind=CheckpointKind.full, uri=str(v1), digest=digest_dir(v1)
        )
        svc.apply(ev1, v1)
        _check(client, v1_model, 1)

        # LoRA adapter on top of the loaded weights as version 2.
        peft_model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(v1), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
        )
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        adapter = tmp_path / "lora-v2"
        peft_model.save_pretrained(adapter)
        ev2 = CheckpointEvent(
            policy_name="policy", version=2, kind=CheckpointKind.lora, uri=str(adapter), digest=digest_dir(adapter),
            base_model=str(base),
        )  # fmt: skip
        svc.apply(ev2, adapter)
        _check(client, peft_model.merge_and_unload(), 2)
    finally:
        thread.stop()
        svc.stop()
