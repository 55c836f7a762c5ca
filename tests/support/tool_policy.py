"""A tiny tool-calling policy for the framework tests: a real model, taught one behaviour by fine-tuning.

The framework tests need a model that, served by the real CPU inference server, makes a real tool
round trip through every framework: it must emit a tool call in the format the server parses
(``<tool_call>{json}</tool_call>``, Hermes/Qwen style, as vLLM's ``hermes`` parser reads it) when asked,
and a final answer once the tool's result is in the conversation. A randomly initialised model never
does; SmolLM2-135M-Instruct does sometimes, slowly, and not for every framework's prompt. So this
module builds one: :func:`~streamrl.inference.model_builder.build_model` (a Qwen2 architecture, its
byte-level BPE tokenizer trained here on GSM8K and on the conversations below), then supervised
fine-tuning on rendered conversations with the tools in the system prompt:

- a conversation whose last message is from the user -> :data:`CALL` (the ``get_weather`` call), then
  end of turn; if that message names :data:`REPORT` (a coding agent's task) -> :data:`BASH_CALL`
  (``cat weather.txt`` with the ``bash`` tool);
- a conversation whose last message is a tool result -> :data:`ANSWER`, then end of turn.

The model uses sliding-window attention (:data:`WINDOW` tokens per layer, 2 layers): what it generates
depends only on the last ``2 * WINDOW`` tokens, so training on the end of each prompt is exact for
prompts of any length, and every framework's system prompt, tool schema and instructions (which differ)
fall outside what decides. The trained model's logits are then scaled by :data:`SHARPEN` (the same policy, sharper), so that
at temperature 1 (the default of every framework here) it follows its behaviour with probability ~1
per token. Training takes a few CPU-minutes once; the result is cached in
``~/.cache/streamrl/test-models/`` under a hash of the training code and constants, so it is rebuilt
only when they change. The tests assert the round trip, so a drift shows.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ANSWER", "BASH_CALL", "CALL", "REPORT", "TOOL_RESULT", "WINDOW", "tool_policy_dir"]

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
"""What the policy answers to a user turn (the CPU server turns it into a ``get_weather`` tool call)."""
ANSWER = "The weather in Paris is sunny."
"""What the policy answers once a tool result is the last message."""
TOOL_RESULT = "Sunny, 22 C in Paris"
"""What the recipes' ``get_weather("Paris")`` returns (the tests look for it in the second prompt)."""
REPORT = "weather.txt"
"""The file a coding agent's task names (its content is :data:`TOOL_RESULT`)."""
BASH_CALL = '<tool_call>\n{"name": "bash", "arguments": {"command": "cat weather.txt"}}\n</tool_call>'
"""What the policy answers to a user turn that names :data:`REPORT` (a coding agent's ``bash`` call)."""
WINDOW = 48
"""Sliding-window size of each attention layer, in tokens."""
CONTEXT = 4096
"""Context length of the served model (frameworks ask for up to 1,024 new tokens after ~700 of prompt)."""
SHARPEN = 4.0
"""The trained model's final norm is scaled by this: its logits are multiplied by it (the policy at
temperature 1/SHARPEN), so a target token the training left at p = 0.997 is sampled with p ~ 1."""
STEPS = 200
BATCH = 32
SEED = 0

_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamrl" / "test-models"

_BOILERPLATE = [
    "You are a helpful assistant.",
    "You are a helpful agent.",
    "You are a weather agent. Use the tool to answer.",
    "You are Weather reporter. You check the weather with your tool before you answer.\n"
    "Your personal goal is: Tell people the current weather",
    "\nCurrent Task: What is the weather in Paris?\n\nThis is the expected criteria for your final "
    "answer: One sentence about the weather.\nyou MUST return the actual complete content as the final "
    "answer, not a summary.\n\nBegin! This is VERY important to you, use the tools available and give "
    "your best Final Answer, your job depends on it!\n\nThought:",
    "Answer the question. Call get_weather when you need the weather.",
]
_QUESTIONS = [
    "What is the weather in Paris?",
    "What's the weather like in Paris today?",
    "Weather in Paris?",
    "Is it sunny in Paris?",
    "Tell me the weather in Paris, please.",
]
_FILE_QUESTIONS = [
    "Read weather.txt and tell me the weather in Paris.",
    "What does weather.txt say about the weather in Paris?",
    "Check weather.txt: is it sunny in Paris?",
    "The weather report is in weather.txt. What is the weather in Paris?",
    "Look at weather.txt in the workspace and summarise the weather.",
]
_BASH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a bash command in the workspace and return its output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
}


