"""Fixtures of the streams unit tests: builders of compact calls and trajectories."""

from __future__ import annotations

from typing import Any

import pytest

from streamrl.streams.rows import Call, Traj


def call(
    rid: str,
    prompt: list[int],
    response: list[int],
    *,
    attempt: str = "a1",
    agent: str | None = "solver",
    version: int = 3,
    ts: float = 100.0,
    seq: int = 0,
    logprobs: list[float] | None = None,
    temperature: float = 1.0,
) -> Call:
    return Call(
        request_id=rid,
        attempt_id=attempt,
        agent_name=agent,
        sequence=seq,
        prompt=prompt,
        response=response,
        logprobs=logprobs if logprobs is not None else [-0.5] * len(response),
        version=version,
        temperature=temperature,
        ts=ts,
    )


def traj(
    rollout: str,
    request_ids: list[str],
    *,
    reward: float = 1.0,
    attempt: str = "a1",
    group: str = "t1/0",
    size: int = 2,
    mode: str = "train",
    status: str = "succeeded",
    ts: float = 101.0,
    rewards: list[dict[str, Any]] | None = None,
    version: int = 3,
) -> Traj:
    return Traj(
        rollout_id=rollout,
        attempt_id=attempt,
        task_id=group.split("/")[0],
        group_id=group,
        group_size=size,
        mode=mode,
        status=status,
        reward=reward,
        rewards=rewards or [],
        request_ids=request_ids,
        policy_version=version,
        ts=ts,
        offset=0,
    )


class Builders:
    """``b.call(...)`` / ``b.traj(...)`` (see the functions above)."""

    call = staticmethod(call)
    traj = staticmethod(traj)


@pytest.fixture
def b() -> Builders:
    """Builders of compact calls and trajectories."""
    return Builders()
