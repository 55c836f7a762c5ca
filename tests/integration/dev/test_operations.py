"""Operations against one real short ``streamrl dev`` run (the demo task, ``dev.metrics`` on) on the
session broker, watched by a real Prometheus (Debian's ``prometheus``) through the run's file_sd
targets:

1. ``streamrl status`` while it runs: lag per group and topic, policy version, rollouts, last
   checkpoint, staleness (an undecodable sample is injected at the start, so the run dead-letters
   one record);
2. every PromQL expression of the Grafana dashboard returns data over the run (``query_range``),
   except the panels fed by exporters a cluster brings (dcgm-exporter, node-exporter);
3. ``streamrl status`` once it stopped says so, with what the run reached (= its summary.json);
plus clear errors for a cluster without the pipeline and an unreachable one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from streamrl.config import load_settings
from streamrl.dev.rundir import free_port
from streamrl.dev.status import PipelineStatus, StatusReader
from streamrl.kafka import client_config, make_admin
from tests.support.processes import sigint_default

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "compose" / "helm" / "streamrl" / "dashboards" / "streamrl.json"
#: Metric prefixes of exporters a cluster runs beside StreamRL (not part of a StreamRL run).
EXTERNAL = {"DCGM_": "NVIDIA dcgm-exporter", "node_": "Prometheus node-exporter"}


@dataclass
class Run:
    proc: subprocess.Popen[str]
    run_dir: Path
    env: dict[str, str]
    prometheus: str
    """Base URL of the Prometheus scraping the run."""
    prom_started: float
    """Wall clock (s since the epoch) when Prometheus started scraping."""
    log: Path


def _wait(pred: Any, timeout_s: float, what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the dev run exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Run]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (.ci/run installs Debian's prometheus package)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("ops")
    config = {
        "rl": {"group_size": 2, "train_batch_size": 2},
        "dev": {
            "run_root": str(tmp / "runs"), "run_id": "r", "metrics": True, "max_steps": 4,
            "final_val_timeout_s": 60, "display": "plain", "plain_every_s": 5, "timeout_s": 900,
            "model": {"path": str(tmp / "model"), "max_chars": 20_000},
            "datasets": [
                {"path": str(ROOT / "examples/max_digit/data/train.jsonl"), "split": "train", "limit": 6},
                {"path": str(ROOT / "examples/max_digit/data/val.jsonl"), "split": "val", "limit": 2},
            ],
        },
        "sampler": {"val_every": 1, "val_at_start": True},
        "streams": {"filter_zero_variance": False},
        "worker": {"agent": "examples.max_digit.agent:solve", "sampling": {"max_tokens": 1}},
        "trainer": {"save_every": 1, "max_steps": 4},
        "topics": {"prefix": f"t{uuid.uuid4().hex[:10]}."},  # run_id "r": apart from other runs
    }  # fmt: skip
    cfg = tmp / "dev.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(ROOT)}
    env.pop("STREAMRL_TOPIC_PREFIX", None)
    log = tmp / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrl.cli", "dev", "-c", str(cfg)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    prom = None
    try:
        run_dir = tmp / "runs" / "r"
        targets = run_dir / "prometheus-targets.json"
        _wait(targets.exists, 240, "the run's prometheus-targets.json", proc)
        port = free_port()
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {"job_name": "streamrl", "file_sd_configs": [{"files": [str(targets)]}]}
                    ],
                }
            )
        )
        prom_log = (tmp / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=prom_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200
            except OSError:
                return False

        _wait(ready, 60, "Prometheus to be ready")
        # a record no worker can decode, as early as the topic exists, so the run dead-letters it while
        # Prometheus scrapes for long enough (a counter series needs two scrapes for rate())
        settings = load_settings(run_dir / "config.yaml", kafka={"bootstrap_servers": kafka_bootstrap})
        admin = make_admin(settings)
        samples = settings.topics.name("samples")
        _wait(lambda: samples in admin.list_topics(timeout=5).topics, 120, "the samples topic", proc)
        producer = Producer(client_config(settings))
        producer.produce(samples, b"not an avro record", key=b"garbage")
        assert producer.flush(10) == 0
        yield Run(proc, run_dir, env, url, time.time(), log)
    finally:
        if proc.poll() is None:  # SIGTERM: dev stops its children (SIGKILL would orphan them)
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if prom is not None:
            prom.terminate()
            prom.wait(30)


def _status_cli(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "status", "-c", str(config), *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_status_while_the_pipeline_runs(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", run.env["STREAMRL_BOOTSTRAP_SERVERS"])
    settings = load_settings(run.run_dir / "config.yaml")
    reader = StatusReader(settings, window_s=60)
    try:

        def running_with_a_checkpoint() -> PipelineStatus | None:
            try:
                st = reader.refresh()
            except Exception:  # the topics are not there yet
                return None
            ok = st.state == "running" and st.policy_version >= 1 and st.last_checkpoint
            return st if ok else None

        # generous: on a loaded 2-core machine the model build and start-up alone took 4 min
        st = _wait(running_with_a_checkpoint, 600, "status to show the run with a checkpoint", run.proc)
    finally:
        reader.close()
    stages = {g["stage"]: g for g in st.groups}
    assert stages["workers"]["members"] >= 1 and "samples" in stages["workers"]["lag"]
    assert {"requests", "trajectories"} <= set(stages["streams"]["lag"])
    assert st.rollouts.get("succeeded", 0) > 0 and st.rollouts_per_s > 0
    assert st.samples >= st.rollouts["succeeded"]
    assert (
        st.last_checkpoint["version"] == st.policy_version and "actor/loss" in st.last_checkpoint["metrics"]
    )
    assert st.staleness is not None and 0 <= st.staleness["mean"] <= st.staleness["max"]
    assert st.verdict.startswith("RUNNING") and st.complete


def _query_range(url: str, expr: str, start: float, end: float) -> list[float]:
    q = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "2"})
    body = json.loads(urllib.request.urlopen(f"{url}/api/v1/query_range?{q}", timeout=30).read())
    assert body["status"] == "success", body
    values = [float(v) for series in body["data"]["result"] for _, v in series["values"]]
    return [v for v in values if v == v and abs(v) != float("inf")]  # finite samples


def test_every_dashboard_query_returns_data_from_the_run(run: Run) -> None:
    run.proc.wait(timeout=600)
    assert run.proc.returncode == 0, run.log.read_text()[-4000:]
    dash = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    end = time.time()
    empty, skipped = [], []
    for title, expr in exprs:
        external = [name for prefix, name in EXTERNAL.items() if prefix in expr]
        if external:
            skipped.append(f"{title}: {external[0]}")
            continue
        if not _query_range(run.prometheus, expr, run.prom_started, end):
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data from the run:\n" + "\n".join(empty)
    assert len(exprs) - len(skipped) >= 35 and len(skipped) == 4, skipped
    print(f"{len(exprs) - len(skipped)} dashboard queries returned data; not run here: {skipped}")


def test_status_once_the_pipeline_stopped(run: Run) -> None:
    if run.proc.poll() is None:
        run.proc.wait(timeout=600)
    done = _status_cli(run.run_dir / "config.yaml", run.env, "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert st["state"] == "stopped" and st["verdict"].startswith("STOPPED"), st["verdict"]
    assert st["policy_version"] >= 4 and st["last_checkpoint"]["version"] == st["policy_version"]
    assert st["val"]["version"] == summary["version_last"] and st["val"]["reward"] == summary["reward_last"]
    assert st["dead_lettered"] == summary["dlq"] >= 1 and st["rollouts"] == summary["status"]
    # the summary says which stage dead-lettered what, and why (the injected undecodable sample)
    assert any(kind.startswith("worker ") for kind in summary["dead_letters"]), summary["dead_letters"]
    assert any("cannot decode Sample" in r for r in summary["dead_letter_reasons"]), summary
    assert st["samples"] == summary["samples"]
    assert st["group_outcomes"].get("batched", 0) >= st["batches"] >= 4  # train_batch_size groups per batch
    screen = _status_cli(run.run_dir / "config.yaml", run.env)
    assert screen.returncode == 0 and "STOPPED" in screen.stdout and "policy version" in screen.stdout
    # --watch --json: one object per reading until Ctrl-C, which ends it cleanly
    watch = subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "status", "-c", str(run.run_dir / "config.yaml"),
         "--watch", "--json", "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run.env, cwd=ROOT,
        preexec_fn=sigint_default,
    )  # fmt: skip
    try:
        readings = [json.loads(watch.stdout.readline()) for _ in range(3)]
    finally:
        watch.send_signal(signal.SIGINT)
        rc = watch.wait(30)
    assert rc == 0 and [r["state"] for r in readings] == ["stopped"] * 3
    assert (
        len({r["read_at"] for r in readings}) == 3 and readings[-1]["policy_version"] == st["policy_version"]
    )


def test_status_names_a_missing_pipeline(kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = tmp_path / "other.yaml"
    cfg.write_text("topics: {prefix: no-such-pipeline.}\n")
    proc = _status_cli(cfg, {"STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "no StreamRL topics with prefix 'no-such-pipeline.'" in proc.stderr


def test_status_without_the_runs_config_names_the_runs_that_are_there(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a demo, ``streamrl status`` with the default prefix finds no pipeline: it names the
    runs' prefixes on the cluster and how to read each (its run directory's config.yaml when here)."""
    from streamrl.topics import ensure_topics

    monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", kafka_bootstrap)
    stem = f"u{uuid.uuid4().hex[:8]}."
    runs = tmp_path / "runs"
    (runs / "r1").mkdir(parents=True)
    (runs / "r1" / "config.yaml").write_text(f"topics: {{prefix: {stem}r1.}}\n")
    for prefix in (f"{stem}r1.", f"{stem}elsewhere."):
        ensure_topics(load_settings(None, topics={"prefix": prefix}))
    cfg = tmp_path / "user.yaml"
    cfg.write_text(f"topics: {{prefix: {stem}}}\ndev: {{run_root: {runs}}}\n")
    proc = _status_cli(cfg, {"STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert f"no StreamRL topics with prefix '{stem}'" in proc.stderr
    assert f"{stem}r1.* (streamrl status -c {runs / 'r1' / 'config.yaml'})" in proc.stderr, proc.stderr
    assert f"{stem}elsewhere.* (STREAMRL_TOPIC_PREFIX={stem}elsewhere. streamrl status)" in proc.stderr


def test_status_names_an_unreachable_cluster(tmp_path: Path) -> None:
    cfg = tmp_path / "down.yaml"
    cfg.write_text("kafka: {bootstrap_servers: '127.0.0.1:1'}\n")
    proc = _status_cli(cfg, {"PATH": "/usr/bin:/bin"}, "--timeout", "3")
    assert proc.returncode == 1 and "cannot reach Kafka at 127.0.0.1:1" in proc.stderr
