"""Row building: transition/trajectory modes, masks, rewards, selective optimization, limits."""

from __future__ import annotations

import re

from streamrl.streams.convert import call_of
from streamrl.streams.rows import RowConfig, build_rows
from tests.support.records import llm_request


def _calls(*cs):
    return {c["request_id"]: c for c in cs}


def test_transition_mode_one_row_per_call_final_reward_on_last_token(b):
    c1 = b.call("r1", [1, 2], [3, 4], version=2)
    c2 = b.call("r2", [1, 2, 3, 4, 9], [5], version=3, logprobs=[-0.1])
    rows, stats = build_rows(b.traj("ro", ["r1", "r2"], reward=0.5), _calls(c1, c2), RowConfig())
    assert [r["prompt_ids"] for r in rows] == [[1, 2], [1, 2, 3, 4, 9]]
    assert [r["response_ids"] for r in rows] == [[3, 4], [5]]
    assert [r["response_mask"] for r in rows] == [[1, 1], [1]]
    assert [r["token_rewards"] for r in rows] == [[0.0, 0.5], [0.5]]
    assert rows[1]["behaviour_logprobs"] == [-0.1]
    assert [r["policy_version"] for r in rows] == [2, 3]
    assert all(r["reward"] == 0.5 and r["weight"] == 1.0 and r["agent_name"] == "solver" for r in rows)
    assert not stats


def test_trajectory_mode_merges_prefix_extensions_and_masks_observations(b):
    c1 = b.call("r1", [1, 2], [3, 4], version=2, logprobs=[-1.0, -2.0])
    c2 = b.call("r2", [1, 2, 3, 4, 7, 8], [5, 6], version=3, logprobs=[-3.0, -4.0])
    rows, stats = build_rows(
        b.traj("ro", ["r1", "r2"], reward=1.0), _calls(c1, c2), RowConfig(mode="trajectory")
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["prompt_ids"] == [1, 2]
    assert row["response_ids"] == [3, 4, 7, 8, 5, 6]
    assert row["response_mask"] == [1, 1, 0, 0, 1, 1]
    assert row["behaviour_logprobs"] == [-1.0, -2.0, 0.0, 0.0, -3.0, -4.0]
    assert row["token_rewards"] == [0, 0, 0, 0, 0, 1.0]
    assert row["policy_version"] == 2
    assert not stats


def test_trajectory_mode_mismatch_starts_new_row_counted_by_cause(b):
    c1 = b.call("r1", [1, 2], [3])
    c2 = b.call("r2", [1, 9, 3, 4], [5])  # not an extension
    c3 = b.call("r3", [1], [6])  # shorter than the previous context
    c4 = b.call("r4", [1, 6, 7], [8], agent="critic")
    c5 = b.call("r5", [1, 6, 7, 8], [9], agent="critic", temperature=0.7)  # extends, but sampled at 0.7
    rows, stats = build_rows(
        b.traj("ro", ["r1", "r2", "r3", "r4", "r5"]), _calls(c1, c2, c3, c4, c5), RowConfig(mode="trajectory")
    )
    assert len(rows) == 5
    assert stats == {
        "merge_break:prefix_mismatch": 1,
        "merge_break:shorter_prompt": 1,
        "merge_break:agent_changed": 1,
        "merge_break:temperature_changed": 1,
    }
    assert [r["temperature"] for r in rows] == [1.0, 1.0, 1.0, 1.0, 0.7]


def test_selective_optimization_and_per_call_rewards_follow_skipped_calls(b):
    c1 = b.call("r1", [1], [2], agent="planner")
    c2 = b.call("r2", [1, 2, 3], [4], agent="coder")
    c3 = b.call("r3", [1, 2, 3, 4, 5], [6, 7], agent="planner")
    rewards = [
        {"name": "step", "value": 0.25, "primary": True, "request_id": "r1"},
        {"name": "step", "value": 0.5, "primary": True, "request_id": "r2"},  # coder: lands on r1's row
        {"name": "aux", "value": 9.0, "primary": False, "request_id": "r3"},  # not primary: ignored
        {"name": "step", "value": 1.0, "primary": True, "request_id": "r3"},
    ]
    cfg = RowConfig(train_agents=(re.compile("plan.*"),), reward_placement="per_call")
    rows, stats = build_rows(b.traj("ro", ["r1", "r2", "r3"], rewards=rewards), _calls(c1, c2, c3), cfg)
    assert [r["agent_name"] for r in rows] == ["planner", "planner"]
    assert [r["token_rewards"] for r in rows] == [[0.75], [0.0, 1.0]]
    assert stats == {"filtered_agent": 1}


def test_per_call_in_trajectory_mode_places_on_segment_end(b):
    c1 = b.call("r1", [1], [2, 3])
    c2 = b.call("r2", [1, 2, 3, 9], [4])
    rewards = [
        {"name": "s", "value": 0.3, "primary": True, "request_id": "r1"},
        {"name": "s", "value": 0.7, "primary": True, "request_id": "r2"},
    ]
    cfg = RowConfig(mode="trajectory", reward_placement="per_call")
    rows, _ = build_rows(b.traj("ro", ["r1", "r2"], rewards=rewards), _calls(c1, c2), cfg)
    assert rows[0]["token_rewards"] == [0.0, 0.3, 0.0, 0.7]


def test_overlong_truncate_and_drop(b):
    c1 = b.call("r1", [1, 2, 3, 4], [5, 6, 7])
    rows, stats = build_rows(
        b.traj("ro", ["r1"]), _calls(c1), RowConfig(max_prompt_tokens=2, max_response_tokens=2)
    )
    assert rows[0]["prompt_ids"] == [3, 4] and rows[0]["response_ids"] == [5, 6]
    assert rows[0]["token_rewards"] == [0.0, 1.0]
    assert stats == {"overlong:truncated": 1}
    rows, stats = build_rows(
        b.traj("ro", ["r1"]), _calls(c1), RowConfig(max_response_tokens=2, overlong="drop")
    )
    assert rows == [] and stats == {"overlong:dropped": 1}


def test_trajectory_mode_respects_response_limit_when_merging(b):
    c1 = b.call("r1", [1], [2])
    c2 = b.call("r2", [1, 2, 3], [4, 5])
    rows, stats = build_rows(
        b.traj("ro", ["r1", "r2"]), _calls(c1, c2), RowConfig(mode="trajectory", max_response_tokens=3)
    )
    assert [r["response_ids"] for r in rows] == [[2], [4, 5]]
    assert stats == {"merge_break:response_limit": 1}


def test_empty_responses_are_skipped(b):
    rows, stats = build_rows(b.traj("ro", ["r1"]), _calls(b.call("r1", [1], [])), RowConfig())
    assert rows == [] and stats == {"empty_response": 1}


def test_streams_keeps_the_logprob_temperature_of_each_call():
    req = llm_request(seed=1, response_tokens=4)  # temperature 0.7
    assert call_of(req, 1.0)["temperature"] == 0.7
    assert call_of(req, 1.0, "raw")["temperature"] == 1.0
    assert call_of(req.model_copy(update={"temperature": None}), 1.0)["temperature"] == 1.0
