"""The Faust aggregator as a real worker process on the real broker: exact batch contents."""

from __future__ import annotations

import json
import secrets
import ssl
import time
from pathlib import Path

import httpx
import pytest
import yaml

from streamrl.schemas import Reward, TrainingBatch, ValidationResult
from streamrl.schemas.claim_check import read_claim_check
from streamrl.schemas.serde import Serde
from streamrl.tls import make_dev_ca
from tests.support.kafka import TopicReader, free_port

pytestmark = pytest.mark.integration


def _rows_by_rollout(batch: TrainingBatch) -> dict[str, list]:
    out: dict[str, list] = {}
    for row in batch.rows or []:
        out.setdefault(row.rollout_id, []).append(row)
    return out


def test_transition_mode_selective_final_reward(
    streams_config, worker_factory, feed, batch_reader, wait_processed
):
    cfg = streams_config(streams={"train_agents": ["solver"]}, rl={"group_size": 2, "train_batch_size": 2})
    worker_factory(cfg)
    for g in ("taskA/0", "taskB/0"):
        for k, reward in ((0, 1.0), (1, 0.0)):
            rid = f"{g}/{k}"
            feed.call(rid, f"{rid}/c0", [1, 2], [3, 4], agent="solver", version=0)
            feed.call(rid, f"{rid}/c1", [1, 2, 3, 4, 5], [6], agent="helper", version=0, seq=1)
            feed.call(rid, f"{rid}/c2", [1, 2, 3, 4, 5, 6, 7], [8, 9], agent="solver", version=1, seq=2)
            feed.traj(rid, g, [f"{rid}/c0", f"{rid}/c1", f"{rid}/c2"], reward, group_size=2, k=k)
    feed.flush()
    batches = batch_reader.read(1, timeout_s=60)
    assert len(batches) == 1, batches
    batch = batches[0]
    assert batch.num_groups == 2 and batch.policy_name == "policy"
    assert (batch.min_policy_version, batch.max_policy_version) == (0, 1)
    rows = _rows_by_rollout(batch)
    assert sorted(rows) == ["taskA/0/0", "taskA/0/1", "taskB/0/0", "taskB/0/1"]
    for rid, rs in rows.items():
        reward = 1.0 if rid.endswith("/0") else 0.0
        assert [r.agent_name for r in rs] == ["solver", "solver"]
        assert [r.prompt_ids for r in rs] == [[1, 2], [1, 2, 3, 4, 5, 6, 7]]
        assert [r.response_ids for r in rs] == [[3, 4], [8, 9]]
        assert [r.response_mask for r in rs] == [[1, 1], [1, 1]]
        assert [r.behaviour_logprobs for r in rs] == [[-0.25, -0.25]] * 2
        assert [r.token_rewards for r in rs] == [[0.0, reward], [0.0, reward]]
        assert [r.policy_version for r in rs] == [0, 1]
        assert all(r.weight == 1.0 and r.reward == reward and r.group_id == rid.rsplit("/", 1)[0] for r in rs)
    wait_processed()
    assert batch_reader.read_to_end() == batches  # nothing more


def test_trajectory_mode_masks_per_call_rewards_and_claim_check(
    streams_config, worker_factory, feed, batch_reader
):
    cfg = streams_config(
        streams={"row_mode": "trajectory", "reward_placement": "per_call", "claim_check_bytes": 200},
        rl={"group_size": 2, "train_batch_size": 1},
    )
    worker_factory(cfg)
    g = "taskT/0"
    for k in (0, 1):
        rid = f"{g}/{k}"
        feed.call(rid, f"{rid}/c0", [1, 2], [3, 4])
        feed.call(rid, f"{rid}/c1", [1, 2, 3, 4, 7, 7], [5], seq=1)
        feed.call(rid, f"{rid}/c2", [1, 9], [6], seq=2)  # not an extension: a new row
        rewards = [
            Reward(name="step", value=0.5, primary=True, request_id=f"{rid}/c0"),
            Reward(name="final", value=float(k), primary=True, request_id=f"{rid}/c2"),
        ]
        feed.traj(
            rid, g, [f"{rid}/c0", f"{rid}/c1", f"{rid}/c2"], float(k), group_size=2, k=k, rewards=rewards
        )
    feed.flush()
    [batch] = batch_reader.read(1, timeout_s=60)
    assert batch.rows is None and batch.claim_check is not None
    assert batch.claim_check.uri.startswith("file://") and batch.claim_check.num_rows == 4
    rows = read_claim_check(batch, Serde())
    for k in (0, 1):
        merged, single = [r for r in rows if r.rollout_id == f"{g}/{k}"]
        assert merged.prompt_ids == [1, 2]
        assert merged.response_ids == [3, 4, 7, 7, 5]
        assert merged.response_mask == [1, 1, 0, 0, 1]
        assert merged.behaviour_logprobs == [-0.25, -0.25, 0.0, 0.0, -0.25]
        assert merged.token_rewards == [0.0, 0.5, 0.0, 0.0, 0.0]
        assert (
            single.prompt_ids == [1, 9] and single.response_ids == [6] and single.token_rewards == [float(k)]
        )


