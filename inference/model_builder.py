"""Build a small randomly initialised policy model, locally, as a normal Hugging Face directory.

No hub download: the tokenizer is trained here with ``tokenizers`` on local text (GSM8K train by
default), the architecture is a transformers ``LlamaConfig``/``Qwen2Config`` sized by a preset, and
everything is written with ``save_pretrained`` (safetensors) so the CPU server, the trainer
(transformers) and ``vllm serve`` all load it.

Tokenizers:

- ``char``: one token per character seen in the text (plus all printable ASCII and the characters of
  the chat template), and ``<unk>`` (id 3) for any other character; with ``byte_fallback`` the 256
  tokens ``<0x00>``..``<0xFF>`` are added instead so any text round-trips. Digits are single tokens
  and the vocabulary is small (~100), which is what the CPU GRPO demo needs.
- ``bpe``: byte-level BPE (GPT-2 style) trained to ``vocab_size`` tokens.

Both put ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (end of sequence) at ids 0, 1, 2.
Token ids always decode back to the text the server returns (it decodes them).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from streamrl.inference.chat_template import (
    BOS_TOKEN,
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    UNK_TOKEN,
)
from streamrl.inference.errors import ModelBuildError

TokenizerKind = Literal["char", "bpe"]
Arch = Literal["llama", "qwen2"]


@dataclass(frozen=True)
class ModelPreset:
    """Architecture sizes of a preset.

    Attributes:
        hidden_size: model width d.
        num_layers: transformer blocks.
        num_heads: attention heads (head_dim = hidden_size / num_heads; kept a multiple of 16 for vLLM).
        num_kv_heads: key/value heads (GQA when < num_heads).
        intermediate_size: SwiGLU inner width.
        max_position_embeddings: context length in tokens.
        bpe_vocab_size: vocabulary size when the tokenizer is ``bpe``.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int
    bpe_vocab_size: int


PRESETS: dict[str, ModelPreset] = {
    # ~0.31M parameters with the char tokenizer: learns a one-token task by GRPO on 2 CPU cores.
    "tiny": ModelPreset(96, 2, 3, 3, 384, 1024, 1024),
    # ~5M parameters with bpe (4096 tokens).
    "small": ModelPreset(256, 4, 4, 2, 1024, 2048, 4096),
}
"""Size presets by name."""

