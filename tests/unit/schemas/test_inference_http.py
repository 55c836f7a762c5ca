"""The inference HTTP contract: its names are vLLM's wire names, and its helpers invert each other."""

from __future__ import annotations

import pytest

from streamrl.schemas import inference_http as http


def test_the_wire_names_are_vllms_and_stay_so() -> None:
    """Spelled out once more on purpose: the gateway talks to a real ``vllm serve``, whose field names
    these are (vLLM >= 0.10.2, ``return_token_ids``); renaming one in the contract would break it."""
    assert (http.RETURN_TOKEN_IDS, http.LOGPROBS) == ("return_token_ids", "logprobs")
    assert (http.PROMPT_TOKEN_IDS, http.TOKEN_IDS) == ("prompt_token_ids", "token_ids")
    assert (http.LOGPROBS_CONTENT, http.TOKEN_LOGPROBS, http.LOGPROB_TOKENS) == (
        "content",
        "token_logprobs",
        "tokens",
    )
    assert http.TOKEN_ID_PREFIX == "token_id:" and http.SSE_DONE == "[DONE]"
    assert (http.CHAT_COMPLETIONS, http.COMPLETIONS, http.MODELS) == (
        "chat/completions",
        "completions",
        "models",
    )
    # StreamRL's own additions (documented in the README; external agents may send the agent header)
    assert (http.POLICY_VERSION, http.POLICY_VERSION_HEADER) == ("policy_version", "X-Policy-Version")
    assert http.AGENT_HEADER == "X-StreamRL-Agent"


def test_force_training_fields() -> None:
    assert http.force_training_fields({"logprobs": False}, chat=True) == {
        "return_token_ids": True,
        "logprobs": True,
    }
    assert http.force_training_fields({}, chat=False) == {"return_token_ids": True, "logprobs": 0}
    assert (
        http.force_training_fields({"logprobs": 5}, chat=False)["logprobs"] == 5
    )  # alternatives asked for: kept
    body = {"model": "m"}
    assert http.force_training_fields(body, chat=True) is body


def test_policy_version_of_and_headers() -> None:
    assert http.version_headers(7) == {"X-Policy-Version": "7"}
    assert [http.policy_version_of(v) for v in (3, "4", None, True, "x", 2.0)] == [3, 4, None, None, None, 2]


@pytest.mark.parametrize(
    ("rollout_id", "attempt_id", "agent"),
    [("t/0/1", "ab", None), ("r", "a", "my agent"), ("a b/c%d", "x/y", "judge/1")],
)
def test_attempt_path_round_trips(rollout_id: str, attempt_id: str, agent: str | None) -> None:
    base = http.attempt_base_url("http://gw:8100/", rollout_id, attempt_id, agent)
    path = base.removeprefix("http://gw:8100") + "/chat/completions"
    assert http.parse_attempt_path(path) == (rollout_id, attempt_id, agent, "chat/completions")


def test_parse_attempt_path() -> None:
    assert http.parse_attempt_path("/rollouts/t%2F0%2F1/attempts/ab/v1/chat/completions") == (
        "t/0/1",
        "ab",
        None,
        "chat/completions",
    )
    assert http.parse_attempt_path("/rollouts/r/attempts/a/v1/models") == ("r", "a", None, "models")
    for bad in (
        "/v1/chat/completions",
        "/rollouts/r/attempts/a/chat",
        "/rollouts//attempts/a/v1/models",
        "/rollouts/r/attempts/a/agents//v1/models",
        "/rollouts/r/attempts/a/v1",
    ):
        assert http.parse_attempt_path(bad) is None, bad


@pytest.mark.parametrize(
    ("body", "expected"),
    [({}, 1.0), ({"temperature": 0.7}, 0.7), ({"temperature": 0}, 0.0), ({"temperature": None}, 1.0),
     ({"temperature": "hot"}, None), ({"temperature": True}, None), ({"temperature": -1}, None),
     ({"temperature": float("nan")}, None), ({"temperature": float("inf")}, None)],
)  # fmt: skip
def test_sampling_temperature_of_a_request_body(body, expected):
    assert http.sampling_temperature(body) == expected


@pytest.mark.parametrize(
    ("temperature", "mode", "expected"),
    [
        (0.7, "scaled", 0.7),
        (1.3, "scaled", 1.3),
        (0.7, "raw", 1.0),
        (0.0, "scaled", 1.0),
        (None, "scaled", 1.0),
    ],
)
def test_logprob_temperature_follows_the_servers_logprobs_mode(temperature, mode, expected):
    """Scaled logprobs are of softmax(logits / T); raw, greedy and unknown ones of softmax(logits)."""
    assert http.logprob_temperature(temperature, mode) == expected
