"""The run plan of ``streamrl dev``: which children, in which order, with which command lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamrl.config import load_settings
from streamrl.dev.runner import (
    STOP_ORDER_PREFIXES,
    _child_env,
    _report_published,
    child_specs,
    exit_text,
    publish_specs,
    run_dev,
)
from streamrl.errors import ConfigError


def test_children_in_start_order_with_the_run_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    s = load_settings(None, dev={"workers": 3})
    specs = child_specs(s, cfg, run_id="r1")
    assert [c.name for c in specs] == [
        "inference",
        "trainer",
        "streams",
        "worker-0",
        "worker-1",
        "worker-2",
        "sampler",
    ]
    for c in specs:
        assert c.argv[:3] == [sys.executable, "-m", "streamrl.cli"]
        assert c.argv[-2:] == ["--config", str(cfg)]
    assert {c.name for c in specs if c.may_exit} == {"trainer", "sampler"}
    # stable, distinct worker ids: static group membership, so a restarted worker rejoins at once
    ids = [c.argv[c.argv.index("--worker-id") + 1] for c in specs if c.name.startswith("worker")]
    assert ids == ["r1-worker-0", "r1-worker-1", "r1-worker-2"]
    # every child has a place in the stop order
    assert all(any(c.name.startswith(p) for p in STOP_ORDER_PREFIXES) for c in specs)
    no_inference = child_specs(load_settings(None, dev={"start_inference": False, "workers": 0}), cfg)
    assert [c.name for c in no_inference] == ["trainer", "streams", "sampler"]


def test_publish_commands(tmp_path: Path) -> None:
    s = load_settings(
        None,
        dev={
            "datasets": [
                {"path": "a.jsonl"},
                {"path": "b.jsonl", "split": "val", "limit": 5, "id_field": "id"},
            ]
        },
    )
    a, b = publish_specs(s, tmp_path / "c.yaml")
    assert a.argv[3:] == ["publish", "a.jsonl", "--split", "train", "--config", str(tmp_path / "c.yaml")]
    assert b.argv[-4:] == ["--limit", "5", "--id-field", "id"] and b.name == "publish-1-val" and b.may_exit


def test_child_env_puts_pythonpath_first_and_adds_dev_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    s = load_settings(None, dev={"pythonpath": [str(tmp_path)], "env": {"OMP_NUM_THREADS": "1"}})
    env = _child_env(s)
    assert env["PYTHONPATH"].split(":") == [str(tmp_path.resolve()), "/already/there"]
    assert env["OMP_NUM_THREADS"] == "1"


def test_children_get_the_runs_topic_prefix_not_the_environments(monkeypatch: pytest.MonkeyPatch) -> None:
    # STREAMRL_TOPIC_PREFIX would win over the run's <prefix><run_id>. in config.yaml: every run
    # started from that environment would share one set of topics
    monkeypatch.setenv("STREAMRL_TOPIC_PREFIX", "team.")
    assert "STREAMRL_TOPIC_PREFIX" not in _child_env(load_settings(None))
    kept = _child_env(load_settings(None, dev={"fresh_topics": False}))
    assert kept["STREAMRL_TOPIC_PREFIX"] == "team."


def test_missing_dataset_is_a_config_error_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dev.datasets\[0\].path: .*nope.jsonl does not exist"):
        run_dev(Path("/dev/null"), overrides={"dev": {"datasets": [{"path": str(tmp_path / "nope.jsonl")}]}})


def test_exit_codes_in_words_sigterm_from_the_stop_is_stopped() -> None:
    assert [exit_text(c) for c in (0, -15, -9, 1, None)] == [
        "exited 0",
        "stopped",
        "killed by SIGKILL",
        "exit 1",
        "not reaped",
    ]


def test_the_publish_report_line_is_shown_and_points_at_skipped_rows(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    clean, dirty = tmp_path / "publish-train.log", tmp_path / "publish-val.log"
    clean.write_text(
        "published 3 task(s) to t.tasks (train); skipped 0 duplicate(s), 0 invalid; 3 rows in 0.10 s (30 rows/s)\n"
    )
    dirty.write_text(
        "  val.jsonl line 2: not JSON\n"
        "published 1 task(s) to t.tasks (val); skipped 1 duplicate(s), 1 invalid; 3 rows in 0.10 s (30 rows/s)\n"
    )
    out = StringIO()
    console = Console(file=out, width=300)
    for log in (clean, dirty, tmp_path / "missing.log"):
        _report_published(console, log)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  " + clean.read_text().strip()
    assert lines[1].startswith("  published 1 task(s)") and lines[1].endswith(f"(the rows: {dirty})")
    assert len(lines) == 2


def test_the_model_is_built_in_a_child_process_and_its_failure_said(tmp_path: Path) -> None:
    """dev builds a missing model in a child (torch stays out of dev's memory for the whole run)
    and shows its lines; a failed build is one error with the child's last lines."""
    from io import StringIO

    from rich.console import Console

    from streamrl.dev.runner import ensure_model
    from streamrl.errors import StreamRLError

    out = StringIO()
    console = Console(file=out, width=200)
    before = set(sys.modules)
    s = load_settings(None, dev={"model": {"path": str(tmp_path / "m"), "max_chars": 2000}})
    ensure_model(s, console)
    assert (tmp_path / "m" / "config.json").is_file()
    assert "  model: " in out.getvalue() and "parameters, vocabulary" in out.getvalue(), out.getvalue()
    assert not {"torch", "transformers"} & (set(sys.modules) - before)  # not imported here
    bad = load_settings(
        None, dev={"model": {"path": str(tmp_path / "b"), "text": [str(tmp_path / "none.txt")]}}
    )
    with pytest.raises(
        StreamRLError, match=r"building the model into .* failed \(exit code 1\); its last lines:"
    ):
        ensure_model(bad, console)
