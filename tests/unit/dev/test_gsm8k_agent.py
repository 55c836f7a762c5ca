"""The GSM8K example agent: calculator, answer parsing, and a multi-turn tool round over real HTTP."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from streamrl.sdk import LLM
from tests.support.fake_inference import FakeInferenceServer

ROOT = Path(__file__).resolve().parents[3]


def _agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gsm8k_agent_under_test", ROOT / "examples" / "gsm8k" / "agent.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calculator_is_safe_and_correct() -> None:
    a = _agent()
    assert a.calculate("(48 / 2) + 48") == 72
    assert a.calculate("2^10") == 1024
    assert a.calculate("1,000 * 3") == 3000
    assert a.calculate("-3 + 7 // 2 % 5") == 0
    for bad in ("__import__('os')", "x + 1", "2 ** 1000", "1/0", "(", "a" * 300):
        with pytest.raises(ValueError):
            a.calculate(bad)


def test_reward_compares_the_final_number_with_the_gsm8k_answer() -> None:
    a = _agent()
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert a.reference_answer(solution) == 72
    assert a.reward("so the total is\n#### 72", solution) == 1.0
    assert a.reward("24 in May, 72 in total", solution) == 1.0
    assert a.reward("#### 72.0 clips, not 5", solution) == 1.0
    assert a.reward("#### 71", solution) == 0.0
    assert a.reward("no idea", solution) == 0.0
    assert a.reward("#### 1,234", "#### 1,234") == 1.0
    with pytest.raises(ValueError, match="no '#### N'"):
        a.reference_answer("no answer line")


def test_first_gsm8k_rows_have_answers() -> None:
    a = _agent()
    for name in ("train.jsonl", "test.jsonl"):
        with (ROOT / "examples" / "gsm8k" / "data" / name).open() as fh:
            for _, line in zip(range(50), fh, strict=False):
                row = json.loads(line)
                a.reference_answer(row["answer"])
    assert (ROOT / "examples" / "gsm8k" / "data" / "LICENSE").read_text().startswith("MIT License")


def test_tool_call_round_then_final_answer_over_http() -> None:
    """The fake server answers the question with a calculator call; the agent runs the tool, sends the
    result back as a ``tool`` message and takes the second reply as the final answer."""
    a = _agent()
    with FakeInferenceServer() as server:
        llm = LLM(base_url=server.url, model="policy", api_key="k")  # server.url ends in /v1
        task = {"question": "CALL:calculator", "answer": "#### 72"}
        reward = a.solve(task, llm)
        assert reward == 0.0  # the fake's second reply is "ok": no number
        assert server.calls == 2
        direct = a.solve({"question": "REPLY:####72", "answer": "#### 72"}, llm)
        assert direct == 1.0
        assert server.calls == 3
