"""Weight reload through the real ``checkpoints`` topic: new versions, in-flight requests, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import torch
from typer.testing import CliRunner

from streamrl.inference.reload import CheckpointWatcher, CpuReloadTarget
from streamrl.inference.server import InferenceService, ServerOptions, ServerThread
from streamrl.kafka import EventProducer
from streamrl.schemas import CheckpointEvent, CheckpointKind, DeadLetter, digest_dir
from streamrl.schemas.serde import Serde
from tests.support.kafka import free_port, read_topic

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Which is larger, 3 or 8?"}]


def _perturbed_copy(src: Path, dst: Path, seed: int) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    shutil.copytree(src, dst)
    model.save_pretrained(dst)
    return dst


def _publish(settings, event: CheckpointEvent) -> None:
    topic = settings.topics.name("checkpoints")
    with EventProducer(settings) as producer:
        producer.produce(topic, Serde().encode(event, topic=topic), key=event.policy_name)
        producer.flush(30)


def _event(path: Path, version: int, digest: str | None = None) -> CheckpointEvent:
    return CheckpointEvent(
        policy_name="policy",
        version=version,
        kind=CheckpointKind.full,
        uri=str(path),
        digest=digest or digest_dir(path),
    )


def _wait(cond: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def _forward_logprobs(model, prompt_ids: list[int], token_ids: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    return lp.gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def test_reload_on_checkpoint_event_keeps_in_flight_on_old_version_and_refuses_corrupt(
    settings, inference_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    svc = InferenceService(str(inference_model_dir), ServerOptions(initial_version=0, max_batch_wait_ms=1))
    svc.start()
    watcher = CheckpointWatcher(settings, CpuReloadTarget(svc), svc.metrics).start()
    thread = ServerThread(svc.app()).start()
    client = openai.OpenAI(base_url=thread.url + "/v1", api_key="unused", max_retries=0)
    try:
        assert watcher.assigned.wait(60), "checkpoint watcher got no partition assignment"
        # A long request starts on v0 ...
        stream = client.chat.completions.create(
            model="policy",
            messages=MESSAGES,
            max_tokens=600,
            n=8,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        first = next(iter(stream))
        assert (first.model_extra or {})["policy_version"] == 0
        # ... and a checkpoint arrives while it runs.
        v1 = _perturbed_copy(inference_model_dir, tmp_path / "v1", seed=1)
        _publish(settings, _event(v1, 1))
        _wait(lambda: svc.engine.staged_version == 1 or svc.engine.version == 1, what="v1 to load")
        rest = list(stream)
        assert all((c.model_extra or {})["policy_version"] == 0 for c in rest)
        assert (
            sum(len((ch.model_extra or {}).get("token_ids") or []) for c in rest for ch in c.choices)
            == 8 * 600
        )

        # The next request is served by v1, with v1's logprobs.
        raw = client.chat.completions.with_raw_response.create(
            model="policy", messages=MESSAGES, max_tokens=10, temperature=1.0
        )
        resp = raw.parse()
        assert raw.headers["x-policy-version"] == "1" and (resp.model_extra or {})["policy_version"] == 1
        ids = (resp.choices[0].model_extra or {})["token_ids"]
        got = torch.tensor([e.logprob for e in resp.choices[0].logprobs.content])
        v1_model = AutoModelForCausalLM.from_pretrained(v1)
        torch.testing.assert_close(
            got,
            _forward_logprobs(v1_model, (resp.model_extra or {})["prompt_token_ids"], ids),
            atol=2e-4,
            rtol=0,
        )

        # A corrupt checkpoint (digest mismatch) and a missing one are refused; v1 keeps serving.
        v2 = shutil.copytree(v1, tmp_path / "v2")
        digest = digest_dir(v2)
        (v2 / "model.safetensors").write_bytes(b"truncated")
        _publish(settings, _event(v2, 2, digest=digest))
        _publish(settings, _event(tmp_path / "v3-never-written", 3, digest=digest))
        errors = svc.metrics.reload_errors
        _wait(
            lambda: errors.labels("digest")._value.get() == 1 and errors.labels("missing")._value.get() == 1,
            what="refusals",
        )
        resp = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=3)
        assert (resp.model_extra or {})["policy_version"] == 1
        assert svc.engine.staged_version is None
        metrics = httpx.get(thread.url + "/metrics").text
        assert 'streamrl_inference_reload_errors_total{reason="digest"} 1.0' in metrics
        assert "streamrl_inference_policy_version 1.0" in metrics

        # The refused events are in the dead-letter topic with the reason.
        letters = read_topic(settings, "dlq", DeadLetter, n=2)
        assert sorted(dl.error_type for dl in letters) == ["CheckpointError", "CheckpointError"]
        assert {dl.stage for dl in letters} == {"inference"}
        assert any("digest" in dl.reason for dl in letters) and any(
            "not a directory" in dl.reason for dl in letters
        )
    finally:
        thread.stop()
        watcher.stop()
        svc.stop()


def test_cli_builds_a_model_and_serves_it_with_reload(settings, tmp_path: Path) -> None:
    """``streamrl inference --reload`` as a process: serves the built model, then a published
    checkpoint; killed and restarted, it loads the newest verified checkpoint before it answers."""
    from streamrl.cli import app

    model_dir = tmp_path / "cli-model"
    result = CliRunner().invoke(
        app, ["model", "build", "--out", str(model_dir), "--tokenizer", "char", "--max-chars", "20000"]
    )
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and (model_dir / "config.json").is_file()

    port = free_port()
    env = {
        **os.environ,
        "STREAMRL_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "STREAMRL_TOPIC_PREFIX": settings.topics.prefix,
        "STREAMRL_INFERENCE__TORCH_THREADS": "1",
    }
    log_path = tmp_path / "inference.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from streamrl.cli import main; main()", "inference", "--model", str(model_dir),
         "--port", str(port), "--reload"],
        env=env, stdout=log_file, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    t0 = time.monotonic()
    try:
        _wait(healthy, 120, "the inference process to answer /health")
        print(f"healthy after {time.monotonic() - t0:.1f} s")
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=4)
        assert (resp.model_extra or {})["policy_version"] == 0
        v7 = _perturbed_copy(model_dir, tmp_path / "v7", seed=7)
        _publish(settings, _event(v7, 7))

        def reloaded() -> bool:
            r = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=2)
            return (r.model_extra or {})["policy_version"] == 7

        _wait(reloaded, 90, "the process to serve v7")
        print(f"v7 after {time.monotonic() - t0:.1f} s")
        # a restarted server serves the newest verified checkpoint from its first answer: v8's
        # directory does not match its digest, so v7 (the restart's own catch-up refuses v8)
        _publish(settings, _event(v7, 8, digest="sha256:" + "0" * 64))
        proc.kill()
        proc.wait(20)
        proc = subprocess.Popen(proc.args, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        t1 = time.monotonic()
        _wait(healthy, 120, "the restarted process to answer /health")
        print(f"restarted: healthy after {time.monotonic() - t1:.1f} s")
        assert httpx.get(f"{url}/health", timeout=5).json()["policy_version"] == 7
        first = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=2)
        assert (first.model_extra or {})["policy_version"] == 7
        text = log_path.read_text()
        assert "serving policy version 7" in text and "checkpoint v8 refused (digest)" in text
        assert "POST /v1/chat/completions" not in text  # no per-request access log
    finally:
        log_file.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log_path.read_text()[-3000:])
