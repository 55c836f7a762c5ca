"""summary.json / reward.png / text summary, and the run directory's effective config."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from streamrl.config import load_settings
from streamrl.dev.report import format_summary, plot_rewards, write_summary
from streamrl.dev.rundir import deep_merge, run_overrides, write_config


def test_summary_and_plot_are_written(tmp_path: Path) -> None:
    summary = {"reward_first": 0.1, "reward_last": 0.7, "version_first": 0, "version_last": 20,
               "distinct_answers_last": 8, "top_answers_last": [["9", 20]], "versions": 20, "rollouts": 5000,
               "wall_s": 600.0, "dlq": 0, "val_tasks": 104, "missing_trajectories": 0}  # fmt: skip
    path = write_summary(tmp_path / "run" / "summary.json", summary)
    assert json.loads(path.read_text()) == summary
    png = plot_rewards(tmp_path / "run" / "reward.png", {0: 0.05, 1: 0.2, 2: 0.4}, {0: 0.1, 2: 0.7})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    empty = plot_rewards(tmp_path / "empty.png", {}, {})
    assert empty.read_bytes()[:4] == b"\x89PNG"
    text = format_summary(summary, tmp_path, "completed")
    assert "0.100 at version 0 → 0.700 at version 20" in text
    assert "distinct greedy val answers at the last version: 8  ['9'×20, +7 more]" in text
    answers = [[str(d), 10 - d] for d in range(7)]  # 7 distinct: 5 shown and how many more
    seven = format_summary({**summary, "distinct_answers_last": 7, "top_answers_last": answers})
    assert "7  ['0'×10, '1'×9, '2'×8, '3'×7, '4'×6, +2 more]" in seven
    five = format_summary({**summary, "distinct_answers_last": 5, "top_answers_last": answers[:5]})
    assert "5  ['0'×10, '1'×9, '2'×8, '3'×7, '4'×6]" in five
    long = format_summary({**summary, "distinct_answers_last": 1, "top_answers_last": [["x" * 100, 3]]})
    assert f"['{'x' * 39}…'×3]" in long
    dead = format_summary(
        {
            **summary,
            "dlq": 2,
            "dead_letters": {"trainer BadBatchError": 2},
            "dead_letter_reasons": ["a", "stale"],
        }
    )
    assert "dead letters: trainer BadBatchError 2; the last: stale" in dead
    assert "dead letters" not in text
    stopped = format_summary({**summary, "status": {"succeeded": 20, "interrupted": 4}})
    assert "rollouts: 5000 (4 interrupted by the stop, 20 succeeded)" in stopped
    mixed = format_summary({**summary, "group_outcomes": {"batched": 30, "dropped:zero_variance": 4}})
    assert "groups: 30 batched, 4 dropped (zero_variance 4)" in mixed and "nothing was trained" not in mixed
    flat = format_summary({**summary, "versions": 0, "group_outcomes": {"dropped:zero_variance": 12}})
    assert "groups: 0 batched, 12 dropped (zero_variance 12)" in flat
    assert "nothing was trained: every rollout of each group got the same reward" in flat


def test_deep_merge_does_not_touch_its_inputs() -> None:
    base = {"a": {"b": 1, "c": [1]}, "x": 1}
    over = {"a": {"b": 2}, "y": {"z": 3}}
    out = deep_merge(base, over)
    assert out == {"a": {"b": 2, "c": [1]}, "x": 1, "y": {"z": 3}}
    assert base == {"a": {"b": 1, "c": [1]}, "x": 1}


def test_run_overrides_make_a_valid_run_local_config(tmp_path: Path) -> None:
    settings = load_settings(None, dev={"model": {"path": "m/x"}})
    run_dir = tmp_path / "runs" / "r1"
    over = run_overrides(settings, run_dir, bootstrap="127.0.0.1:1234", run_id="r1", inference_port=4321)
    assert over["kafka"] == {"bootstrap_servers": "127.0.0.1:1234"}
    assert over["topics"] == {"prefix": "streamrl.r1."}
    assert over["inference"] == {"model": "m/x", "port": 4321}
    assert over["gateway"] == {"upstream_url": "http://127.0.0.1:4321/v1"}
    assert over["trainer"]["model_path"] == "m/x"
    assert over["trainer"]["checkpoint_dir"] == str(run_dir / "checkpoints")
    assert over["streams"] == {
        "state_dir": str(run_dir / "streams"),
        "blob_dir": str(run_dir / "blobs"),
        "instance_id": "r1-streams",  # static group membership: a restart rejoins at once
    }
    path = write_config(run_dir / "config.yaml", deep_merge({"rl": {"group_size": 4}}, over))
    s = load_settings(path)
    assert s.topics.name("samples") == "streamrl.r1.samples" and s.rl.group_size == 4
    assert yaml.safe_load(path.read_text())["inference"]["port"] == 4321


def test_the_gateway_follows_the_inference_port_without_free_ports(tmp_path: Path) -> None:
    """``inference.port`` changed, ``gateway.upstream_url`` left at its default (a copied example
    writes it out): the workers call the server this run starts, not port 8000."""
    settings = load_settings(None, dev={"free_ports": False}, inference={"port": 8100})
    over = run_overrides(settings, tmp_path, bootstrap=None, run_id="r", inference_port=None)
    assert over["gateway"] == {"upstream_url": "http://127.0.0.1:8100/v1"}
    pinned = load_settings(
        None,
        dev={"free_ports": False},
        inference={"port": 8100},
        gateway={"upstream_url": "http://gpu-box:8000/v1"},
    )
    assert "gateway" not in run_overrides(pinned, tmp_path, bootstrap=None, run_id="r", inference_port=None)


def test_user_choices_are_kept(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        dev={"fresh_topics": False},
        inference={"model": "/models/real"},
        trainer={"checkpoint_dir": "/ckpt"},
    )
    over = run_overrides(settings, tmp_path, bootstrap=None, run_id="r", inference_port=None)
    assert "kafka" not in over and "topics" not in over and "gateway" not in over
    assert "inference" not in over
    assert over["trainer"] == {"model_path": "models/tiny-char"}


def test_dev_metrics_gives_every_child_a_port_and_writes_prometheus_targets(tmp_path: Path) -> None:
    from streamrl.dev.rundir import metrics_ports, write_prometheus_targets
    from streamrl.dev.runner import child_specs

    settings = load_settings(None, dev={"workers": 2, "metrics": True}, trainer={"metrics_port": 9999})
    ports = metrics_ports(settings)
    assert set(ports) == {"sampler", "streams", "trainer", "worker-0", "worker-1"}
    assert ports["trainer"] == 9999 and len(set(ports.values())) == 5
    over = run_overrides(settings, tmp_path, bootstrap=None, run_id="r", inference_port=4321, metrics=ports)
    path = write_config(tmp_path / "config.yaml", deep_merge({"dev": {"workers": 2}}, over))
    run = load_settings(path)
    assert (run.sampler.metrics_port, run.streams.metrics_port, run.trainer.metrics_port) == (
        ports["sampler"], ports["streams"], 9999,
    )  # fmt: skip
    workers = [s for s in child_specs(run, path, ports) if s.name.startswith("worker-")]
    assert [int(s.env["STREAMRL_WORKER__METRICS_PORT"]) for s in workers] == [
        ports["worker-0"],
        ports["worker-1"],
    ]
    groups = json.loads(write_prometheus_targets(tmp_path / "t.json", ports, 4321).read_text())
    jobs = {g["labels"]["child"]: (g["labels"]["job"], g["targets"][0]) for g in groups}
    assert jobs["worker-1"] == ("worker", f"127.0.0.1:{ports['worker-1']}")
    assert jobs["inference"] == ("inference", "127.0.0.1:4321")