class _Data:
    """Random conversations in the shapes the frameworks send (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        from streamrl.inference.model_builder import DEFAULT_TEXT

        self.rng = random.Random(seed)
        words: list[str] = []
        with open(DEFAULT_TEXT, encoding="utf-8") as f:
            for line in f:
                words += json.loads(line)["question"].split()
                if len(words) > 100_000:
                    break
        self.words = words

    def text(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        i = self.rng.randrange(len(self.words) - n)
        return " ".join(self.words[i : i + n])

    def tool(self) -> dict[str, Any]:
        rng = self.rng
        city: dict[str, Any] = {"type": "string"}
        if rng.random() < 0.6:
            city["description"] = rng.choice(["The city name", "city", self.text(1, 8)])
        if rng.random() < 0.3:
            city["title"] = "City"
        params: dict[str, Any] = {"type": "object", "properties": {"city": city}, "required": ["city"]}
        if rng.random() < 0.4:
            params["additionalProperties"] = False
        fn: dict[str, Any] = {"name": "get_weather", "parameters": params}
        if rng.random() < 0.9:
            fn["description"] = rng.choice(
                ["Get the current weather in a given city.", "Get the weather for a city.", self.text(2, 20)]
            )
        if rng.random() < 0.3:
            fn["strict"] = True
        return {"type": "function", "function": fn}

    def conversation(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
        """``(messages, tools, target)``."""
        rng = self.rng
        msgs: list[dict[str, Any]] = []
        if rng.random() < 0.7:
            msgs.append(
                {"role": "system", "content": rng.choice([rng.choice(_BOILERPLATE), self.text(3, 60)])}
            )
        for _ in range(rng.choice((0, 0, 0, 1))):
            msgs += [
                {"role": "user", "content": self.text(3, 20)},
                {"role": "assistant", "content": self.text(3, 20)},
            ]
        coding = rng.random() < 0.2  # a coding agent's task: read the report with bash
        if coding:
            question = rng.choice(_FILE_QUESTIONS)
            tools = [_BASH_TOOL, self.tool()] if rng.random() < 0.5 else [_BASH_TOOL]
            call, name, args = BASH_CALL, "bash", {"command": f"cat {REPORT}"}
        else:
            question = rng.choice(
                [rng.choice(_QUESTIONS), self.text(3, 40), rng.choice(_BOILERPLATE[4:5]), self.text(20, 60)]
            )
            tools = [self.tool()] if rng.random() < 0.93 else None
            call, name, args = CALL, "get_weather", {"city": "Paris"}
        msgs.append({"role": "user", "content": question})
        if rng.random() < 0.5:
            return msgs, tools, call
        call_id = "call_" + "".join(rng.choice("abcdef0123456789") for _ in range(rng.choice((8, 24))))
        msgs.append(
            {
                "role": "assistant",
                "content": rng.choice([None, "", self.text(1, 8)]),
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                ],
            }
        )
        result = rng.choice(
            [TOOL_RESULT, TOOL_RESULT, "sunny", self.text(1, 12), "Error: " + self.text(2, 8)]
        )
        msgs.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return msgs, tools, ANSWER


def _corpus(path: Path, data: _Data) -> Path:
    """Tokenizer training text: the conversations' pieces, so tool-call syntax gets its own tokens."""
    lines = []
    for _ in range(400):
        msgs, tools, target = data.conversation()
        lines += [json.dumps(tools), json.dumps(msgs), target, CALL, BASH_CALL, ANSWER, TOOL_RESULT]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _examples(tok: Any, data: _Data, n: int, end_id: int) -> Iterator[tuple[list[int], list[int]]]:
    keep = 2 * WINDOW + 8  # everything the last position can see, and a margin
    for _ in range(n):
        msgs, tools, target = data.conversation()
        text = tok.apply_chat_template(msgs, tools=tools, add_generation_prompt=True, tokenize=False)
        prompt = tok.encode(text, add_special_tokens=False)[-keep:]
        yield prompt, [*tok.encode(target, add_special_tokens=False), end_id]


