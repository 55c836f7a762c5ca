"""The tiny model builder: sizes, tokenizers, chat template, loadability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from streamrl.inference.errors import ModelBuildError
from streamrl.inference.model_builder import DEFAULT_TEXT, build_model, iter_text, train_tokenizer


def test_tiny_char_model_has_about_300k_parameters_and_loads(inference_model_dir: Path) -> None:
    report = json.loads((inference_model_dir / "streamrl_build.json").read_text())
    assert 0.2e6 < report["num_parameters"] < 0.4e6
    assert report["vocab_size"] < 200
    model = AutoModelForCausalLM.from_pretrained(inference_model_dir)
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == report["vocab_size"]
    assert (inference_model_dir / "model.safetensors").is_file()
    # Loadable by transformers 4.x too (vLLM images): no v5-only class name or list-valued keys.
    tok_cfg = json.loads((inference_model_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_cfg["additional_special_tokens"] == ["<|im_start|>"] and "extra_special_tokens" not in tok_cfg
    cfg = json.loads((inference_model_dir / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32" and cfg["rope_theta"] == 10000.0


def test_char_tokenizer_digits_are_single_tokens_and_round_trip(tokenizer) -> None:
    text = "Natalia sold 48/2 = 24 clips in May.\n#### 72"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    for d in "0123456789":
        assert len(tokenizer.encode(d, add_special_tokens=False)) == 1
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<unk>",
    ]


def test_chat_template_renders_all_roles_and_tools(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"x": "2+2"}'}}
            ],
        },
        {"role": "tool", "content": "4", "tool_call_id": "c1"},
    ]
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert '"name": "calc"' in text and "<tools>" in text
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "calc", "arguments": {"x": "2+2"}}\n</tool_call><|im_end|>\n'
        in text
    )
    assert "<|im_start|>tool\n4<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    plain = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=False)
    assert plain == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"


def test_bpe_tokenizer_is_lossless_on_any_text() -> None:
    tok = train_tokenizer(iter_text([DEFAULT_TEXT], max_chars=30_000), "bpe", vocab_size=400)
    text = "Weng earns $12 an hour. ünïcödé 日本 ☃\n\tend"
    assert tok.decode(tok.encode(text).ids) == text
    assert tok.get_vocab_size() == 400


def test_qwen2_bpe_build_loads(tmp_path: Path) -> None:
    report = build_model(tmp_path / "q", arch="qwen2", tokenizer="bpe", max_chars=20_000, vocab_size=300)
    model = AutoModelForCausalLM.from_pretrained(report.path)
    tok = AutoTokenizer.from_pretrained(report.path)
    assert model.config.model_type == "qwen2"
    assert len(tok) == 300 and tok.eos_token == "<|im_end|>" and tok.pad_token_id == 0


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelBuildError, match="unknown preset 'huge'"):
        build_model(tmp_path / "x", preset="huge")
    with pytest.raises(ModelBuildError, match="does not exist"):
        build_model(tmp_path / "x", tokenizer="char", text=[tmp_path / "missing.txt"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "ok"}\nnot json\n')
    with pytest.raises(ModelBuildError, match=r"bad.jsonl:2: not JSON"):
        list(iter_text([bad]))


def test_cpu_server_refuses_a_model_path_that_is_not_a_model_dir(tmp_path: Path) -> None:
    """`streamrl inference --model /nonexistent` was a transformers traceback about hub repo ids."""
    from streamrl.config import Settings
    from streamrl.inference.errors import InferenceError
    from streamrl.inference.run import cpu_service

    s = Settings()
    s.inference.model = str(tmp_path / "missing")
    with pytest.raises(InferenceError, match=r"missing: no such directory.*streamrl model build"):
        cpu_service(s)
    s.inference.model = str(tmp_path)
    with pytest.raises(InferenceError, match=r"no config\.json"):
        cpu_service(s)
