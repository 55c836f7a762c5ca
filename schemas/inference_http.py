"""The HTTP contract between agents, the recording gateway and the inference service: one definition.

Every side imports its names from here: the gateway (``consumers/gateway.py``) and its response
parser (``consumers/recording.py``), the agent SDK (``streamrl/sdk.py``, the per-attempt base URL),
the CPU inference server (``inference/protocol.py``, ``inference/server.py``), the vLLM front
server (``inference/vllm_backend.py``), the dev supervisor (``/health``) and the fake servers of the
tests and benchmarks. ``tests/unit/test_contracts.py`` fails if a header or field name is spelled out
anywhere else.

The wire format is vLLM's OpenAI-compatible API with its training fields (vLLM >= 0.10.2), plus
StreamRL's policy version; a gateway in front of a plain ``vllm serve`` works unchanged.

Agent -> gateway
    Base URL of one rollout attempt: ``<gateway>/rollouts/<rollout_id>/attempts/<attempt_id>[/agents/<name>]/v1``
    (each id percent-encoded as one path segment, ``/`` included): :func:`attempt_base_url`,
    :func:`parse_attempt_path`. Header :data:`AGENT_HEADER` (``X-StreamRL-Agent``) names the agent of a
    call when the path does not. Endpoints under it: :data:`GATEWAY_ENDPOINTS`; the Responses and
    Messages APIs are translated by the gateway into one chat completion each (Anthropic clients use the
    base URL without ``/v1`` and may send their key as :data:`ANTHROPIC_API_KEY_HEADER`).

Gateway -> inference (requests)
    ``POST <upstream>/chat/completions`` and ``POST <upstream>/completions`` (:data:`GENERATION_ENDPOINTS`),
    ``GET <upstream>/models``. The gateway forces the fields training needs (:func:`force_training_fields`):
    :data:`RETURN_TOKEN_IDS` ``true``, and :data:`LOGPROBS` ``true`` on chat (completions: ``0`` when
    absent, i.e. the sampled token's logprob and no alternatives).

Inference -> gateway (responses)
    - top-level :data:`PROMPT_TOKEN_IDS` ``list[int]`` (chat; completions carry it per choice too);
    - per choice :data:`TOKEN_IDS` ``list[int]``: every sampled token, EOS and stop-string tokens included;
    - per choice logprobs, one per token in nats: chat ``logprobs.content[j].logprob``
      (:data:`LOGPROBS_CONTENT`), completions ``logprobs.token_logprobs[j]`` (:data:`TOKEN_LOGPROBS`,
      with the token texts in :data:`LOGPROB_TOKENS`); with vLLM's ``return_tokens_as_token_ids`` the
      token texts read ``token_id:<id>`` (:data:`TOKEN_ID_PREFIX`);
    - :data:`POLICY_VERSION` ``int``: the policy version that generated the response, as a body field
      (every stream chunk too) and as the :data:`POLICY_VERSION_HEADER` (``X-Policy-Version``) header;
    - streams are server-sent events, ``data: {json}`` lines ending with ``data: [DONE]``; the first
      chunk carries :data:`PROMPT_TOKEN_IDS`, every token chunk its :data:`TOKEN_IDS` delta.

Inference ``GET /health`` (:data:`HEALTH_PATH`) answers ``{"status", "model", "policy_version"}``;
``POST /tokenize`` (:data:`TOKENIZE_PATH`, vLLM's) counts a prompt. Per choice, :data:`STOP_REASON`
names the stop string or token that ended generation (vLLM's field).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "AGENT_HEADER",
    "ANTHROPIC_API_KEY_HEADER",
    "CHAT_COMPLETIONS",
    "COMPLETIONS",
    "DEFAULT_TEMPERATURE",
    "GATEWAY_ENDPOINTS",
    "GENERATION_ENDPOINTS",
    "HEALTH_PATH",
    "LOGPROBS",
    "LOGPROBS_CONTENT",
    "LOGPROB_TOKENS",
    "MESSAGES",
    "MESSAGES_COUNT_TOKENS",
    "MODELS",
    "PASSED_RESPONSE_HEADERS",
    "POLICY_VERSION",
    "POLICY_VERSION_HEADER",
    "PROMPT_TOKEN_IDS",
    "REQUEST_ID_HEADER",
    "RESPONSES",
    "RETURN_TOKEN_IDS",
    "SSE_DONE",
    "STOP_REASON",
    "TEMPERATURE",
    "TOKENIZE_PATH",
    "TOKEN_IDS",
    "TOKEN_ID_PREFIX",
    "TOKEN_LOGPROBS",
    "attempt_base_url",
    "force_training_fields",
    "logprob_temperature",
    "parse_attempt_path",
    "policy_version_of",
    "sampling_temperature",
    "version_headers",
]

# -- headers ------------------------------------------------------------------------------------------
POLICY_VERSION_HEADER = "X-Policy-Version"
"""Response header: the policy version that generated the response (decimal integer)."""
AGENT_HEADER = "X-StreamRL-Agent"
"""Request header an agent may set on a call to the gateway: the agent name the call is recorded under."""
REQUEST_ID_HEADER = "X-Request-Id"
"""Response header passed through from the inference service, when it sets one."""
PASSED_RESPONSE_HEADERS: tuple[str, ...] = ("Content-Type", POLICY_VERSION_HEADER, REQUEST_ID_HEADER)
"""Headers of an inference response the gateway hands on to the agent."""
ANTHROPIC_API_KEY_HEADER = "x-api-key"
"""Request header carrying the key of an Anthropic Messages client (``Authorization: Bearer`` works too)."""

# -- endpoints (relative to the ``/v1`` base) -------------------------------------------------------
CHAT_COMPLETIONS = "chat/completions"
COMPLETIONS = "completions"
MODELS = "models"
GENERATION_ENDPOINTS: tuple[str, ...] = (CHAT_COMPLETIONS, COMPLETIONS)
RESPONSES = "responses"
"""OpenAI Responses API; the gateway translates it to :data:`CHAT_COMPLETIONS` (the inference service
never sees it)."""
MESSAGES = "messages"
"""Anthropic Messages API; the gateway translates it to :data:`CHAT_COMPLETIONS`."""
MESSAGES_COUNT_TOKENS = "messages/count_tokens"
"""Anthropic token counting; the gateway answers it with the inference service's :data:`TOKENIZE_PATH`."""
GATEWAY_ENDPOINTS: tuple[str, ...] = (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    MODELS,
    RESPONSES,
    MESSAGES,
    MESSAGES_COUNT_TOKENS,
)
"""Everything an agent may call under its ``/v1`` base on the gateway (``GET responses/<id>`` too)."""
HEALTH_PATH = "/health"
"""Inference service health route (server root, not under ``/v1``); its body has :data:`POLICY_VERSION`."""
TOKENIZE_PATH = "/tokenize"
"""Inference service tokenizer route (server root, vLLM's): ``{"model", "messages", "tools"?,
"add_generation_prompt"?}`` or ``{"model", "prompt"}`` -> ``{"count", "max_model_len", "tokens"}``."""

