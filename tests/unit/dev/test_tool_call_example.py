"""The tool-call example's pieces that need no model: the reward, the data, the config that names SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.tool_call.agent import messages_for
from examples.tool_call.tools import EXAMPLES, FORMAT_CREDIT, TOOLS, score_call
from streamrl.config import load_settings
from streamrl.config.dev import ModelSpec
from streamrl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _call(name: str, args: dict | str) -> list[dict]:
    return [{"function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}]


def test_reward_from_the_calls_json() -> None:
    want = {"amount": 38, "from_currency": "CAD", "to_currency": "CNY"}
    assert score_call(_call("convert_currency", want), "convert_currency", want) == 1.0
    assert (
        score_call(
            _call("convert_currency", {**want, "amount": 38.0, "to_currency": "cny"}),
            "convert_currency",
            want,
        )
        == 1.0
    )
    assert score_call([], "convert_currency", want) == 0.0
    assert score_call(_call("set_timer", {"minutes": 3}), "convert_currency", want) == FORMAT_CREDIT
    assert score_call(_call("convert_currency", "{not json"), "convert_currency", want) == FORMAT_CREDIT
    two_right = FORMAT_CREDIT + (1 - FORMAT_CREDIT) * 2 / 3
    assert score_call(
        _call("convert_currency", {**want, "amount": 5}), "convert_currency", want
    ) == pytest.approx(two_right)
    extra = FORMAT_CREDIT + (1 - FORMAT_CREDIT) * 3 / 4  # an extra argument costs like a missing one
    assert score_call(
        _call("convert_currency", {**want, "note": "x"}), "convert_currency", want
    ) == pytest.approx(extra)


def test_data_is_disjoint_from_the_example_exchanges_and_val_from_train() -> None:
    rows = {
        s: [json.loads(x) for x in (ROOT / f"examples/tool_call/data/{s}.jsonl").open()]
        for s in ("train", "val")
    }
    assert len(rows["train"]) == 600 and len(rows["val"]) == 60 and all(r["eval"] for r in rows["val"])
    shown = {json.dumps(args, sort_keys=True) for _q, args in EXAMPLES.values()}
    for r in rows["train"] + rows["val"]:
        assert r["tool"] in TOOLS and json.dumps(r["arguments"], sort_keys=True) not in shown
    train_cities = {r["arguments"]["city"] for r in rows["train"] if r["tool"] == "get_weather"}
    assert not train_cities & {r["arguments"]["city"] for r in rows["val"] if r["tool"] == "get_weather"}
    msgs = messages_for(rows["val"][0])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and "<tool_call>" in msgs[1]["content"]


def test_config_names_the_pretrained_model() -> None:
    settings = load_settings(ROOT / "configs/tool_call.yaml")
    assert settings.dev.model.pretrained == "smollm2-135m-instruct"
    assert settings.dev.model.path == Path("models/smollm2-135m-instruct")
    assert settings.trainer.lora is not None and settings.worker.agent == "examples.tool_call.agent:solve"
    assert ModelSpec(pretrained="smollm2-135m-instruct", path=Path("m")).path == Path("m")
    with pytest.raises(ConfigError, match=r"dev\.model"):
        load_settings(None, dev={"model": {"pretrained": "org/model"}})


def test_the_prompted_agents_transcript() -> None:
    from examples.tool_call.prompted import transcript

    seed = (ROOT / "configs/fewshot_seed.txt").read_text()
    msgs = transcript(seed.format(question="Start a 9 minute timer."))
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    args = json.loads(msgs[1]["content"].removeprefix("<tool_call>").removesuffix("</tool_call>"))
    assert args == {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "fahrenheit"}}
    assert msgs[2]["content"] == "Start a 9 minute timer."
    assert transcript("Be brief.\nUser:\nhi\n") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    with pytest.raises(ValueError, match="no 'user:'"):
        transcript("assistant:\nhello")


def test_the_fewshot_config_optimizes_the_prompted_agent() -> None:
    settings = load_settings(ROOT / "configs/fewshot.yaml")
    opt = settings.optimize
    assert settings.worker.agent == "examples.tool_call.prompted:solve" and opt.agent_name == "tool_call"
    assert opt.algorithm.type == "fewshot" and opt.algorithm.position == "before"
    assert opt.seed_prompt_file is not None and (ROOT / opt.seed_prompt_file).exists()
    assert settings.dev.model.pretrained == "smollm2-135m-instruct"
