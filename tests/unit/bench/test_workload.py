"""Benchmark records: real schema records that round-trip through Serde, with the group layout."""

from __future__ import annotations

import json

import pytest

from bench.coordination.workload import SampleSpec, gsm8k_questions, make_samples, synthetic_mix
from streamrl.schemas import LLMRequest, Sample, Trajectory
from streamrl.schemas.serde import Serde


def test_samples_round_trip_with_groups_and_varied_rewards() -> None:
    serde = Serde()
    pairs = make_samples(SampleSpec("m", 16, group_size=8, questions=("q1", "q2"), vary_reward=True), serde)
    samples = [serde.decode(v, Sample) for _, v in pairs]
    assert [k for k, _ in pairs] == [s.rollout_id for s in samples]
    assert {s.group_id for s in samples} == {"m-00000/0", "m-00001/0"}
    assert [s.k for s in samples[:8]] == list(range(8))
    rewards = [json.loads(s.payload)["reward"] for s in samples[:8]]
    assert set(rewards) == {0.0, 1.0}  # reward variance inside the group
    assert json.loads(samples[8].payload)["question"] == "q2"


def test_sample_count_must_fill_groups() -> None:
    with pytest.raises(ValueError, match="multiple of group_size"):
        make_samples(SampleSpec("m", 10, group_size=8), Serde())


def test_gsm8k_questions_are_strings() -> None:
    qs = gsm8k_questions(5)
    assert len(qs) == 5 and all(isinstance(q, str) and q for q in qs)


def test_synthetic_mix_decodes_as_the_pipeline_records() -> None:
    serde = Serde()
    mix = synthetic_mix(serde, count=4, response_tokens=16)
    req = serde.decode(mix.request[0][1], LLMRequest)
    traj = serde.decode(mix.trajectory[0][1], Trajectory)
    assert len(req.response_token_ids) == 16 and traj.request_ids == [req.request_id]
    sizes = mix.sizes()
    assert sizes["request_bytes"] > sizes["sample_bytes"] > 0