# -- request fields -----------------------------------------------------------------------------------
RETURN_TOKEN_IDS = "return_token_ids"
"""vLLM request flag: return prompt and response token ids."""
LOGPROBS = "logprobs"
"""Request field (chat: bool; completions: int = alternatives per token) and response field per choice."""
TEMPERATURE = "temperature"
"""Request field: the sampling temperature (>= 0; 0 = greedy; absent = :data:`DEFAULT_TEMPERATURE`)."""
DEFAULT_TEMPERATURE = 1.0
"""The temperature of a request that names none (OpenAI's default; the CPU server's, and vLLM's when it
is launched with ``--generation-config vllm`` as StreamRL launches it)."""

# -- response fields ----------------------------------------------------------------------------------
PROMPT_TOKEN_IDS = "prompt_token_ids"
"""``list[int]``: the prompt as the engine tokenized it (top level; per choice on completions)."""
TOKEN_IDS = "token_ids"
"""``list[int]`` per choice (per chunk when streaming): the generated token ids."""
POLICY_VERSION = "policy_version"
"""``int`` body field of every response, stream chunk and ``/health``: the policy version serving."""
LOGPROBS_CONTENT = "content"
"""Chat: ``choices[i].logprobs.content`` = one ``{token, logprob, bytes, top_logprobs}`` per token."""
TOKEN_LOGPROBS = "token_logprobs"
"""Completions: ``choices[i].logprobs.token_logprobs`` = one logprob per token."""
LOGPROB_TOKENS = "tokens"
"""Completions: ``choices[i].logprobs.tokens`` = the token texts."""
TOKEN_ID_PREFIX = "token_id:"
"""vLLM ``return_tokens_as_token_ids``: logprob token texts read ``token_id:<id>``."""
STOP_REASON = "stop_reason"
"""Per choice (vLLM): the stop string or stop token id that ended generation; null on end-of-sequence
or a length stop."""
SSE_DONE = "[DONE]"
"""Payload of the last server-sent event of a stream (``data: [DONE]``)."""


