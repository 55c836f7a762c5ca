"""The tool-call agent with its prompt from StreamRL: ``llm.resources["system_prompt"]``.

The same task and reward as :mod:`examples.tool_call.agent`, but the conversation sent to the model
is a prompt resource (a chat transcript template) instead of a hard-coded example exchange, so
``streamrl optimize`` can choose it (``configs/fewshot.yaml``). The template is written as a
transcript: a line ``user:``, ``assistant:`` or ``system:`` starts a message of that role, the lines
after it are its content, text before the first such line is a system message, and ``{question}``
is the task's request::

    user:
    Start a 3 minute timer.
    assistant:
    <tool_call>
    {{"name": "set_timer", "arguments": {{"minutes": 3}}}}
    </tool_call>
    user:
    {question}

The call and its reward are :func:`examples.tool_call.agent.call_and_score`'s: val rows
(``"eval": true``) are decoded greedily and count only exact calls; train rows are sampled with
``worker.sampling`` and get :func:`examples.tool_call.tools.score_call`'s partial credit.
"""

from __future__ import annotations

from examples.tool_call.agent import call_and_score
from streamrl import rollout

ROLES = ("system", "user", "assistant")


def transcript(text: str) -> list[dict[str, str]]:
    """Chat messages of a transcript (see the module docstring); blank messages are dropped.

    Raises:
        ValueError: the transcript has no user message.
    """
    messages: list[dict[str, str]] = []
    role, lines = "system", []
    for line in text.splitlines():
        marker = line.strip().lower().rstrip(":")
        if line.strip().endswith(":") and marker in ROLES:
            messages.append({"role": role, "content": "\n".join(lines).strip()})
            role, lines = marker, []
        else:
            lines.append(line)
    messages.append({"role": role, "content": "\n".join(lines).strip()})
    messages = [m for m in messages if m["content"]]
    if not any(m["role"] == "user" for m in messages):
        raise ValueError("the prompt transcript has no 'user:' message")
    return messages


@rollout(name="tool_call")
async def solve(task: dict, llm) -> float:
    """One rollout: the prompt transcript with the task's request, one chat completion with the
    task's tool; the reward scores its tool call."""
    messages = transcript(llm.resources["system_prompt"].format(question=task["question"]))
    return await call_and_score(task, llm, messages)
