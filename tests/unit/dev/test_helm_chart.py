"""compose/helm/streamrl: ``helm lint``, ``helm template`` and ``kubeconform`` (core, KEDA, Strimzi and
Prometheus Operator schemas), and every command, port, env var, path and topic of the rendered chart
checked against the CLI and the settings models, as ``test_compose.py`` does for compose."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from streamrl.config import Settings, load_settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "compose" / "helm" / "streamrl"

#: Value sets rendered by every test: the defaults, the two shipped profiles, and one with every option on.
VALUE_SETS: dict[str, tuple[list[str], list[str]]] = {
    "default": ([], []),
    "cpu": (["values-cpu.yaml"], []),
    "gpu": (["values-gpu.yaml"], []),
    "secured": (
        ["values-gpu.yaml"],
        [
            "kafka.mode=external", "kafka.bootstrapServers=b1:9093\\,b2:9093",
            "kafka.security.protocol=SASL_SSL", "kafka.security.saslMechanism=SCRAM-SHA-512",
            "kafka.security.saslUsername=streamrl", "kafka.security.passwordSecret.name=kafka-user",
            "kafka.security.tlsSecret.name=kafka-ca", "config.topics.prefix=team-a_",
            "metrics.podMonitor.enabled=true", "inference.gpus=2", "model.source=existing",
            "security.adminTokenSecret.name=streamrl-admin", "security.metricsTokenSecret.name=streamrl-metrics",
        ],
    ),
    "fixed-workers": ([], ["worker.autoscaling.enabled=false", "metrics.annotations=false"]),
}  # fmt: skip


def _helm(tools: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tools["helm"], *args], capture_output=True, text=True, timeout=120)


def _flags(name: str) -> list[str]:
    files, sets = VALUE_SETS[name]
    out: list[str] = []
    for f in files:
        out += ["-f", str(CHART / f)]
    for s in sets:
        out += ["--set", s]
    return out


def _render(tools: dict[str, Any], flags: list[str]) -> subprocess.CompletedProcess[str]:
    return _helm(tools, "template", "rl", str(CHART), "--kube-version", tools["kubernetes_version"], *flags)


@pytest.fixture(scope="module")
def rendered(deploy_tools: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in VALUE_SETS:
        proc = _render(deploy_tools, _flags(name))
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        out[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def _kubeconform(tools: dict[str, Any], text: str) -> subprocess.CompletedProcess[str]:
    argv = [tools["kubeconform"], "-strict", "-summary", "-kubernetes-version", tools["kubernetes_version"]]
    for loc in tools["schema_locations"]:
        argv += ["-schema-location", loc]
    return subprocess.run(argv, input=text, capture_output=True, text=True, timeout=120)


# -- real tools ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint(deploy_tools: dict[str, Any], name: str) -> None:
    proc = _helm(deploy_tools, "lint", "--strict", str(CHART), *_flags(name))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubeconform_validates_every_rendered_resource(
    deploy_tools: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    kinds = set()
    for name, docs in rendered.items():
        proc = _kubeconform(deploy_tools, yaml.safe_dump_all(docs))
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
        assert "Skipped: 0" in proc.stdout and "Errors: 0" in proc.stdout, proc.stdout
        kinds |= {d["kind"] for d in docs}
    # the CRDs are really checked: each kind renders in some value set
    assert {"ScaledObject", "TriggerAuthentication", "Kafka", "KafkaNodePool", "PodMonitor"} <= kinds


@pytest.mark.parametrize("kind", ["Deployment", "ScaledObject", "Kafka", "KafkaNodePool"])
def test_kubeconform_rejects_an_unknown_field(
    deploy_tools: dict[str, Any], rendered: dict[str, list[dict[str, Any]]], kind: str
) -> None:
    doc = next(d for d in rendered["gpu"] if d["kind"] == kind)
    bad = json.loads(json.dumps(doc))
    bad["spec"]["noSuchField"] = 1
    proc = _kubeconform(deploy_tools, yaml.safe_dump(bad))
    assert proc.returncode != 0 and "noSuchField" in proc.stdout, proc.stdout


def test_render_refuses_more_workers_than_partitions(deploy_tools: dict[str, Any]) -> None:
    proc = _render(deploy_tools, ["--set", "worker.autoscaling.maxReplicas=13"])
    assert proc.returncode != 0 and "exceeds the partitions of samples (12)" in proc.stderr
    proc = _render(
        deploy_tools, ["--set", "config.topics.partitions=null", "--set", "worker.autoscaling.maxReplicas=7"]
    )
    assert proc.returncode != 0 and "(6)" in proc.stderr  # the settings' default partition count
    proc = _render(deploy_tools, ["--set", "model.path=/elsewhere"])
    assert proc.returncode != 0 and "must be under /models/" in proc.stderr


# -- consistency with the CLI and the settings -------------------------------------------------------
def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].removeprefix("rl-streamrl-"): d for d in docs if d["kind"] == kind}


def _settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    cm = _by_kind(docs, "ConfigMap")["config"]
    path = tmp_path / "streamrl.yaml"
    path.write_text(cm["data"]["streamrl.yaml"])
    return load_settings(path)  # strict: an unknown key or a bad value fails here


def _workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        out.update(_by_kind(docs, kind))
    return out


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def _streamrl_commands(container: dict[str, Any]) -> list[list[str]]:
    """Every ``streamrl ...`` invocation of a container: its command, or the ones inside ``sh -c``."""
    argv = container["command"] + container.get("args", [])
    if argv[0] == "streamrl":
        return [[a.replace("$(POD_NAME)", "worker-0") for a in argv]]
    if argv[:2] == ["sh", "-c"]:
        words = shlex.split(argv[2].replace(";", " ; "))
        out, cur = [], None
        for w in words:
            if w == "streamrl":
                cur = [w]
                out.append(cur)
            elif w in ("&&", "||", ";", "}", "{") or w.startswith("mv"):
                cur = None
            elif cur is not None:
                cur.append(w)
        return out
    return []


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_commands_are_real_cli_commands(
    rendered: dict[str, list[dict[str, Any]]], name: str, cli_command: Callable[[list[str]], Any]
) -> None:
    seen = set()
    for wl in _workloads(rendered[name]).values():
        for c in _containers(wl["spec"]["template"]["spec"]):
            for argv in _streamrl_commands(c):
                cli_command(argv)
                seen.add(" ".join(argv[1:2]))
    assert {"inference", "worker", "sampler", "streams", "trainer", "topics"} <= seen
    if name in ("default", "cpu"):
        assert "model" in seen  # the model build job


def _field(model: type[BaseModel], path: list[str]) -> Any:
    """The pydantic field at ``path`` (lower-case keys), or raise KeyError."""
    cur: Any = model
    for i, part in enumerate(path):
        fields = cur.model_fields
        if part not in fields:
            raise KeyError(".".join(path[: i + 1]))
        ann = fields[part].annotation
        for arg in getattr(ann, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                ann = arg
        cur = ann
    return cur


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_env_ports_paths_and_topics_match_the_settings(
    rendered: dict[str, list[dict[str, Any]]], name: str, tmp_path: Path
) -> None:
    docs = rendered[name]
    s = _settings(docs, tmp_path)
    workloads = _workloads(docs)
    ports = {"sampler": s.sampler.metrics_port, "worker": s.worker.metrics_port,
             "streams": s.streams.metrics_port, "trainer": s.trainer.metrics_port,
             "inference": s.inference.port}  # fmt: skip
    for stage, port in ports.items():
        pod = workloads[stage]["spec"]["template"]
        main = pod["spec"]["containers"][0]
        assert [p["containerPort"] for p in main["ports"]] == [port], stage
        ann = pod["metadata"]["annotations"]
        if name != "fixed-workers":
            assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/scrape"] == "true"
        for c in _containers(pod["spec"]):
            env = {e["name"]: e for e in c.get("env", [])}
            for var in env:
                if var.startswith("STREAMRL_") and var != "STREAMRL_CONFIG":
                    _field(Settings, var.removeprefix("STREAMRL_").lower().split("__"))
            if c is main or "STREAMRL_CONFIG" in env:
                mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
                assert env["STREAMRL_CONFIG"]["value"] == mount["mountPath"]
    services = _by_kind(docs, "Service")
    assert (
        s.gateway.upstream_url
        == f"http://rl-streamrl-inference:{services['inference']['spec']['ports'][0]['port']}/v1"
    )
    assert services["inference"]["spec"]["ports"][0]["port"] == s.inference.port

    # paths: the shared volumes hold what the stages exchange
    def mounts(stage: str) -> dict[str, str]:
        c = workloads[stage]["spec"]["template"]["spec"]["containers"][0]
        return {m["mountPath"]: m["name"] for m in c["volumeMounts"]}

    def under(path: Any, stage: str, volume: str) -> bool:
        return any(str(path).startswith(mp + "/") and v == volume for mp, v in mounts(stage).items())

    assert under(s.trainer.checkpoint_dir, "trainer", "data") and under(
        s.trainer.checkpoint_dir, "inference", "data"
    )
    assert under(s.streams.blob_dir, "streams", "data") and under(s.streams.blob_dir, "trainer", "data")
    assert mounts("streams")[s.streams.state_dir] == "state"
    assert under(s.trainer.model_path, "trainer", "models") and under(
        s.inference.model, "inference", "models"
    )
    # Kafka: the chart's bootstrap and security are the config's
    if name == "gpu":
        assert s.kafka.bootstrap_servers == "rl-streamrl-kafka-kafka-bootstrap:9092"
        assert _by_kind(docs, "Kafka")["kafka"]["spec"]["kafka"]["listeners"][0]["port"] == 9092
    if name == "secured":
        assert s.kafka.bootstrap_servers == "b1:9093,b2:9093" and s.kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert s.kafka.ssl_ca_location is not None and under(s.kafka.ssl_ca_location, "worker", "kafka-tls")
        env = {e["name"]: e for e in workloads["worker"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["STREAMRL_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-user"
        assert s.inference.vllm.tensor_parallel_size == 2
    # GPUs: vLLM's tensor parallelism uses exactly the GPUs the pod gets
    if s.inference.backend == "vllm":
        limits = workloads["inference"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == s.inference.vllm.tensor_parallel_size
        assert workloads["inference"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
            "streamrl-vllm:"
        )
    if s.trainer.device == "cuda":
        limits = workloads["trainer"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] >= 1
    # a Deployment pod must not exit: the sampler keeps running after its epochs
    assert s.sampler.exit_when_done is False
    assert workloads["sampler"]["spec"]["replicas"] == 1 and workloads["trainer"]["spec"]["replicas"] == 1
    # workers: the grace period covers the worker's own shutdown timeout
    grace = workloads["worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > s.worker.shutdown_timeout_s
    # KEDA scales the workers on their own consumer group and topic, never beyond its partitions
    scaled = _by_kind(docs, "ScaledObject")
    if name == "fixed-workers":
        assert not scaled and workloads["worker"]["spec"]["replicas"] == 2
        return
    so = scaled["worker"]["spec"]
    meta = so["triggers"][0]["metadata"]
    assert (
        so["scaleTargetRef"]["name"] == "rl-streamrl-worker" and "replicas" not in workloads["worker"]["spec"]
    )
    assert meta["topic"] == s.topics.name("samples") and meta["consumerGroup"] == s.group_id("workers")
    assert meta["bootstrapServers"] == s.kafka.bootstrap_servers
    assert so["maxReplicaCount"] <= s.topics.partitions["samples"]


def test_group_ids_follow_the_topic_prefix(deploy_tools: dict[str, Any], tmp_path: Path) -> None:
    for prefix in ("team-a.", "x_", "plain", "..."):
        proc = _render(deploy_tools, ["--set-string", f"config.topics.prefix={prefix}"])
        assert proc.returncode == 0, proc.stderr
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        s = _settings(docs, tmp_path)
        meta = _by_kind(docs, "ScaledObject")["worker"]["spec"]["triggers"][0]["metadata"]
        assert (meta["topic"], meta["consumerGroup"]) == (s.topics.name("samples"), s.group_id("workers")), (
            prefix
        )


def test_keda_authentication_uses_the_kafka_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["secured"]
    auth = _by_kind(docs, "TriggerAuthentication")["keda-kafka"]["spec"]["secretTargetRef"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth}
    assert refs["password"] == ("kafka-user", "password") and refs["ca"] == ("kafka-ca", "ca.crt")
    secret = _by_kind(docs, "Secret")["keda-kafka"]["stringData"]
    assert secret == {"sasl": "scram_sha512", "username": "streamrl", "tls": "enable"}
    assert (
        _by_kind(docs, "ScaledObject")["worker"]["spec"]["triggers"][0]["authenticationRef"]["name"]
        == "rl-streamrl-keda-kafka"
    )


def test_dashboard_configmap_is_the_dashboard_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    data = _by_kind(rendered["default"], "ConfigMap")["dashboard"]["data"]["streamrl.json"]
    assert json.loads(data) == json.loads((CHART / "dashboards" / "streamrl.json").read_text())


def test_images_contain_every_package_folder() -> None:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    for dockerfile in ("Dockerfile", "Dockerfile.vllm"):
        text = (ROOT / "compose" / dockerfile).read_text()
        for d in dirs:
            assert f"COPY {d} {d}" in text, f"compose/{dockerfile} does not copy {d}/"


def test_tokens_come_from_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every StreamRL container gets the admin and metrics tokens from their Secrets (never from
    values), and the PodMonitor scrapes with the metrics token."""
    docs = rendered["secured"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert workloads
    for d in workloads:
        for c in d["spec"]["template"]["spec"]["containers"]:
            if not any(e["name"] == "STREAMRL_CONFIG" for e in c.get("env", [])):
                continue
            env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c["env"]}
            assert env["STREAMRL_SECURITY__ADMIN_TOKEN"] == {"name": "streamrl-admin", "key": "token"}
            assert env["STREAMRL_SECURITY__METRICS_TOKEN"] == {"name": "streamrl-metrics", "key": "token"}
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    for ep in monitor["spec"]["podMetricsEndpoints"]:
        assert ep["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": "streamrl-metrics", "key": "token"},
        }
    default = [
        e["name"]
        for d in rendered["default"]
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    ]
    assert "STREAMRL_SECURITY__ADMIN_TOKEN" not in default
