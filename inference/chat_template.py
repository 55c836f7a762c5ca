"""The ChatML chat template of models built by :mod:`streamrl.inference.model_builder`.

One Jinja template (the format of Hugging Face's ``tokenizer.chat_template``) that renders
``system``/``user``/``assistant``/``tool`` messages, assistant ``tool_calls`` and a ``tools`` list,
in the Qwen2.5 layout so agents written for Qwen-style tool calling work unchanged:

    <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n

The template uses no whitespace control: every newline in the output is written explicitly.
Message ``content`` may be a string, None, or a list of OpenAI content parts (only ``text`` parts
are rendered).
"""

from __future__ import annotations

BOS_TOKEN = "<|endoftext|>"
"""Document separator; also the padding token."""
IM_START = "<|im_start|>"
"""Starts a message: ``<|im_start|>{role}\\n``."""
IM_END = "<|im_end|>"
"""Ends a message; the end-of-sequence token of generation."""
SPECIAL_TOKENS: tuple[str, ...] = (BOS_TOKEN, IM_START, IM_END)
"""Special tokens in id order (ids 0, 1, 2 of every built tokenizer)."""
UNK_TOKEN = "<unk>"
"""Unknown character of the ``char`` tokenizer (id 3)."""

CHAT_TEMPLATE = (
    "{% macro render_content(content) %}"
    "{% if content is none %}"
    "{% elif content is string %}{{ content }}"
    "{% else %}{% for part in content %}{% if part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ render_content(messages[0].content) }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{% elif messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ render_content(messages[0].content) }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' and loop.first %}"
    "{% elif message.role == 'assistant' %}"
    "<|im_start|>assistant\n{{ render_content(message.content) }}"
    "{% if message.tool_calls %}"
    "{% for tc in message.tool_calls %}"
    "{% set fn = tc.function if tc.function is defined else tc %}"
    "{% if (message.content and message.content is string) or not loop.first %}\n{% endif %}"
    '<tool_call>\n{"name": "{{ fn.name }}", "arguments": '
    "{% if fn.arguments is string %}{{ fn.arguments }}{% else %}{{ fn.arguments | tojson }}{% endif %}"
    "}\n</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% else %}"
    "<|im_start|>{{ message.role }}\n{{ render_content(message.content) }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The Jinja chat template saved into ``tokenizer_config.json``."""
