"""compose/: every service, image, command and port checked against the CLI, the config and Prometheus.

The file is also validated by the real Docker Compose v2 parser (``docker compose config``, built from
its Go module by ``tools/deploy_tools.py``; no Docker daemon needed).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrl.config import load_settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"


def _compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def test_services_images_and_profiles() -> None:
    services = _compose()["services"]
    expected = {"kafka", "topics", "publish", "publish-val", "model", "inference", "inference-cpu", "sampler",
                "worker", "streams", "trainer", "trainer-cpu", "prometheus", "grafana"}  # fmt: skip
    assert set(services) == expected
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["inference"]["build"]["dockerfile"] == "compose/Dockerfile.vllm"
    assert "FROM vllm/vllm-openai:" in (COMPOSE / "Dockerfile.vllm").read_text()
    for name in ("inference", "trainer"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and services[name]["profiles"] == ["gpu"]
    assert services["inference-cpu"]["networks"]["default"]["aliases"] == ["inference"]
    # `--scale worker=N` needs a worker without a fixed name or host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_every_command_is_a_real_cli_command(cli_command: Callable[[list[str]], Any]) -> None:
    services = _compose()["services"]
    checked = 0
    for svc in services.values():
        if svc.get("command", [None])[0] != "streamrl":
            continue
        cmd = cli_command(svc["command"])
        assert cmd.name == svc["command"][-1] or cmd.name in svc["command"]
        checked += 1
    assert checked == 11
    with pytest.raises(Exception, match="No such option"):
        cli_command(["streamrl", "worker", "--no-such-option"])
    with pytest.raises(AssertionError, match="no command"):
        cli_command(["streamrl", "no-such-command"])
    with pytest.raises(Exception, match=r"valid integer"):
        cli_command(["streamrl", "inference", "--port", "eighty"])


def test_config_ports_and_prometheus_targets_agree() -> None:
    settings = load_settings(COMPOSE / "streamrl.yaml")
    services = _compose()["services"]
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert "9092:9092" in services["kafka"]["ports"]
    port = settings.inference.port
    for name in ("inference", "inference-cpu"):
        assert f"{port}:{port}" in services[name]["ports"]
        cmd = services[name]["command"]
        assert cmd[cmd.index("--port") + 1] == str(port)
    assert settings.gateway.upstream_url == f"http://inference:{port}/v1"
    assert settings.trainer.checkpoint_dir.parent == Path(
        "/data"
    )  # shared `data` volume: trainer -> inference
    prom = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    targets: dict[str, set[str]] = {}
    for job in prom["scrape_configs"]:
        found = {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        found |= {f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
        targets[job["job_name"]] = found
    assert targets["sampler"] == {f"sampler:{settings.sampler.metrics_port}"}
    assert targets["worker"] == {f"worker:{settings.worker.metrics_port}"}
    assert targets["streams"] == {f"streams:{settings.streams.metrics_port}"}
    assert f"trainer:{settings.trainer.metrics_port}" in targets["trainer"]
    assert targets["inference"] == {f"inference:{port}"}
    assert str(settings.worker.metrics_port) in services["worker"]["expose"]
    # files the services mount or run exist
    for rel in ("examples/gsm8k/data/train.jsonl", "examples/gsm8k/data/test.jsonl"):
        assert (ROOT / rel).is_file()
    agent_module = settings.worker.agent.split(":")[0].replace(".", "/") + ".py"
    assert (ROOT / agent_module).is_file()


def test_grafana_dashboard_uses_real_metrics() -> None:
    dash = json.loads((COMPOSE / "helm" / "streamrl" / "dashboards" / "streamrl.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    names = {m for e in exprs for m in re.findall(r"streamrl_[a-z_]+", e)}
    assert len(names) >= 10
    source = "\n".join(
        p.read_text() for d in ("producers", "consumers", "inference", "streams", "trainer", "streamrl")
        for p in (ROOT / d).rglob("*.py")
    )  # fmt: skip
    for name in names:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{name}"' in source or f'"{base}"' in source, f"dashboard metric {name} is defined nowhere"
    ds = yaml.safe_load((COMPOSE / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_docker_compose_config_validates(deploy_tools: dict[str, Any], tmp_path: Path) -> None:
    """The real compose parser (Docker Compose v2's ``config``; no daemon needed) accepts the file with
    every profile, and rejects a service key it does not know (so this check can fail)."""
    compose = deploy_tools["docker_compose"]
    profiles = ["--profile", "cpu", "--profile", "gpu", "--profile", "publish"]
    proc = subprocess.run(
        [compose, "-f", str(COMPOSE / "compose.yaml"), *profiles, "config", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert set(resolved["services"]) == set(_compose()["services"])
    grafana = resolved["services"]["grafana"]["volumes"]
    assert any(v["source"].endswith("compose/helm/streamrl/dashboards") for v in grafana)
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        (COMPOSE / "compose.yaml").read_text().replace("restart: unless-stopped", "restart_policy: always", 1)
    )
    proc = subprocess.run(
        [compose, "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "restart_policy" in proc.stderr