DEFAULT_TEXT = Path(__file__).resolve().parents[1] / "examples" / "gsm8k" / "data" / "train.jsonl"
"""Default tokenizer training text: GSM8K train as the repository ships it (``examples/gsm8k/data/``)."""


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_model` wrote.

    Attributes:
        path: the model directory.
        num_parameters: trainable parameters (tied embeddings counted once).
        vocab_size: tokenizer vocabulary size (= embedding rows).
        preset, tokenizer, arch: the choices made.
    """

    path: str
    num_parameters: int
    vocab_size: int
    preset: str
    tokenizer: str
    arch: str


def iter_text(paths: Iterable[str | Path], *, max_chars: int | None = None) -> Iterator[str]:
    """Yield training documents from text files.

    ``.jsonl`` files yield every string value of each JSON object (GSM8K: question and answer);
    other files yield their lines.

    Args:
        paths: files to read.
        max_chars: stop after about this many characters in total (None = everything).

    Raises:
        ModelBuildError: a file is missing or a ``.jsonl`` line is not a JSON object.
    """
    total = 0
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ModelBuildError(f"tokenizer training text {path} does not exist (pass --text FILE)")
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if path.suffix == ".jsonl":
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ModelBuildError(f"{path}:{lineno}: not JSON: {exc}") from exc
                    if not isinstance(obj, dict):
                        raise ModelBuildError(f"{path}:{lineno}: expected a JSON object")
                    docs = [v for v in obj.values() if isinstance(v, str)]
                else:
                    docs = [line]
                for doc in docs:
                    yield doc
                    total += len(doc)
                    if max_chars is not None and total >= max_chars:
                        return


def _template_chars() -> set[str]:
    """Characters that the chat template writes around messages (roles, tool instructions)."""
    literal = CHAT_TEMPLATE
    for tok in SPECIAL_TOKENS:
        literal = literal.replace(tok, "")
    return set(literal) | set("systemuserassistanttool")


def train_tokenizer(
    texts: Iterable[str], kind: TokenizerKind, vocab_size: int = 1024, *, byte_fallback: bool = False
):  # -> tokenizers.Tokenizer
    """Train a ``tokenizers.Tokenizer`` on ``texts``.

    Args:
        texts: training documents.
        kind: ``char`` (characters seen + printable ASCII) or ``bpe`` (byte-level BPE).
        vocab_size: target size for ``bpe`` (ignored by ``char``).
        byte_fallback: ``char`` only: add the 256 byte tokens so unseen characters round-trip
            (instead of becoming ``<unk>``).

    Returns:
        The tokenizer, with the special tokens at ids 0..2.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    if kind == "char":
        chars: set[str] = set(string.printable) | _template_chars()
        for doc in texts:
            chars.update(doc)
        vocab: dict[str, int] = {t: i for i, t in enumerate((*SPECIAL_TOKENS, UNK_TOKEN))}
        if byte_fallback:
            for b in range(256):
                vocab[f"<0x{b:02X}>"] = len(vocab)
        for ch in sorted(chars):
            if ch not in vocab:
                vocab[ch] = len(vocab)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN, byte_fallback=byte_fallback))
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        tok.add_special_tokens([*specials, AddedToken(UNK_TOKEN, special=True, normalized=False)])
        return tok
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return tok
    raise ModelBuildError(f"unknown tokenizer kind {kind!r}; use 'char' or 'bpe'")


def _make_portable(out: Path) -> None:
    """Rewrite transformers-5-only keys so transformers 4.x (e.g. a vLLM image) loads the directory too.

    ``tokenizer_class: TokenizersBackend`` -> ``PreTrainedTokenizerFast`` (a name both know), the
    ``extra_special_tokens`` list -> ``additional_special_tokens``, and ``torch_dtype``/``rope_theta``
    written beside ``dtype``/``rope_parameters``.
    """
    tok_path, cfg_path = out / "tokenizer_config.json", out / "config.json"
    tok_cfg = json.loads(tok_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(tok_cfg.get("extra_special_tokens"), list):
        tok_cfg["additional_special_tokens"] = tok_cfg.pop("extra_special_tokens")
    tok_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("torch_dtype", cfg.get("dtype", "float32"))
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope:
        cfg.setdefault("rope_theta", rope["rope_theta"])
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def build_model(
    out_dir: str | Path,
    *,
    preset: str = "tiny",
    tokenizer: TokenizerKind = "bpe",
    arch: Arch = "llama",
    text: Iterable[str | Path] | None = None,
    max_chars: int | None = None,
    vocab_size: int | None = None,
    byte_fallback: bool = False,
    seed: int = 0,
) -> BuildReport:
    """Build and save a randomly initialised causal LM with its tokenizer and chat template.

    Args:
        out_dir: directory to write (created; existing model files are overwritten).
        preset: a key of :data:`PRESETS`.
        tokenizer: ``char`` or ``bpe``.
        arch: ``llama`` (LlamaForCausalLM) or ``qwen2`` (Qwen2ForCausalLM, q/k/v biases).
        text: tokenizer training files; None = :data:`DEFAULT_TEXT`.
        max_chars: use at most about this many characters of text (faster builds in tests).
        vocab_size: override the preset's BPE vocabulary size.
        byte_fallback: ``char`` only: add byte tokens so unseen characters round-trip.
        seed: torch seed of the weight initialisation.

    Returns:
        A :class:`BuildReport`; the directory holds ``config.json``, ``generation_config.json``,
        ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` (with the chat template).

    Raises:
        ModelBuildError: unknown preset/arch/tokenizer, or missing training text.
    """
    if preset not in PRESETS:
        raise ModelBuildError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if arch not in ("llama", "qwen2"):
        raise ModelBuildError(f"unknown arch {arch!r}; use 'llama' or 'qwen2'")
    p = PRESETS[preset]
    files = list(text) if text is not None else [DEFAULT_TEXT]
    tok = train_tokenizer(
        iter_text(files, max_chars=max_chars),
        tokenizer,
        vocab_size or p.bpe_vocab_size,
        byte_fallback=byte_fallback,
    )

    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=IM_END,
        pad_token=BOS_TOKEN,
        unk_token=UNK_TOKEN if tokenizer == "char" else None,
        additional_special_tokens=[IM_START],
        model_max_length=p.max_position_embeddings,
        padding_side="left",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    common = dict(
        vocab_size=len(hf_tok),
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_kv_heads,
        max_position_embeddings=p.max_position_embeddings,
        bos_token_id=ids[BOS_TOKEN],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[BOS_TOKEN],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS_TOKEN], eos_token_id=[ids[IM_END], ids[BOS_TOKEN]], pad_token_id=ids[BOS_TOKEN]
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    _make_portable(out)
    report = BuildReport(
        path=str(out),
        num_parameters=sum(t.numel() for t in model.parameters()),
        vocab_size=len(hf_tok),
        preset=preset,
        tokenizer=tokenizer,
        arch=arch,
    )
    (out / "streamrl_build.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
