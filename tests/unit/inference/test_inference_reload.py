"""Checkpoint verification and loading (real files, real peft), and the watcher's choice logic."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from streamrl.config import load_settings
from streamrl.errors import CheckpointError
from streamrl.inference.metrics import InferenceMetrics
from streamrl.inference.reload import CheckpointWatcher, checkpoint_path, load_policy, verify_checkpoint
from streamrl.schemas import CheckpointEvent, CheckpointKind, digest_dir
from streamrl.schemas.serde import Serde


def _event(
    path: Path, version: int, kind: CheckpointKind = CheckpointKind.full, digest: str | None = None, **kw
) -> CheckpointEvent:
    return CheckpointEvent(
        policy_name=kw.pop("policy_name", "policy"),
        version=version,
        kind=kind,
        uri=str(path),
        digest=digest or digest_dir(path),
        **kw,
    )


def _perturbed_copy(src: Path, dst: Path, scale: float = 0.3) -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    shutil.copytree(src, dst)
    model.save_pretrained(dst)
    return dst


def test_verify_checkpoint_refuses_missing_and_tampered_dirs(
    inference_model_dir: Path, tmp_path: Path
) -> None:
    ckpt = shutil.copytree(inference_model_dir, tmp_path / "v1")
    event = _event(ckpt, 1)
    assert verify_checkpoint(event) == ckpt
    assert checkpoint_path(f"file://{ckpt}") == ckpt
    (ckpt / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="digest of") as exc:
        verify_checkpoint(event)
    assert exc.value.reason == "digest"
    with pytest.raises(CheckpointError) as exc:
        verify_checkpoint(
            _event(ckpt, 2, digest=event.digest).model_copy(update={"uri": str(tmp_path / "nope")})
        )
    assert exc.value.reason == "missing"
    with pytest.raises(CheckpointError) as exc:
        checkpoint_path("s3://bucket/ckpt")
    assert exc.value.reason == "uri"


def test_load_full_checkpoint(inference_model_dir: Path, tmp_path: Path) -> None:
    ckpt = _perturbed_copy(inference_model_dir, tmp_path / "v1")
    policy = load_policy(_event(ckpt, 1), ckpt, base_dir=str(inference_model_dir))
    assert policy.version == 1
    from transformers import AutoModelForCausalLM

    expected = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = torch.tensor([[1, 5, 6, 7]])
    torch.testing.assert_close(policy.model(ids).logits, expected(ids).logits)


def test_load_lora_checkpoint_merges_adapter_into_base(
    inference_model_dir: Path, model, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    from streamrl.inference.server import load_model

    peft_model = get_peft_model(
        load_model(str(inference_model_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B is zero at init: make the adapter change the outputs
    adapter = tmp_path / "lora-v2"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        base = model(ids).logits
    policy = load_policy(
        _event(adapter, 2, CheckpointKind.lora, base_model=str(inference_model_dir)),
        adapter,
        base_dir="/nonexistent",
    )
    with torch.no_grad():
        got = policy.model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, base, atol=1e-3)


def test_unloadable_checkpoint_is_a_load_error(inference_model_dir: Path, tmp_path: Path) -> None:
    ckpt = shutil.copytree(inference_model_dir, tmp_path / "v3")
    (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError) as exc:
        load_policy(_event(ckpt, 3), ckpt, base_dir=str(inference_model_dir))
    assert exc.value.reason == "load"
    with pytest.raises(CheckpointError) as exc:
        load_policy(_event(ckpt, 3, CheckpointKind.prompt_template), ckpt, base_dir=str(inference_model_dir))
    assert exc.value.reason == "kind"


def test_pickled_weights_are_never_opened(inference_model_dir: Path, tmp_path: Path) -> None:
    """A digest-valid checkpoint whose weights are a pickle (``pytorch_model.bin``, an adapter ``.bin``)
    is refused before any loader sees it: the payload would write a file if it were unpickled."""
    import pickle

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.write_text, ("pwned",))

    full = shutil.copytree(inference_model_dir, tmp_path / "v4")
    (full / "model.safetensors").unlink()
    (full / "pytorch_model.bin").write_bytes(pickle.dumps(Exploit()))
    adapter = tmp_path / "lora-v5"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}'
    )
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(Exploit()))
    for event, path in ((_event(full, 4), full), (_event(adapter, 5, CheckpointKind.lora), adapter)):
        assert verify_checkpoint(event) == path
        with pytest.raises(CheckpointError, match="safetensors only") as exc:
            load_policy(event, path, base_dir=str(inference_model_dir))
        assert exc.value.reason == "load"
    assert not marker.exists()


class _Target:
    def __init__(self, fail_versions: set[int]) -> None:
        self.loaded_version = 0
        self.fail_versions = fail_versions
        self.applied: list[int] = []

    def apply(self, event: CheckpointEvent, path: Path) -> None:
        if event.version in self.fail_versions:
            raise CheckpointError(f"v{event.version} broken", "load")
        self.applied.append(event.version)
        self.loaded_version = event.version


def _msg(serde: Serde, event: CheckpointEvent | bytes, offset: int) -> SimpleNamespace:
    value = event if isinstance(event, bytes) else serde.encode(event)
    return SimpleNamespace(
        error=lambda: None, topic=lambda: "t.checkpoints", partition=lambda: 0, offset=lambda: offset,
        key=lambda: b"policy", value=lambda: value,
    )  # fmt: skip


def test_watcher_takes_the_newest_loadable_version_and_dead_letters_the_rest(
    inference_model_dir: Path, tmp_path: Path
) -> None:
    settings = load_settings(None)
    target = _Target(fail_versions={3})
    metrics = InferenceMetrics()
    watcher = CheckpointWatcher(settings, target, metrics)
    dead: list[str] = []
    watcher._dead_letter = lambda msg, reason, error: dead.append(reason)  # type: ignore[method-assign]
    serde = Serde()
    good = inference_model_dir
    msgs = [
        _msg(serde, _event(good, 1), 0),
        _msg(serde, _event(good, 2), 1),
        _msg(serde, _event(good, 3), 2),  # fails to load: falls back to v2
        _msg(serde, _event(good, 4, policy_name="other"), 3),  # another policy: ignored
        _msg(serde, _event(good, 5, CheckpointKind.prompt_template), 4),  # not weights: ignored
        _msg(serde, b"\x00garbage", 5),  # undecodable: dead-lettered
    ]
    assert watcher.handle(msgs) == 2
    assert target.applied == [2]
    assert len(dead) == 2 and "undecodable" in dead[0] and "v3 broken" in dead[1]
    assert metrics.reload_errors.labels("load")._value.get() == 1
    assert metrics.reload_errors.labels("schema")._value.get() == 1
    assert metrics.reloads.labels("full")._value.get() == 1
    # Old or equal versions are skipped without loading.
    assert watcher.handle([_msg(serde, _event(good, 1), 6), _msg(serde, _event(good, 2), 7)]) is None
    assert target.applied == [2]
