"""Training rows from one complete rollout: transition or trajectory mode, masks, reward placement.

Pure functions over plain dicts (the same JSON-able dicts the Faust tables store), so they are unit
tested without Kafka. A *call* dict (:class:`Call`) is the compact form of one ``LLMRequest``; a
*trajectory* dict (:class:`Traj`) the compact form of one ``Trajectory``. A *row* dict has exactly
the fields of ``schemas.TrainingRow``.

Token-in/token-out: rows reuse the engine's token ids and logprobs; nothing is re-tokenized.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict


class Call(TypedDict):
    """One LLM call (compact ``LLMRequest``)."""

    request_id: str
    attempt_id: str
    agent_name: str | None
    sequence: int
    prompt: list[int]  # (P,) prompt token ids
    response: list[int]  # (R,) response token ids
    logprobs: list[float]  # (R,) behaviour logprobs
    version: int  # policy version that served the call
    ts: float  # record timestamp, seconds since the epoch
    temperature: (
        float  # its logprobs' temperature (> 0); read with .get: state stored before it has none (1.0)
    )


class Traj(TypedDict):
    """One rollout outcome (compact ``Trajectory``)."""

    rollout_id: str
    attempt_id: str
    task_id: str
    group_id: str
    group_size: int
    mode: str  # "train" | "val"
    status: str  # "succeeded" | "failed" | "timeout"
    reward: float | None
    rewards: list[dict[str, Any]]  # {"name", "value", "primary", "request_id"}
    request_ids: list[str]
    policy_version: int
    ts: float
    offset: int  # offset of the trajectory record (for dead letters)


@dataclass(frozen=True)
class RowConfig:
    """How rows are built (mirrors the ``streams`` config section).

    Attributes:
        mode: ``transition`` (one row per call) or ``trajectory`` (merge prefix-extending calls).
        train_agents: compiled full-match patterns; empty = every agent is trained.
        reward_placement: ``final`` or ``per_call``.
        max_prompt_tokens / max_response_tokens: limits in tokens.
        overlong: ``truncate`` or ``drop`` rows over a limit.
    """

    mode: Literal["transition", "trajectory"] = "transition"
    train_agents: tuple[re.Pattern[str], ...] = field(default_factory=tuple)
    reward_placement: Literal["final", "per_call"] = "final"
    max_prompt_tokens: int = 4096
    max_response_tokens: int = 2048
    overlong: Literal["truncate", "drop"] = "truncate"

    @classmethod
    def from_settings(cls, streams: Any) -> RowConfig:
        """Build from a ``StreamsSettings``."""
        return cls(
            mode=streams.row_mode,
            train_agents=tuple(re.compile(p) for p in streams.train_agents),
            reward_placement=streams.reward_placement,
            max_prompt_tokens=streams.max_prompt_tokens,
            max_response_tokens=streams.max_response_tokens,
            overlong=streams.overlong,
        )

    def trains(self, agent_name: str | None) -> bool:
        """Whether calls of ``agent_name`` become rows (selective optimization)."""
        if not self.train_agents:
            return True
        if agent_name is None:
            return False
        return any(p.fullmatch(agent_name) for p in self.train_agents)


@dataclass
class _Draft:
    """A row being assembled: segment ends remember where each call's response ends."""

    agent_name: str | None
    prompt: list[int]
    temperature: float = 1.0
    response: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    ends: dict[str, int] = field(default_factory=dict)  # request_id -> index of its last response token

    def add_response(self, call: Call) -> None:
        self.response.extend(call["response"])
        self.mask.extend([1] * len(call["response"]))
        self.logprobs.extend(float(x) for x in call["logprobs"])
        self.versions.append(int(call["version"]))
        self.ends[call["request_id"]] = len(self.response) - 1


def _extends(draft: _Draft, call: Call) -> bool:
    context = draft.prompt + draft.response
    return len(call["prompt"]) >= len(context) and call["prompt"][: len(context)] == context


def _break_cause(draft: _Draft, call: Call, max_response: int) -> str | None:
    """Why ``call`` cannot be merged into ``draft`` (None = it can)."""
    if call["agent_name"] != draft.agent_name:
        return "agent_changed"
    if call.get("temperature", 1.0) != draft.temperature:
        return "temperature_changed"  # one row, one temperature: the trainer divides its logits by it
    context_len = len(draft.prompt) + len(draft.response)
    if len(call["prompt"]) < context_len:
        return "shorter_prompt"
    if not _extends(draft, call):
        return "prefix_mismatch"
    observation = len(call["prompt"]) - context_len
    if len(draft.response) + observation + len(call["response"]) > max_response:
        return "response_limit"
    return None


def _drafts(calls: list[Call], cfg: RowConfig, stats: Counter[str]) -> list[_Draft]:
    drafts: list[_Draft] = []
    current: _Draft | None = None
    for call in calls:
        if cfg.mode == "trajectory" and current is not None:
            cause = _break_cause(current, call, cfg.max_response_tokens)
            if cause is None:
                context_len = len(current.prompt) + len(current.response)
                observation = call["prompt"][context_len:]
                current.response.extend(observation)
                current.mask.extend([0] * len(observation))
                current.logprobs.extend([0.0] * len(observation))
                current.add_response(call)
                continue
            stats[f"merge_break:{cause}"] += 1
        current = _Draft(
            agent_name=call["agent_name"],
            prompt=list(call["prompt"]),
            temperature=float(call.get("temperature", 1.0)),
        )
        current.add_response(call)
        drafts.append(current)
    return drafts


