"""A config copied from ``streamrl config example`` keeps derived keys derived: editing
``kafka.local.port`` moves ``kafka.bootstrap_servers``, naming ``dev.model.pretrained`` moves
``dev.model.path`` (the example leaves both commented out), and the printed example is the
repository's ``streamrl.example.yaml``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from streamrl.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.startswith("STREAMRL_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def _run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``streamrl <args>`` through the console entry point, in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["streamrl", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_config_example_prints_the_repositorys_example_file(monkeypatch, capsys) -> None:
    code, out, _ = _run(monkeypatch, capsys, "config", "example")
    assert code == 0
    assert out == (ROOT / "streamrl.example.yaml").read_text(), (
        "run: streamrl config example > streamrl.example.yaml"
    )


def test_a_copied_example_keeps_derived_keys_derived(monkeypatch, capsys, tmp_path: Path) -> None:
    _, example, _ = _run(monkeypatch, capsys, "config", "example")
    text = _edit(example, "\n    port: 9092\n", "\n    port: 19555\n")  # kafka.local.port
    text = _edit(text, '\n    home: "~/.cache/streamrl"\n', f'\n    home: "{tmp_path / "kafka-home"}"\n')
    text = _edit(text, "\n    pretrained: null\n", '\n    pretrained: "smollm2-135m-instruct"\n')
    cfg = tmp_path / "streamrl.yaml"
    cfg.write_text(text)

    code, out, err = _run(monkeypatch, capsys, "config", "show", "-c", str(cfg))
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["kafka"]["bootstrap_servers"] == "127.0.0.1:19555"
    assert shown["dev"]["model"]["path"] == "models/smollm2-135m-instruct"

    code, out, _ = _run(monkeypatch, capsys, "kafka", "status", "-c", str(cfg))
    assert code == 1 and out.startswith("Kafka not running on 127.0.0.1:19555 "), out

    # uncommented, a derived key is pinned
    pinned = _edit(text, '  # bootstrap_servers: "127.0.0.1:9092"', '  bootstrap_servers: "127.0.0.1:9092"')
    cfg.write_text(pinned)
    code, out, _ = _run(monkeypatch, capsys, "config", "show", "-c", str(cfg))
    assert yaml.safe_load(out)["kafka"]["bootstrap_servers"] == "127.0.0.1:9092"