def test_rows_keep_their_version_and_validation_table(
    settings, streams_config, worker_factory, feed, batch_reader, wait_processed, tmp_path: Path
):
    """Streams batches rows at the version that served them, however old: the trainer, which
    alone knows the true version, applies the staleness policy (``rl.staleness_policy``).
    Validation counts every val rollout, failed and timed-out ones as 0 (but an infrastructure
    failure, which says nothing of the policy), publishes the figures on the ``validation`` topic
    and writes the same figures to validation.json and the web endpoint, served over HTTPS
    (``streams.web_tls``) to a client that sends ``security.metrics_token``: 401 without it, no answer
    over plain HTTP."""
    port = free_port()
    tls = make_dev_ca(tmp_path / "tls")
    cfg = streams_config(
        streams={
            "web_port": port,
            "web_tls": {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)},
        },
        rl={"group_size": 2, "train_batch_size": 1, "max_staleness": 1},
    )
    token = secrets.token_urlsafe(16)
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), "security": {"metrics_token": token}}))
    worker_factory(cfg)
    feed.checkpoint(3)
    g = "taskS/0"
    feed.rollout(g, 0, 1.0, group_size=2, version=1)
    feed.rollout(g, 1, 0.0, group_size=2, version=2)
    for k, reward in enumerate((1.0, 0.0, 0.5)):
        rid = f"val/3/v{k}/0"
        feed.call(rid, f"{rid}/c0", [1], [2], version=3)
        feed.traj(rid, f"val/3/v{k}", [f"{rid}/c0"], reward, group_size=1, mode="val", version=3)
    feed.traj("val/3/v3/0", "val/3/v3", [], 0.0, group_size=1, mode="val", status="failed", version=3)
    feed.traj("val/3/v4/0", "val/3/v4", [], 0.0, group_size=1, mode="val", status="timeout", version=3)
    feed.traj(  # the inference service was down: not counted (the sampler re-issues it)
        "val/3/v5/0", "val/3/v5", [], 0.0, group_size=1, mode="val", status="failed", version=3,
        failure_kind="infrastructure",
    )  # fmt: skip
    feed.call("val/3/v4/0", "val/3/v4/0/c0", [1], [2], attempt="a2", version=3)  # re-issued: succeeds
    feed.traj(
        "val/3/v4/0", "val/3/v4", ["val/3/v4/0/c0"], 1.0, group_size=1, attempt="a2", mode="val", version=3
    )
    feed.flush()
    [batch] = batch_reader.read(1, timeout_s=60)
    assert [(r.rollout_id, r.policy_version, r.weight) for r in batch.rows] == [
        (f"{g}/0", 1, 1.0),
        (f"{g}/1", 2, 1.0),
    ]
    wait_processed()
    with TopicReader(settings, "validation", ValidationResult) as reader:
        records = reader.read_until(lambda r: bool(r) and (r[-1].count, r[-1].succeeded) == (5, 4))
        records = reader.read_to_end()
        assert {m.key() for m in reader.messages} == {b"policy/3"}
    latest = records[-1]
    assert (latest.count, latest.succeeded, latest.failed, latest.timed_out) == (5, 4, 1, 0)
    assert abs(latest.mean - (1.0 + 0.0 + 0.5 + 0.0 + 1.0) / 5) < 1e-12
    assert (latest.min, latest.max) == (0.0, 1.0)
    expected = latest.model_dump(mode="json", exclude={"schema_version", "policy_name", "policy_version"})
    path = tmp_path / "state" / "validation.json"
    summary, deadline = None, time.monotonic() + 30
    while summary != expected and time.monotonic() < deadline:  # rewritten on the tick after a change
        summary = json.loads(path.read_text()).get("3") if path.exists() else None
        time.sleep(0.3)
    assert summary == expected
    page, ca = f"127.0.0.1:{port}/streamrl/validation/", ssl.create_default_context(cafile=tls.ca_file)
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port: no answer
        httpx.get(f"http://{page}", timeout=10)
    denied = httpx.get(f"https://{page}", verify=ca, timeout=10)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
    auth = {"Authorization": f"Bearer {token}"}
    served = httpx.get(f"https://{page}", verify=ca, headers=auth, timeout=10).json()
    assert served["3"] == summary


def _events(port: int) -> dict[str, float]:
    """``streamrl_streams_events_total`` by kind, scraped from the worker's metrics endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "streamrl_streams_events"
        for s in family.samples
        if s.name == "streamrl_streams_events_total"
    }


def test_straggler_timeout_trains_finished_rollouts(
    streams_config, worker_factory, feed, batch_reader, wait_processed
):
    port = free_port()
    cfg = streams_config(
        streams={
            "straggler_timeout_s": 2.0,
            "min_group_size": 2,
            "batch_timeout_s": 1.0,
            "metrics_port": port,
        },
        rl={"group_size": 4, "train_batch_size": 2},
    )
    worker_factory(cfg)
    feed.rollout("taskG/0", 0, 1.0, group_size=4)
    feed.rollout("taskG/0", 1, 0.0, group_size=4)
    feed.rollout("taskH/0", 0, 1.0, group_size=4)  # below min_group_size: dropped
    feed.flush()
    [batch] = batch_reader.read(1, timeout_s=60)
    assert batch.num_groups == 1
    assert sorted(r.rollout_id for r in batch.rows) == ["taskG/0/0", "taskG/0/1"]
    deadline = time.monotonic() + 30
    while (events := _events(port)).get("straggler:dropped", 0) < 1:  # taskH's straggler decision
        assert time.monotonic() < deadline, f"taskH never dropped by the straggler timeout: {events}"
        time.sleep(0.2)  # polling the worker's state
    assert events.get("straggler:trained") == 1 and events.get("straggler_rollouts_dropped") == 1, events
    wait_processed()  # and everything it caused is in the log: no second batch
    assert batch_reader.read_to_end() == [batch]
