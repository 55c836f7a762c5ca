"""Bad-input catalogue, configs and flags: every one is a single line naming what and where (the file,
line, key or flag), exit code 1, no traceback, through the console entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from streamrl.cli import main
from tests.support.bad_input import Kind, kinds


def _config(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "streamrl.yaml"
    path.write_bytes(data)
    return str(path)


CASES: dict[str, tuple[bytes, list[str], list[str]]] = {
    # kind -> (config file bytes, command line after "-c FILE", what the one error line must say)
    "config-unknown-key": (
        b"rl:\n  group_sise: 4\n",
        ["config", "show"],
        ["streamrl.yaml: rl.group_sise: unknown key"],
    ),
    "config-bad-value": (
        b"rl:\n  group_size: many\n",
        ["config", "show"],
        ["rl.group_size: Input should be a valid integer", "(got 'many')"],
    ),
    "config-not-utf8": (
        b"rl:\n  group_size: 4\n  policy_name: caf\xe9\n",
        ["config", "show"],
        ["streamrl.yaml: line 3: not UTF-8 (byte 0xe9", "save the file as UTF-8"],
    ),
    "config-not-yaml": (
        b"kafka:\n  local:\n    port: 9092\n   host: x\n",
        ["config", "show"],
        [
            "streamrl.yaml:4:4: not valid YAML: bad indentation (this line is indented differently from the "
            "block it is in, which starts at line 2, column 3)"
        ],
    ),
    "config-unknown-estimator": (
        b"trainer:\n  adv_estimator: grpoo\n",
        ["config", "show"],
        ["trainer.adv_estimator: unknown estimator 'grpoo' (did you mean 'grpo'?); known: ['grpo'"],
    ),
    "config-bad-seed-prompt": (
        b"optimize:\n  seed_prompt: 'Answer {question'\n",
        ["optimize"],
        ["the seed prompt: not a valid template (expected '}' before end of string)"],
    ),
    "config-bad-flag": (
        b"",
        ["trainer", "--max-steps", "0"],
        [
            "Invalid value for '--max-steps': trainer.max_steps: Input should be greater than or equal to 1 (got 0)"
        ],
    ),
}


@pytest.mark.parametrize("kind", kinds("config"), ids=lambda k: k.id)
def test_config_bad_input(
    kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, command, says = CASES[kind.id]
    cfg = _config(tmp_path, data)
    monkeypatch.chdir(tmp_path)  # dev.run_root: runs/, relative
    monkeypatch.setattr(sys, "argv", ["streamrl", *command, "-c", cfg])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == (2 if kind.id == "config-bad-flag" else 1), (out, err)  # 2: usage
    assert "Traceback" not in err
    for text in says:
        assert text in err, err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # refused before a run (its broker, its children) began
