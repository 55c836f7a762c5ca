"""Extract what training needs from an inference response: token ids, logprobs, finish reason, version.

The field names and the format are the HTTP contract, :mod:`streamrl.schemas.inference_http`. Two
servers speak this dialect of the OpenAI API:

- vLLM (>= 0.10.2) with ``return_token_ids: true``: chat responses carry top-level
  ``prompt_token_ids`` and per choice ``token_ids``; completion choices carry ``prompt_token_ids``
  and ``token_ids``. Streams send ``prompt_token_ids`` in the first chunk and ``token_ids`` deltas.
  With ``return_tokens_as_token_ids`` the logprob tokens read ``token_id:<id>``, used as a fallback.
- The StreamRL CPU inference server: the same fields, plus ``policy_version`` in every response
  (body field and ``X-Policy-Version`` header).

Logprobs: chat ``choices[i].logprobs.content[j].logprob``; completions
``choices[i].logprobs.token_logprobs[j]`` (either form is accepted for either endpoint).

What is recorded is checked against what the server says it generated: when the response carries
``usage``, its ``completion_tokens`` must equal the token ids of all choices together (and its
``prompt_tokens`` the prompt's when the choices share one prompt); a partial or truncated answer is
a failed call, never a complete record. Bodies with ``NaN``/``Infinity`` (Python's ``json`` writes
them; JSON has no such numbers) are read, so the record's own checks can say which value is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamrl.errors import StreamRLError
from streamrl.schemas.inference_http import (
    LOGPROB_TOKENS,
    LOGPROBS,
    LOGPROBS_CONTENT,
    POLICY_VERSION,
    PROMPT_TOKEN_IDS,
    RETURN_TOKEN_IDS,
    SSE_DONE,
    TOKEN_ID_PREFIX,
    TOKEN_IDS,
    TOKEN_LOGPROBS,
    policy_version_of,
)

__all__ = ["ChoiceTokens", "ParsedResponse", "RecordingError", "parse_response", "parse_sse"]

_DONE = SSE_DONE.encode()


class RecordingError(StreamRLError):
    """An inference response lacks what training needs (token ids, logprobs) or is malformed."""


@dataclass
class ChoiceTokens:
    """One choice of a generation call, token in / token out.

    Shapes: ``prompt_token_ids`` (P,), ``response_token_ids`` (R,), ``response_logprobs`` (R,) in nats.
    """

    index: int
    prompt_token_ids: list[int] = field(default_factory=list)
    response_token_ids: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    _saw_tokens: bool = False
    _token_texts: list[str] = field(default_factory=list)


@dataclass
class ParsedResponse:
    """The recordable content of one generation response."""

    model: str | None
    policy_version: int | None
    choices: list[ChoiceTokens]


def _absorb_choice(acc: ChoiceTokens, ch: dict[str, Any], top_prompt: Any) -> None:
    """Merge one choice object (full response or stream delta) into ``acc``."""
    prompt = ch.get(PROMPT_TOKEN_IDS)
    if prompt is None:
        prompt = top_prompt
    if prompt and not acc.prompt_token_ids:
        acc.prompt_token_ids = list(prompt)
    ids = ch.get(TOKEN_IDS)
    if ids is not None:
        acc.response_token_ids.extend(ids)
        acc._saw_tokens = True
    lp = ch.get(LOGPROBS)
    if isinstance(lp, dict):
        content = lp.get(LOGPROBS_CONTENT)
        if isinstance(content, list):
            for item in content:
                acc.response_logprobs.append(float(item["logprob"]))
                tok = item.get("token")
                acc._token_texts.append(tok if isinstance(tok, str) else "")
        else:
            token_lps = lp.get(TOKEN_LOGPROBS)
            if isinstance(token_lps, list):
                acc.response_logprobs.extend(float(x) for x in token_lps)
                toks = lp.get(LOGPROB_TOKENS)
                if isinstance(toks, list):
                    acc._token_texts.extend(t if isinstance(t, str) else "" for t in toks)
    fr = ch.get("finish_reason")
    if fr is not None:
        acc.finish_reason = fr


def _loads(data: bytes, where: str, what: str) -> Any:
    """Parse JSON with orjson; a body orjson refuses is re-read by Python's ``json``, which accepts
    ``NaN``/``Infinity`` (so a non-finite logprob is reported as such, at its token, by the record's
    checks instead of as "not JSON").

    Raises:
        RecordingError: not JSON for either parser.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise RecordingError(f"{where}: {what} is not JSON: {exc}") from exc


