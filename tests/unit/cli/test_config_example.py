"""A config copied from ``streamrl config example`` keeps derived keys derived: editing
``kafka.local.port`` moves ``kafka.bootstrap_servers``, naming ``dev.model.pretrained`` moves
``dev.model.path`` (the example leaves both commented out), and the printed example is the
repository's ``streamrl.example.yaml``."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_config_example_prints_the_repositorys_example_file(cli) -> None:
    code, out, _ = cli("config", "example")
    assert code == 0
    assert out == (ROOT / "streamrl.example.yaml").read_text(), (
        "run: streamrl config example > streamrl.example.yaml"
    )


def test_a_copied_example_keeps_derived_keys_derived(cli, tmp_path: Path) -> None:
    _, example, _ = cli("config", "example")
    text = _edit(example, "\n    port: 9092\n", "\n    port: 19555\n")  # kafka.local.port
    text = _edit(text, '\n    home: "~/.cache/streamrl"\n', f'\n    home: "{tmp_path / "kafka-home"}"\n')
    text = _edit(text, "\n    pretrained: null\n", '\n    pretrained: "smollm2-135m-instruct"\n')
    cfg = tmp_path / "streamrl.yaml"
    cfg.write_text(text)

    code, out, err = cli("config", "show", "-c", str(cfg))
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["kafka"]["bootstrap_servers"] == "127.0.0.1:19555"
    assert shown["dev"]["model"]["path"] == "models/smollm2-135m-instruct"

    code, out, _ = cli("kafka", "status", "-c", str(cfg))
    assert code == 1 and out.startswith("Kafka not running on 127.0.0.1:19555 "), out

    # uncommented, a derived key is pinned
    pinned = _edit(text, '  # bootstrap_servers: "127.0.0.1:9092"', '  bootstrap_servers: "127.0.0.1:9092"')
    cfg.write_text(pinned)
    code, out, _ = cli("config", "show", "-c", str(cfg))
    assert yaml.safe_load(out)["kafka"]["bootstrap_servers"] == "127.0.0.1:9092"