def _train(model_dir: Path) -> dict[str, float]:
    """Fine-tune the built model in place; returns the first and last training loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: a shared CPU oversubscribes with more
    try:
        torch.manual_seed(SEED)
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.train()
        end_id = tok.convert_tokens_to_ids("<|im_end|>")
        data = _Data(SEED + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / STEPS)
        )
        losses = []
        for _step in range(STEPS):
            batch = list(_examples(tok, data, BATCH, end_id))
            width = max(len(p) + len(t) for p, t in batch)
            ids = torch.full((BATCH, width), tok.pad_token_id, dtype=torch.long)  # (B, T) left-padded
            att = torch.zeros((BATCH, width), dtype=torch.long)
            labels = torch.full((BATCH, width), -100, dtype=torch.long)
            for i, (p, t) in enumerate(batch):
                seq = p + t
                ids[i, width - len(seq) :] = torch.tensor(seq)
                att[i, width - len(seq) :] = 1
                labels[i, width - len(t) :] = torch.tensor(t)
            pos = (att.cumsum(-1) - 1).clamp(min=0)
            loss = model(input_ids=ids, attention_mask=att, position_ids=pos, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss))
        model.eval()
        with torch.no_grad():
            model.model.norm.weight.mul_(SHARPEN)  # only the LM head reads the final norm
        model.save_pretrained(model_dir, safe_serialization=True)
        return {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / 10}
    finally:
        torch.set_num_threads(threads)


def _build(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from streamrl.inference.model_builder import DEFAULT_TEXT, build_model

    data = _Data(SEED)
    corpus = _corpus(out / "corpus.txt", data)
    build_model(
        out,
        preset="tiny",
        tokenizer="bpe",
        arch="qwen2",
        text=[corpus, DEFAULT_TEXT],
        max_chars=600_000,
        seed=SEED,
    )
    corpus.unlink()
    cfg = AutoConfig.from_pretrained(out)
    cfg.use_sliding_window, cfg.sliding_window, cfg.max_window_layers = True, WINDOW, 0
    cfg.layer_types = ["sliding_attention"] * cfg.num_hidden_layers
    cfg.max_position_embeddings = CONTEXT
    weights = AutoModelForCausalLM.from_pretrained(out).state_dict()
    model = AutoModelForCausalLM.from_config(cfg)
    model.load_state_dict(weights)
    model.save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.model_max_length = CONTEXT
    tok.save_pretrained(out)
    report = _train(out)
    (out / "tool_policy.json").write_text(json.dumps({"window": WINDOW, "steps": STEPS, **report}))


def tool_policy_dir() -> Path:
    """The trained tool policy's model directory (built and cached on first use; a file lock makes
    concurrent test processes wait for one build).

    Raises:
        RuntimeError: the build failed (nothing is cached then).
    """
    recipe = [inspect.getsource(obj) for obj in (_Data, _corpus, _examples, _train, _build)]
    recipe += [
        repr(
            (
                CALL,
                ANSWER,
                TOOL_RESULT,
                WINDOW,
                CONTEXT,
                SHARPEN,
                STEPS,
                BATCH,
                SEED,
                _BOILERPLATE,
                _QUESTIONS,
                REPORT,
                BASH_CALL,
                _FILE_QUESTIONS,
                _BASH_TOOL,
            )
        )
    ]
    digest = hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:16]
    final = _CACHE / f"tool-policy-{digest}"
    if (final / "tool_policy.json").is_file():
        return final
    _CACHE.mkdir(parents=True, exist_ok=True)
    with open(_CACHE / f".tool-policy-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "tool_policy.json").is_file():
            return final
        tmp = _CACHE / f".tool-policy-{digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _build(tmp)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"building the tool policy failed: {exc}") from exc
        tmp.rename(final)
    return final
