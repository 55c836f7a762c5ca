"""Every command's flags go through the settings loader: a bad flag is one line naming it, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrl.cli import main


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``streamrl <args>`` through the console entry point, in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["streamrl", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


MISSING = "/nonexistent/streamrl.yaml"

CASES = [
    # flags that set a config key: validated by the settings loader
    (
        ("trainer", "--max-steps", "0"),
        "Invalid value for '--max-steps': trainer.max_steps: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        ("trainer", "--backend", "tf"),
        "Invalid value for '--backend': trainer.backend: Input should be 'torch' or 'verl' (got 'tf')",
    ),
    (
        ("sampler", "--max-epochs", "0"),
        "Invalid value for '--max-epochs': sampler.max_epochs: Input should be greater than or equal to 1",
    ),
    (
        ("worker", "--concurrency", "0"),
        "Invalid value for '--concurrency': worker.concurrency: Input should be greater than or equal to 1",
    ),
    (
        ("gateway", "--port", "70000"),
        "Invalid value for '--port': gateway.port: Input should be less than or equal to 65535 (got 70000)",
    ),
    (
        ("inference", "--backend", "tpu"),
        "Invalid value for '--backend': inference.backend: Input should be 'cpu' or 'vllm' (got 'tpu')",
    ),
    (
        ("inference", "--policy-version", "-1"),
        "Invalid value for '--policy-version': inference.initial_version: Input should be greater",
    ),
    (
        ("dev", "--workers", "-1"),
        "Invalid value for '--workers': dev.workers: Input should be greater than or equal to 0 (got -1)",
    ),
    (
        ("demo", "--display", "fancy"),
        "Invalid value for '--display': dev.display: Input should be 'auto', 'live', 'plain' or 'off'",
    ),
    # flags of the command only, or values the parser rejects: named as the parser names them
    (("sampler", "--max-epochs", "x"), "Invalid value for '--max-epochs': Input should be a valid integer"),
    (
        ("publish", "tasks.jsonl", "--limit", "0"),
        "Invalid value for '--limit': Input should be greater than or equal to 1",
    ),
    (
        ("publish", "tasks.jsonl", "--split", "test"),
        "Invalid value for '--split': must be train or val, got 'test'",
    ),
    (("model", "build", "--out", "m", "--preset", "huge"), "Invalid value for '--preset': must be one of"),
    (
        ("model", "build", "--out", "m", "--tokenizer", "wordpiece"),
        "Invalid value for '--tokenizer': must be bpe or char",
    ),
    (
        ("status", "--interval", "0"),
        "Invalid value for '--interval': Input should be greater than or equal to 0.5",
    ),
    # commands whose only flag is the config file
    (("streams", "-c", MISSING), f"{MISSING}: cannot read config file"),
    (("kafka", "status", "-c", MISSING), f"{MISSING}: cannot read config file"),
    (("topics", "list", "-c", MISSING), f"{MISSING}: cannot read config file"),
    (("config", "show", "-c", MISSING), f"{MISSING}: cannot read config file"),
]


@pytest.mark.parametrize(
    ("args", "expected"), CASES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_a_bad_flag_is_one_line_naming_it(monkeypatch, capsys, args: tuple[str, ...], expected: str) -> None:
    code, out, err = _run(monkeypatch, capsys, *args)
    assert code != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err


def test_a_flag_beats_the_environment_and_the_file(monkeypatch, capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dev:\n  workers: 3\n")
    monkeypatch.setenv("STREAMRL_DEV__WORKERS", "-5")  # invalid: only the flag's value may be judged
    code, _, err = _run(monkeypatch, capsys, "dev", "-c", str(cfg), "--workers", "99")
    assert (
        code == 2
        and err.strip()
        == "error: Invalid value for '--workers': dev.workers: Input should be less than or equal to 64 (got 99)"
    )


def test_help_shows_no_type_for_on_off_flags(monkeypatch, capsys) -> None:
    code, out, _ = _run(monkeypatch, capsys, "inference", "--help")
    assert code == 0 and "--no-reload" in out and "--policy-version" in out
    assert "<bool>" not in out and "<int>" in out


def test_the_console_script_prints_one_line_in_clicks_words_and_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRL_")}
    done = subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "trainer", "--max-steps", "0"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""  # a usage error, as click's
    assert done.stderr.strip() == (
        "error: Invalid value for '--max-steps': trainer.max_steps: Input should be greater than or "
        "equal to 1 (got 0)"
    )


def test_both_kinds_of_flag_error_read_the_same(monkeypatch, capsys) -> None:
    """A value the parser rejects and one the settings loader rejects: one style, typer's, exit 2."""
    parsed = _run(monkeypatch, capsys, "trainer", "--max-steps", "abc")
    judged = _run(monkeypatch, capsys, "trainer", "--max-steps", "0")
    for code, out, err in (parsed, judged):
        assert code == 2 and out == "" and err.startswith("error: Invalid value for '--max-steps': "), err


def test_trainer_help_says_what_a_step_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = _run(monkeypatch, capsys, "trainer", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert code == 0
    assert "one step per batch" not in text
    assert "trainer.ppo_epochs x trainer.ppo_mini_batches optimizer steps" in text, text