def _fit(draft: _Draft, cfg: RowConfig, stats: Counter[str]) -> bool:
    """Apply the prompt/response limits in place; False = drop the row."""
    over_prompt = len(draft.prompt) > cfg.max_prompt_tokens
    over_response = len(draft.response) > cfg.max_response_tokens
    if not (over_prompt or over_response):
        return True
    if cfg.overlong == "drop":
        stats["overlong:dropped"] += 1
        return False
    stats["overlong:truncated"] += 1
    if over_prompt:
        draft.prompt = draft.prompt[-cfg.max_prompt_tokens :]
    if over_response:
        n = cfg.max_response_tokens
        draft.response, draft.mask, draft.logprobs = draft.response[:n], draft.mask[:n], draft.logprobs[:n]
        draft.ends = {rid: min(end, n - 1) for rid, end in draft.ends.items()}
    while draft.mask and draft.mask[-1] == 0:  # a row never ends on observation tokens
        draft.response.pop()
        draft.mask.pop()
        draft.logprobs.pop()
    if not any(draft.mask):
        stats["overlong:dropped"] += 1
        return False
    draft.ends = {rid: min(end, len(draft.response) - 1) for rid, end in draft.ends.items()}
    return True


def _place_rewards(
    drafts: list[_Draft], traj: Traj, ordered_ids: list[str], cfg: RowConfig, stats: Counter[str]
) -> list[list[float]]:
    """Per-token rewards of every draft, ``(R_i,)`` each."""
    token_rewards = [[0.0] * len(d.response) for d in drafts]
    final = float(traj["reward"])  # a succeeded trajectory has a finite reward (Trajectory invariants)
    per_call = [r for r in traj["rewards"] if r.get("primary") and r.get("request_id")]
    if cfg.reward_placement == "final" or not per_call:
        for tr in token_rewards:
            if tr:
                tr[-1] += final
        return token_rewards
    where: dict[str, tuple[int, int]] = {}
    for i, d in enumerate(drafts):
        for rid, end in d.ends.items():
            where[rid] = (i, end)
    position = {rid: n for n, rid in enumerate(ordered_ids)}
    for reward in per_call:
        rid = reward["request_id"]
        if rid not in position:
            stats["reward_unplaced"] += 1
            continue
        # The reward follows call `rid`; if that call has no row, the latest trained call before it.
        target = next((where[c] for c in reversed(ordered_ids[: position[rid] + 1]) if c in where), None)
        if target is None:
            stats["reward_unplaced"] += 1
            continue
        token_rewards[target[0]][target[1]] += float(reward["value"])
    return token_rewards


def build_rows(
    traj: Traj, calls: dict[str, Call], cfg: RowConfig
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Turn one complete rollout into ``TrainingRow`` dicts.

    Args:
        traj: the trajectory; ``traj["request_ids"]`` gives the calls in order.
        calls: every call it lists, by request id (a missing id raises KeyError: the join guarantees
            completeness before this is called).
        cfg: row building options.

    Returns:
        ``(rows, stats)``: rows in call order with fields ``rollout_id, group_id, agent_name,
        prompt_ids (P,), response_ids (R,), response_mask (R,), behaviour_logprobs (R,),
        token_rewards (R,), reward, policy_version (oldest in the row), weight (1.0), temperature (of
        its calls' logprobs)``; ``stats`` counts ``filtered_agent``, ``empty_response``,
        ``merge_break:<cause>`` (causes ``agent_changed``, ``temperature_changed``, ``shorter_prompt``,
        ``prefix_mismatch``, ``response_limit``),
        ``overlong:truncated|dropped`` and ``reward_unplaced``.
    """
    stats: Counter[str] = Counter()
    ordered_ids = list(traj["request_ids"])
    trained: list[Call] = []
    for rid in ordered_ids:
        call = calls[rid]
        if not cfg.trains(call["agent_name"]):
            stats["filtered_agent"] += 1
            continue
        if not call["response"]:
            stats["empty_response"] += 1
            continue
        trained.append(call)
    drafts = [d for d in _drafts(trained, cfg, stats) if _fit(d, cfg, stats)]
    token_rewards = _place_rewards(drafts, traj, ordered_ids, cfg, stats)
    reward = float(traj["reward"])
    rows = [
        {
            "rollout_id": traj["rollout_id"],
            "group_id": traj["group_id"],
            "agent_name": d.agent_name,
            "prompt_ids": d.prompt,
            "response_ids": d.response,
            "response_mask": d.mask,
            "behaviour_logprobs": d.logprobs,
            "token_rewards": tr,
            "reward": reward,
            "policy_version": min(d.versions),
            "weight": 1.0,
            "temperature": d.temperature,
        }
        for d, tr in zip(drafts, token_rewards, strict=True)
    ]
    return rows, stats