def force_training_fields(body: dict[str, Any], *, chat: bool) -> dict[str, Any]:
    """Set the request fields training needs on a generation request body (in place) and return it.

    ``return_token_ids = true``; chat: ``logprobs = true``; completions: ``logprobs = 0`` unless the
    caller asked for alternatives (an int), so the sampled token's logprob always comes back.
    """
    body[RETURN_TOKEN_IDS] = True
    if chat:
        body[LOGPROBS] = True
    elif body.get(LOGPROBS) is None:
        body[LOGPROBS] = 0
    return body


def sampling_temperature(body: dict[str, Any]) -> float | None:
    """The temperature a generation request body samples at: its :data:`TEMPERATURE` field, or
    :data:`DEFAULT_TEMPERATURE` when absent; None when the field is not a finite number >= 0 (the
    server rejects such a request)."""
    value = body.get(TEMPERATURE)
    if value is None:
        return DEFAULT_TEMPERATURE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        return None
    return float(value)


def logprob_temperature(temperature: float | None, logprobs_mode: str) -> float:
    """The temperature the inference service's logprobs of a call were taken at, which the trainer
    divides its logits by to compute the same distribution (verl's actor does the same with the rollout
    temperature).

    ``logprobs_mode`` ``scaled`` (the default) reports ``log_softmax(logits / T)`` for ``T > 0``, so it
    is ``T``; ``raw`` reports ``log_softmax(logits)`` (1.0), as does a greedy request (``T == 0``); an
    unknown temperature (a record written before the gateway recorded it) reads as
    :data:`DEFAULT_TEMPERATURE`. See ``inference/engine.py`` for the two modes.
    """
    if logprobs_mode == "raw" or temperature is None or temperature <= 0:
        return DEFAULT_TEMPERATURE
    return float(temperature)


def version_headers(version: int) -> dict[str, str]:
    """The response headers that carry ``version`` (``{X-Policy-Version: "<version>"}``)."""
    return {POLICY_VERSION_HEADER: str(int(version))}


def policy_version_of(value: Any) -> int | None:
    """A policy version read from a body field or header value; None when absent or not an integer."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def attempt_base_url(
    gateway_url: str, rollout_id: str, attempt_id: str, agent_name: str | None = None
) -> str:
    """The OpenAI ``/v1`` base URL of one rollout attempt on a gateway.

    ``attempt_base_url("http://gw:8100", "t/0/1", "a1", "solver")`` ->
    ``"http://gw:8100/rollouts/t%2F0%2F1/attempts/a1/agents/solver/v1"``.
    """
    url = f"{gateway_url.rstrip('/')}/rollouts/{quote(rollout_id, safe='')}/attempts/{quote(attempt_id, safe='')}"
    if agent_name:
        url += f"/agents/{quote(agent_name, safe='')}"
    return url + "/v1"


def parse_attempt_path(raw_path: str) -> tuple[str, str, str | None, str] | None:
    """Split a gateway path into ``(rollout_id, attempt_id, agent_name, endpoint)``; the inverse of
    :func:`attempt_base_url` plus the endpoint.

    ``/rollouts/a%2F0%2F1/attempts/x/agents/solver/v1/chat/completions`` ->
    ``("a/0/1", "x", "solver", "chat/completions")``. Segments are percent-decoded one by one, so ids
    may contain ``/``. Returns None when the path has another shape.
    """
    parts = raw_path.split("/")
    # ['', 'rollouts', rid, 'attempts', aid, ('agents', name,) 'v1', *endpoint]
    if len(parts) < 7 or parts[0] != "" or parts[1] != "rollouts" or parts[3] != "attempts":
        return None
    rest = parts[5:]
    agent: str | None = None
    if rest[0] == "agents":
        if len(rest) < 4 or not rest[1]:
            return None
        agent = unquote(rest[1])
        rest = rest[2:]
    if rest[0] != "v1" or len(rest) < 2:
        return None
    rid, aid = unquote(parts[2]), unquote(parts[4])
    if not rid or not aid:
        return None
    return rid, aid, agent, "/".join(rest[1:])
