"""``streamrl dev`` checks the agent before it starts anything: an unimportable ``worker.agent``
is one error naming the key, the value and the ImportError/AttributeError (not a worker restarted
under ``dev.restart`` for minutes)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from streamrl.cli import main


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k in list(os.environ):
        if k.startswith("STREAMRL_"):
            monkeypatch.delenv(k)
    # nowhere to reach: without the preflight dev would fail later, on the broker, with another message
    monkeypatch.setenv("STREAMRL_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the check adds dev.pythonpath to it
    (tmp_path / "ux_preflight_agents.py").write_text("def solve(task, llm):\n    return 1.0\n")
    yield
    sys.modules.pop("ux_preflight_agents", None)


def _dev(monkeypatch, capsys, tmp_path: Path, agent: str | None) -> tuple[int, str, str]:
    cfg = tmp_path / "streamrl.yaml"
    sections: dict = {"dev": {"run_root": str(tmp_path / "runs"), "display": "plain"}}
    if agent is not None:
        sections["worker"] = {"agent": agent}
    cfg.write_text(yaml.safe_dump(sections))
    monkeypatch.setattr(sys, "argv", ["streamrl", "dev", "-c", str(cfg)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (
            "ux_preflight_agentz:solve",
            "error: worker.agent 'ux_preflight_agentz:solve': cannot import 'ux_preflight_agentz': "
            "ModuleNotFoundError: No module named 'ux_preflight_agentz'",
        ),
        (
            "ux_preflight_agents:solv",
            "error: worker.agent 'ux_preflight_agents:solv': AttributeError: module 'ux_preflight_agents' "
            "has no attribute 'solv'",
        ),
        (
            "ux_preflight_agents",
            "error: worker.agent 'ux_preflight_agents': expected package.module:function",
        ),
        (None, "error: worker.agent: not set"),
    ],
    ids=["module", "function", "syntax", "unset"],
)
def test_dev_stops_before_starting_anything_when_the_agent_cannot_be_imported(
    monkeypatch, capsys, tmp_path: Path, agent: str | None, expected: str
) -> None:
    code, out, err = _dev(monkeypatch, capsys, tmp_path, agent)
    assert code == 1
    assert err.strip().splitlines()[0].startswith(expected), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert out == ""  # no broker, no run announced
    assert not (tmp_path / "runs").exists()


def test_dev_preflight_imports_the_agent_from_dev_pythonpath(tmp_path: Path) -> None:
    """A folder on ``dev.pythonpath`` (the children's PYTHONPATH) is importable by the check too."""
    from streamrl.config import load_settings
    from streamrl.consumers.runner import AgentLoadError
    from streamrl.dev.preflight import check_agent

    elsewhere = tmp_path / "agents"
    elsewhere.mkdir()
    (elsewhere / "ux_preflight_far.py").write_text("def solve(task, llm):\n    return 1.0\n")
    worker = {"agent": "ux_preflight_far:solve"}
    with pytest.raises(AgentLoadError, match="No module named 'ux_preflight_far'"):
        check_agent(load_settings(None, worker=worker))
    try:
        check_agent(load_settings(None, worker=worker, dev={"pythonpath": [str(elsewhere)]}))
    finally:
        sys.modules.pop("ux_preflight_far", None)
