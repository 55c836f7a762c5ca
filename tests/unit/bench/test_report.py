"""Targets, table rows and the README table from a results dict (no broker)."""

from __future__ import annotations

import math

import pytest

from bench.coordination.__main__ import parse_args, parse_overrides
from bench.coordination.report import gateway_added, markdown, table_rows, targets


def _results() -> dict:
    def row(workers: int, path: str, **median: float) -> dict:
        return {"workers": workers, "path": path, "median": median}

    return {
        "date": "2026-01-01T00:00:00+00:00",
        "config": {"reps": 3},
        "machine": {
            "cores": 2,
            "memory_gib": 23.4,
            "cpu": "test cpu",
            "python": "3.11.7",
            "load_avg_1m": 1.5,
        },
        "parts": {
            "A": [row(1, "-", rollouts_per_s=2500.0, service_p50_ms=2.0, service_p99_ms=9.0)],
            "B": [
                row(1, "direct", rollouts_per_s=700.0, llm_p50_ms=2.0, llm_p99_ms=5.0),
                row(1, "gateway", rollouts_per_s=450.0, llm_p50_ms=2.5, llm_p99_ms=9.0),
            ],
            "C": {
                "events": 60000,
                "events_per_s": 3000.0,
                "bytes_source": "part B",
                "sample_bytes": 300.0,
                "request_bytes": 1200.0,
                "trajectory_bytes": 290.0,
            },
        },
    }


def test_gateway_added_latency_is_gateway_minus_direct() -> None:
    added = gateway_added(_results()["parts"]["B"], 1)
    assert added == {"added_p50_ms": pytest.approx(0.5), "added_p99_ms": pytest.approx(4.0)}
    assert math.isnan(gateway_added(_results()["parts"]["B"], 4)["added_p50_ms"])


def test_targets_evaluated_on_medians() -> None:
    met = {t.name: t.met for t in targets(_results())}
    assert met["A: rollouts/s, 1 worker"] is True
    assert met["B: gateway added latency p50, 1 worker"] is True
    assert met["B: gateway added latency p99, 1 worker"] is False
    assert met["B: rollouts/s through the gateway, 1 worker"] is False
    # 3 × 450 / 3000 = 0.45 >= 1/3
    c = next(t for t in targets(_results()) if t.name.startswith("C:"))
    assert c.value == pytest.approx(0.45) and c.met is True


def test_missing_part_gives_no_verdict() -> None:
    res = _results()
    del res["parts"]["A"]
    a = next(t for t in targets(res) if t.name.startswith("A:"))
    assert a.met is None


def test_table_and_markdown_name_every_part() -> None:
    res = _results()
    res["targets"] = [t.as_dict() for t in targets(res)]
    rows = table_rows(res)
    assert [r[0] for r in rows] == ["A", "B", "B", "B", "C"]
    md = markdown(res)
    assert "2 cores, 23.4 GiB" in md and "| A | trivial, 1 worker(s) | 2,500 rollouts/s |" in md
    assert "**no**" in md and "| yes |" in md


def test_overrides_parse_yaml_values() -> None:
    assert parse_overrides(
        ["worker.concurrency=32", "worker.consumer_properties={fetch.wait.max.ms: '5'}"]
    ) == {"worker": {"concurrency": 32, "consumer_properties": {"fetch.wait.max.ms": "5"}}}
    with pytest.raises(ValueError, match=r"SECTION\.KEY=VALUE"):
        parse_overrides(["concurrency=3"])


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--parts", "AX"])
    assert exc.value.code == 2
    assert "--parts takes letters of ABCD" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--n-b", "50"])
    assert parse_args(["--parts", "AC", "--workers-a", "1,2"]).workers_a == [1, 2]


def test_added_latency_is_not_judged_when_the_baseline_varies_more_than_the_bound() -> None:
    res = _results()
    direct = res["parts"]["B"][0]
    direct["reps"] = [{"llm_p50_ms": 2.0, "llm_p99_ms": 5.0}, {"llm_p50_ms": 9.0, "llm_p99_ms": 5.5}]
    tg = {t.name: t for t in targets(res)}
    p50, p99 = tg["B: gateway added latency p50, 1 worker"], tg["B: gateway added latency p99, 1 worker"]
    assert p50.resolution == pytest.approx(7.0) and p50.met is None
    assert p99.resolution == pytest.approx(0.5) and p99.met is False  # 0.5 ms spread resolves a 3 ms bound
    res["targets"] = [t.as_dict() for t in targets(res)]
    assert "not measurable here (direct path varies 7.0 ms between runs)" in markdown(res)


def test_latency_targets_use_the_concurrency_1_probe_when_it_ran() -> None:
    res = _results()
    res["parts"]["B"] += [
        {"workers": 1, "concurrency": 1, "path": "direct", "median": {"llm_p50_ms": 1.2, "llm_p99_ms": 2.0}},
        {"workers": 1, "concurrency": 1, "path": "gateway", "median": {"llm_p50_ms": 1.9, "llm_p99_ms": 3.5}},
    ]
    tg = {t.name: t for t in targets(res)}
    assert tg["B: gateway added latency p50, 1 worker, concurrency 1"].value == pytest.approx(0.7)
    assert tg["B: gateway added latency p99, 1 worker, concurrency 1"].met is True
    # throughput stays on the default-concurrency run
    assert tg["B: rollouts/s through the gateway, 1 worker"].value == 450.0
    assert any("concurrency 1" in r[1] for r in table_rows(res))
