"""Bad-input catalogue, inference: one CPU server following the real ``checkpoints`` topic gets every bad
checkpoint kind (each refused with a dead letter and a reload-error reason, the old version serving on)
and every bad request kind over HTTP (a clear 400, or the same text streamed as not)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from streamrl.config import Settings
from streamrl.inference.reload import CheckpointWatcher, CpuReloadTarget
from streamrl.inference.server import InferenceService, ServerOptions, ServerThread
from streamrl.kafka import EventProducer
from streamrl.schemas import CheckpointEvent, CheckpointKind, DeadLetter, digest_dir
from streamrl.schemas.serde import Serde
from tests.support.bad_input import Kind, kinds
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Which is larger, 3 or 8?"}]


@dataclass
class Server:
    settings: Settings
    svc: InferenceService
    client: openai.OpenAI
    dead: dict[int, DeadLetter]  # offset on checkpoints -> its dead letter
    offsets: dict[str, int]  # kind -> offset of its record on checkpoints
    errors: dict[str, float]  # reload error counts by reason after the refusals
    served_after_refusals: tuple[int, int | None]  # (version answering, version staged) after them
    recovered: int  # the version served once a verifying checkpoint followed them


def _event(path: Path, version: int, digest: str | None = None) -> CheckpointEvent:
    return CheckpointEvent(
        policy_name="policy",
        version=version,
        kind=CheckpointKind.full,
        uri=str(path),
        digest=digest or digest_dir(path),
    )


@pytest.fixture(scope="module")
def server(
    shared_settings_factory: Callable[..., Settings],
    inference_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    tmp = tmp_path_factory.mktemp("inference-bad-input")
    s = shared_settings_factory()
    svc = InferenceService(str(inference_model_dir), ServerOptions(initial_version=0, max_batch_wait_ms=1))
    svc.start()
    watcher = CheckpointWatcher(s, CpuReloadTarget(svc), svc.metrics).start()
    thread = ServerThread(svc.app()).start()
    try:
        assert watcher.assigned.wait(60), "checkpoint watcher got no partition assignment"
        wrong = shutil.copytree(inference_model_dir, tmp / "v2")
        digest = digest_dir(wrong)
        (wrong / "model.safetensors").write_bytes(b"tampered after the digest")
        unloadable = shutil.copytree(inference_model_dir, tmp / "v3")
        (unloadable / "model.safetensors").write_bytes(b"not safetensors")  # digest taken after: it verifies
        items: list[tuple[str, bytes]] = [
            ("inference-checkpoint-missing-dir", Serde().encode(_event(tmp / "v1-never-written", 1, digest))),
            ("inference-checkpoint-wrong-digest", Serde().encode(_event(wrong, 2, digest))),
            ("inference-checkpoint-unloadable", Serde().encode(_event(unloadable, 3))),
            ("inference-garbage-checkpoint", b"\x00\x00\x00\x00\x03 not a checkpoint"),
        ]
        offsets: dict[str, int] = {}
        with EventProducer(s) as producer:
            for name, value in items:

                def delivered(err: Any, msg: Any, name: str = name) -> None:
                    assert err is None, err
                    offsets[name] = msg.offset()

                producer.produce(s.topics.name("checkpoints"), value, key="policy", on_delivery=delivered)
            producer.flush(30)
        with TopicReader(s, "dlq", DeadLetter) as reader:
            dead = {d.original_offset: d for d in reader.read(4, timeout_s=120)}
        errors = {
            reason: svc.metrics.reload_errors.labels(reason)._value.get()
            for reason in ("missing", "digest", "load")
        }
        client = openai.OpenAI(base_url=thread.url + "/v1", api_key="unused", max_retries=0)
        served_after = (_served(client), svc.engine.staged_version)
        # still healthy: a checkpoint that verifies after the refused ones is loaded and served
        good = shutil.copytree(inference_model_dir, tmp / "v4")
        with EventProducer(s) as producer:
            producer.produce(s.topics.name("checkpoints"), Serde().encode(_event(good, 4)), key="policy")
            producer.flush(30)
        deadline = time.monotonic() + 120
        while (recovered := _served(client)) != 4 and time.monotonic() < deadline:
            time.sleep(0.2)  # polling the served version (a state)
        yield Server(s, svc, client, dead, offsets, errors, served_after, recovered)
    finally:
        thread.stop()
        watcher.stop()
        svc.stop()


CHECKPOINT_KINDS = {
    # kind -> (reload error reason, what the dead letter says)
    "inference-checkpoint-missing-dir": ("missing", "v1-never-written is not a directory here"),
    "inference-checkpoint-wrong-digest": ("digest", "the event says sha256:"),
    "inference-checkpoint-unloadable": ("load", "v3"),
    "inference-garbage-checkpoint": (None, "CheckpointEvent"),
}


def _served(client: openai.OpenAI) -> int:
    """The policy version that answers a request now."""
    resp = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=2)
    return int((resp.model_extra or {})["policy_version"])


def _stream_text(client: openai.OpenAI, **kw: Any) -> str:
    return "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(stream=True, **kw)
        if c.choices
    )


@pytest.mark.parametrize("kind", kinds("inference"), ids=lambda k: k.id)
def test_inference_bad_input(kind: Kind, server: Server) -> None:
    client = server.client
    if kind.id in CHECKPOINT_KINDS:
        reason, says = CHECKPOINT_KINDS[kind.id]
        off = server.offsets[kind.id]
        d = server.dead[off]
        topic = server.settings.topics.name("checkpoints")
        assert d.stage == "inference" and d.reason.startswith(f"{topic}[0]@{off}: "), d.reason
        assert says in d.reason, d.reason
        if reason is not None:
            assert d.error_type == "CheckpointError" and server.errors[reason] >= 1
        # the old version kept serving, nothing staged; a verifying checkpoint after them was loaded
        assert server.served_after_refusals == (0, None)
        assert server.recovered == 4
    elif kind.id == "inference-stream-stop-string":
        kw: dict[str, Any] = {"model": "policy", "messages": MESSAGES, "max_tokens": 16, "temperature": 0.0}
        text = client.chat.completions.create(**kw).choices[0].message.content or ""
        assert len(text) >= 4, text
        for stop in {text[1:3], text[2:4], text[3:4]}:
            whole = client.chat.completions.create(stop=[stop], **kw).choices[0].message.content or ""
            assert stop not in whole and text.startswith(whole)
            assert _stream_text(client, stop=[stop], **kw) == whole, stop
        # the completions endpoint streams under the same rule ('Thu' was streamed for stop 'hu')
        ckw: dict[str, Any] = {"model": "policy", "prompt": "Which is larger, 3 or 8?", "max_tokens": 16,
                               "temperature": 0.0}  # fmt: skip
        ctext = client.completions.create(**ckw).choices[0].text
        assert len(ctext) >= 4, ctext
        for stop in {ctext[1:3], ctext[2:4], ctext[3:4]}:
            whole = client.completions.create(stop=[stop], **ckw).choices[0].text
            assert stop not in whole and ctext.startswith(whole)
            chunks = client.completions.create(stream=True, stop=[stop], **ckw)
            assert "".join(c.choices[0].text for c in chunks if c.choices) == whole, stop
    elif kind.id == "inference-prompt-too-long":
        with pytest.raises(openai.BadRequestError, match="maximum context length is"):
            client.chat.completions.create(
                model="policy", messages=[{"role": "user", "content": "7" * 50_000}]
            )
    elif kind.id == "inference-logit-bias":
        with pytest.raises(openai.BadRequestError, match="logit_bias is not supported: it would bias"):
            client.chat.completions.create(model="policy", messages=MESSAGES, logit_bias={"5": 10})
        with pytest.raises(openai.BadRequestError, match=r"presence_penalty=0\.5 is not supported"):
            client.chat.completions.create(model="policy", messages=MESSAGES, presence_penalty=0.5)
    else:
        raise AssertionError(f"no check for {kind.id}")