def _check_usage(usage: Any, choices: list[ChoiceTokens], where: str) -> None:
    """The token counts the server reports (``usage``) must match the token ids recorded.

    Raises:
        RecordingError: ``completion_tokens`` differs from the response token ids of all choices, or
            ``prompt_tokens`` from the prompt's token ids (checked when every choice has one prompt).
    """
    if not isinstance(usage, dict):
        return
    completion = usage.get("completion_tokens")
    got = sum(len(c.response_token_ids) for c in choices)
    if isinstance(completion, int) and completion != got:
        raise RecordingError(
            f"{where}: usage.completion_tokens={completion} but the response carries {got} token ids "
            f"(a partial or truncated answer is not recorded)"
        )
    prompt = usage.get("prompt_tokens")
    prompts = {tuple(c.prompt_token_ids) for c in choices}
    if isinstance(prompt, int) and len(prompts) == 1:
        n = len(next(iter(prompts)))
        if prompt != n:
            raise RecordingError(
                f"{where}: usage.prompt_tokens={prompt} but the response carries {n} prompt token ids"
            )


def _finalize(choices: dict[int, ChoiceTokens], where: str) -> list[ChoiceTokens]:
    out = []
    for idx in sorted(choices):
        c = choices[idx]
        if not c._saw_tokens:
            # vLLM's return_tokens_as_token_ids form: logprob tokens read "token_id:<id>".
            texts = c._token_texts
            if texts and all(t.startswith(TOKEN_ID_PREFIX) for t in texts):
                c.response_token_ids = [int(t[len(TOKEN_ID_PREFIX) :]) for t in texts]
            else:
                raise RecordingError(
                    f"{where}: choice {idx} has no {TOKEN_IDS}; the inference server must support "
                    f"{RETURN_TOKEN_IDS} (vLLM >= 0.10.2 or the StreamRL inference server)"
                )
        if not c.prompt_token_ids:
            raise RecordingError(
                f"{where}: choice {idx} has no {PROMPT_TOKEN_IDS} ({RETURN_TOKEN_IDS} unsupported?)"
            )
        if len(c.response_logprobs) != len(c.response_token_ids):
            raise RecordingError(
                f"{where}: choice {idx} has {len(c.response_token_ids)} token ids but "
                f"{len(c.response_logprobs)} logprobs (logprobs must be returned for every token)"
            )
        out.append(c)
    if not out:
        raise RecordingError(f"{where}: response has no choices")
    return out


def parse_response(body: dict[str, Any] | bytes, *, where: str = "response") -> ParsedResponse:
    """Parse a non-streaming chat or completion response.

    Args:
        body: the response JSON (bytes or already decoded).
        where: names the call in error messages.

    Raises:
        RecordingError: not JSON, no choices, no token ids, logprobs not matching token ids, or
            token counts not matching ``usage``.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        body = _loads(bytes(body), where, "response")
    if not isinstance(body, dict):
        raise RecordingError(f"{where}: response is not a JSON object")
    choices: dict[int, ChoiceTokens] = {}
    top_prompt = body.get(PROMPT_TOKEN_IDS)
    try:
        for ch in body.get("choices") or []:
            idx = int(ch.get("index", 0))
            _absorb_choice(choices.setdefault(idx, ChoiceTokens(idx)), ch, top_prompt)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordingError(f"{where}: malformed choice: {exc!r}") from exc
    out = _finalize(choices, where)
    _check_usage(body.get("usage"), out, where)
    return ParsedResponse(body.get("model"), policy_version_of(body.get(POLICY_VERSION)), out)


def parse_sse(raw: bytes, *, where: str = "stream") -> ParsedResponse:
    """Parse a whole server-sent-events body (``data: {...}`` chunks, ``data: [DONE]``).

    Raises:
        RecordingError: a chunk is not JSON, the stream carries an ``error`` object, it ends without
            ``data: [DONE]`` (the server went away mid-stream), or the accumulated choices fail the
            checks of :func:`parse_response` (``usage`` of the last chunk that has one).
    """
    choices: dict[int, ChoiceTokens] = {}
    usage: Any = None
    done = False
    top_prompt: Any = None
    model: str | None = None
    version: int | None = None
    for line in raw.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == _DONE:
            done = True
            continue
        if not data:
            continue
        chunk = _loads(data, where, f"chunk {data[:80]!r}")
        if not isinstance(chunk, dict):
            raise RecordingError(f"{where}: chunk is not a JSON object: {data[:80]!r}")
        if "error" in chunk and not chunk.get("choices"):
            raise RecordingError(f"{where}: the stream reported an error: {chunk['error']!r}"[:500])
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        if chunk.get(PROMPT_TOKEN_IDS) is not None:
            top_prompt = chunk[PROMPT_TOKEN_IDS]
        model = chunk.get("model") or model
        v = policy_version_of(chunk.get(POLICY_VERSION))
        version = v if v is not None else version
        try:
            for ch in chunk.get("choices") or []:
                idx = int(ch.get("index", 0))
                _absorb_choice(choices.setdefault(idx, ChoiceTokens(idx)), ch, None)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise RecordingError(f"{where}: malformed stream choice: {exc!r}") from exc
    if not done:
        raise RecordingError(f"{where}: the stream ended without data: [DONE] (a partial answer)")
    if top_prompt is not None:
        for c in choices.values():
            if not c.prompt_token_ids:
                c.prompt_token_ids = list(top_prompt)
    out = _finalize(choices, where)
    _check_usage(usage, out, where)
    return ParsedResponse(model, version, out)
