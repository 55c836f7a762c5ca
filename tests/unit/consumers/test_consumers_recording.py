"""Parsing inference responses (vLLM and StreamRL dialects)."""

from __future__ import annotations

import orjson
import pytest

from streamrl.consumers.recording import RecordingError, parse_response, parse_sse


def test_vllm_chat_response() -> None:
    body = {
        "model": "m",
        "prompt_token_ids": [1, 2, 3],
        "choices": [
            {
                "index": 1,
                "token_ids": [7],
                "finish_reason": "length",
                "logprobs": {"content": [{"token": "x", "logprob": -0.5}]},
            },
            {
                "index": 0,
                "token_ids": [5, 6],
                "finish_reason": "stop",
                "logprobs": {"content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}]},
            },
        ],
    }
    out = parse_response(orjson.dumps(body))
    assert out.model == "m" and out.policy_version is None
    assert [
        (c.index, c.prompt_token_ids, c.response_token_ids, c.response_logprobs, c.finish_reason)
        for c in out.choices
    ] == [
        (0, [1, 2, 3], [5, 6], [-0.1, -0.2], "stop"),
        (1, [1, 2, 3], [7], [-0.5], "length"),
    ]


def test_vllm_completion_response_and_token_id_strings() -> None:
    body = {
        "policy_version": 4,
        "choices": [
            {
                "index": 0,
                "prompt_token_ids": [9],
                "token_ids": [1, 2],
                "logprobs": {"token_logprobs": [-1.0, -2.0], "tokens": ["a", "b"]},
            }
        ],
    }
    out = parse_response(body)
    assert out.policy_version == 4 and out.choices[0].response_token_ids == [1, 2]
    # return_tokens_as_token_ids form, without token_ids
    body = {
        "prompt_token_ids": [3],
        "choices": [
            {
                "index": 0,
                "logprobs": {
                    "content": [
                        {"token": "token_id:42", "logprob": -0.3},
                        {"token": "token_id:7", "logprob": -0.1},
                    ]
                },
            }
        ],
    }
    assert parse_response(body).choices[0].response_token_ids == [42, 7]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"choices": [{"index": 0, "message": {"content": "hi"}}], "prompt_token_ids": [1]}, "no token_ids"),
        (
            {"choices": [{"index": 0, "token_ids": [1], "logprobs": {"content": [{"logprob": -1}]}}]},
            "no prompt_token_ids",
        ),
        (
            {
                "prompt_token_ids": [1],
                "choices": [{"index": 0, "token_ids": [1, 2], "logprobs": {"content": [{"logprob": -1}]}}],
            },
            "2 token ids but 1 logprobs",
        ),
        ({"prompt_token_ids": [1], "choices": []}, "no choices"),
    ],
)
def test_unrecordable_responses_say_why(body: dict, match: str) -> None:
    with pytest.raises(RecordingError, match=match):
        parse_response(body, where="call 3")
    with pytest.raises(RecordingError, match="not JSON"):
        parse_response(b"<html>")


def _sse(*chunks: dict) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_sse_accumulates_deltas() -> None:
    raw = _sse(
        {
            "model": "m",
            "prompt_token_ids": [1, 2],
            "policy_version": 5,
            "choices": [{"index": 0, "delta": {"role": "assistant"}}],
        },
        {"choices": [{"index": 0, "token_ids": [10], "logprobs": {"content": [{"logprob": -0.1}]}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "token_ids": [11, 12],
                    "logprobs": {"content": [{"logprob": -0.2}, {"logprob": -0.3}]},
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    (c,) = parse_sse(raw).choices
    assert (c.prompt_token_ids, c.response_token_ids, c.response_logprobs, c.finish_reason) == (
        [1, 2],
        [10, 11, 12],
        [-0.1, -0.2, -0.3],
        "stop",
    )
    assert parse_sse(raw).policy_version == 5
    # completions stream: prompt ids on the choice of the first chunk
    raw = _sse(
        {
            "choices": [
                {
                    "index": 0,
                    "prompt_token_ids": [4],
                    "token_ids": [8],
                    "logprobs": {"token_logprobs": [-1.5]},
                }
            ]
        }
    )
    assert parse_sse(raw).choices[0].prompt_token_ids == [4]
    with pytest.raises(RecordingError, match="stream reported an error"):
        parse_sse(_sse({"error": {"message": "boom"}}))
    with pytest.raises(RecordingError, match="not JSON"):
        parse_sse(b"data: {oops\n\n")
