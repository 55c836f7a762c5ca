"""``streamrl status`` against a real short ``streamrl dev`` run on the session broker: while it runs
(lag per group and topic, policy version, rollouts, last checkpoint, staleness, val reward) and after
it stopped (it says so), and a clear error for a cluster without the pipeline's topics."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrl.config import load_settings
from streamrl.dev.status import PipelineStatus, StatusReader

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _status_cli(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "status", "-c", str(config), *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_status_of_a_running_and_a_stopped_pipeline(
    dev_config: Callable[..., tuple[Path, dict[str, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, env = dev_config(
        dev={
            "max_steps": 3,
            "final_val_timeout_s": 60,
            "datasets": [
                {"path": str(ROOT / "examples/max_digit/data/train.jsonl"), "split": "train", "limit": 4},
                {"path": str(ROOT / "examples/max_digit/data/val.jsonl"), "split": "val", "limit": 2},
            ],
        },
        sampler={"val_every": 1, "val_at_start": True},
        streams={"filter_zero_variance": False},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "dev", "-c", str(path)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    run_config = tmp_path / "runs" / "r" / "config.yaml"
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 240
        while not run_config.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.5)
        monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", env["STREAMRL_BOOTSTRAP_SERVERS"])
        reader = StatusReader(load_settings(run_config), window_s=60)
        seen: PipelineStatus | None = None
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    st = reader.refresh()
                except Exception:  # topics not created yet
                    time.sleep(1)
                    continue
                if st.state == "running" and st.policy_version >= 1 and st.last_checkpoint:
                    seen = st
                    break
                time.sleep(1)
        finally:
            reader.close()
        assert seen is not None, "status never showed the run with a checkpoint"
        stages = {g["stage"]: g for g in seen.groups}
        assert stages["workers"]["members"] >= 1 and "samples" in stages["workers"]["lag"]
        assert {"requests", "trajectories"} <= set(stages["streams"]["lag"])
        assert seen.rollouts.get("succeeded", 0) > 0 and seen.rollouts_per_s > 0
        assert seen.samples >= seen.rollouts["succeeded"]
        assert seen.last_checkpoint["version"] == seen.policy_version
        assert "actor/loss" in seen.last_checkpoint["metrics"]
        assert seen.staleness is not None and 0 <= seen.staleness["mean"] <= seen.staleness["max"]
        assert seen.verdict.startswith("RUNNING")
        print(f"status saw version {seen.policy_version} {time.monotonic() - started:.0f} s after start")
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    finally:
        if proc.poll() is None:  # SIGTERM: dev stops its children (SIGKILL would orphan them)
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # the same pipeline, stopped: it says so, with what it reached
    done = _status_cli(run_config, env, "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    assert st["state"] == "stopped" and st["verdict"].startswith("STOPPED"), st["verdict"]
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert st["policy_version"] >= 3 and st["last_checkpoint"]["version"] == st["policy_version"]
    assert st["val"]["version"] == summary["version_last"] and st["val"]["reward"] == summary["reward_last"]
    assert st["dead_lettered"] == summary["dlq"] and st["rollouts"] == summary["status"]
    assert st["samples"] == summary["samples"]
    screen = _status_cli(run_config, env)
    assert screen.returncode == 0 and "STOPPED" in screen.stdout and "policy version" in screen.stdout


def test_status_names_a_missing_pipeline(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = tmp_path / "other.yaml"
    cfg.write_text("topics: {prefix: no-such-pipeline.}\n")
    env = {"STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PATH": "/usr/bin:/bin"}
    proc = _status_cli(cfg, env)
    assert proc.returncode == 1
    assert "no StreamRL topics with prefix 'no-such-pipeline.'" in proc.stderr


def test_status_names_an_unreachable_cluster(tmp_path: Path) -> None:
    cfg = tmp_path / "down.yaml"
    cfg.write_text("kafka: {bootstrap_servers: '127.0.0.1:1'}\n")
    proc = _status_cli(cfg, {"PATH": "/usr/bin:/bin"}, "--timeout", "3")
    assert proc.returncode == 1 and "cannot reach Kafka at 127.0.0.1:1" in proc.stderr
