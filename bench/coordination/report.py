"""Results of the coordination benchmark: targets, the rich table, the JSON file and the README table."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["Target", "machine", "markdown", "print_table", "targets"]


def machine() -> dict[str, Any]:
    """Cores, memory (GiB), CPU model, Python and the 1-minute load average when the run started."""
    mem_gib = math.nan
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = int(line.split()[1]) / 2**20
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan,
    }


@dataclass(frozen=True)
class Target:
    """One target of the issue: ``value`` compared with ``bound`` (``>=`` or ``<=``)."""

    name: str
    value: float
    op: str
    bound: float
    unit: str
    resolution: float = 0.0
    """Run-to-run spread of the figure's baseline (same unit); above ``bound`` the verdict is None."""

    @property
    def met(self) -> bool | None:
        """Whether it is met; None when the figure is missing or the measurement cannot resolve the bound."""
        if not math.isfinite(self.value) or not self.resolution <= self.bound:
            return None
        return self.value >= self.bound if self.op == ">=" else self.value <= self.bound

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "value": self.value, "op": self.op, "bound": self.bound, "unit": self.unit,
                "resolution": self.resolution, "met": self.met}  # fmt: skip


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r.get("median", {})
    return {}


def _get(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) else math.nan


def gateway_added(
    rows: list[dict[str, Any]], workers: int, concurrency: int | None = None
) -> dict[str, float]:
    """Gateway added latency for ``workers`` (× ``concurrency``, None = default): gateway − direct, in ms.

    Median-of-repetitions p50 (p99) via the gateway minus the direct path's.
    """
    gw = _find(rows, path="gateway", workers=workers, concurrency=concurrency)
    direct = _find(rows, path="direct", workers=workers, concurrency=concurrency)
    return {
        "added_p50_ms": _get(gw, "llm_p50_ms") - _get(direct, "llm_p50_ms"),
        "added_p99_ms": _get(gw, "llm_p99_ms") - _get(direct, "llm_p99_ms"),
    }


def spread(rows: list[dict[str, Any]], key: str, **match: Any) -> float:
    """max − min of ``key`` over the repetitions of the row matching ``match`` (0 when it cannot be told)."""
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            vals = [float(x[key]) for x in r.get("reps", []) if isinstance(x.get(key), int | float)]
            return max(vals) - min(vals) if vals else 0.0
    return 0.0


def targets(results: dict[str, Any]) -> list[Target]:
    """The issue's targets, evaluated on the medians in ``results``."""
    parts = results.get("parts", {})
    a, b = parts.get("A", []), parts.get("B", [])
    probe = bool(_find(b, path="direct", workers=1, concurrency=1))
    conc = 1 if probe else None  # latency targets on the probe (no queueing behind other rollouts) if it ran
    added = gateway_added(b, 1, conc)
    where = "1 worker, concurrency 1" if probe else "1 worker"
    gw1 = _get(_find(b, path="gateway", workers=1, concurrency=None), "rollouts_per_s")
    best_gw = max((_get(r.get("median", {}), "rollouts_per_s") for r in b
                   if r.get("path") == "gateway" and r.get("concurrency") is None), default=math.nan)  # fmt: skip
    ceiling = _get(parts.get("C", {}), "events_per_s")
    return [
        Target(
            "A: rollouts/s, 1 worker", _get(_find(a, workers=1), "rollouts_per_s"), ">=", 2000, "rollouts/s"
        ),
        # the added latency is a difference of two runs' percentiles: when the direct path alone varies
        # by more than the bound from one repetition to the next (a loaded machine), it cannot be judged
        Target(
            f"B: gateway added latency p50, {where}",
            added["added_p50_ms"],
            "<=",
            1.0,
            "ms",
            spread(b, "llm_p50_ms", path="direct", workers=1, concurrency=conc),
        ),
        Target(
            f"B: gateway added latency p99, {where}",
            added["added_p99_ms"],
            "<=",
            3.0,
            "ms",
            spread(b, "llm_p99_ms", path="direct", workers=1, concurrency=conc),
        ),
        Target("B: rollouts/s through the gateway, 1 worker", gw1, ">=", 500, "rollouts/s"),
        Target("C: pipeline / bare-Kafka ceiling", 3 * best_gw / ceiling, ">=", 1 / 3, "fraction"),
    ]


def _f(v: Any, digits: int = 1) -> str:
    if not isinstance(v, int | float) or not math.isfinite(float(v)):
        return "—"
    return f"{v:,.{digits}f}"


COLUMNS = ("part", "configuration", "throughput", "p50", "p99", "worker CPU/rollout", "what")


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows ``[part, configuration, throughput, p50, p99, worker CPU ms per rollout, what]`` of the table."""
    parts = results.get("parts", {})
    rows: list[list[str]] = []

    def cpu(m: dict[str, Any]) -> str:
        v = m.get("worker_cpu_ms_per_rollout")
        return f"{_f(v, 2)} ms" if isinstance(v, int | float) and math.isfinite(v) else ""

    for r in parts.get("A", []):
        m = r.get("median", {})
        rows.append(["A", f"trivial, {r['workers']} worker(s)", f"{_f(m.get('rollouts_per_s'), 0)} rollouts/s",
                     _f(m.get("service_p50_ms")), _f(m.get("service_p99_ms")), cpu(m),
                     "service time (ms)"])  # fmt: skip

    def setup(r: dict[str, Any]) -> str:
        conc = r.get("concurrency")
        return f"{r['workers']} worker(s)" + ("" if conc is None else f", concurrency {conc}")

    for r in parts.get("B", []):
        m = r.get("median", {})
        rows.append(["B", f"1 LLM call, {r['path']}, {setup(r)}",
                     f"{_f(m.get('rollouts_per_s'), 0)} rollouts/s", _f(m.get("llm_p50_ms"), 2),
                     _f(m.get("llm_p99_ms"), 2), cpu(m), "LLM call latency (ms)"])  # fmt: skip
    for r in parts.get("B", []):
        if r.get("path") != "gateway":
            continue
        w, conc = r["workers"], r.get("concurrency")
        added = gateway_added(parts["B"], w, conc)
        gw, direct = r.get("median", {}), _find(parts["B"], path="direct", workers=w, concurrency=conc)
        d_cpu = _get(gw, "worker_cpu_ms_per_rollout") - _get(direct, "worker_cpu_ms_per_rollout")
        rows.append(["B", f"gateway added latency, {setup(r)}", "", _f(added["added_p50_ms"], 2),
                     _f(added["added_p99_ms"], 2), f"{_f(d_cpu, 2)} ms" if math.isfinite(d_cpu) else "",
                     "gateway − direct (ms)"])  # fmt: skip
    c = parts.get("C")
    if c:
        rows.append(["C", f"bare confluent-kafka, {c.get('events', 0):,} events", f"{_f(c.get('events_per_s'), 0)} events/s",
                     "", "", "", f"{c.get('bytes_source')} bytes: sample {_f(c.get('sample_bytes'), 0)} B, request "
                     f"{_f(c.get('request_bytes'), 0)} B, trajectory {_f(c.get('trajectory_bytes'), 0)} B"])  # fmt: skip
    for r in parts.get("D", []):
        m = r.get("median", {})
        rows.append(["D", f"B + streams → batches, {r['workers']} worker(s)",
                     f"{_f(m.get('batch_rollouts_per_s'), 0)} rollouts/s", _f(m.get("group_to_batch_p50_ms")),
                     _f(m.get("group_to_batch_p99_ms")), cpu(m), "group's last Trajectory → batch (ms)"])  # fmt: skip
    return rows


def _reps(results: dict[str, Any]) -> str:
    cfg = results["config"]
    text = f"{cfg['reps']} repetitions"
    if "D" in cfg.get("parts", "") and cfg.get("reps_d", cfg["reps"]) != cfg["reps"]:
        text += f"; D: {cfg['reps_d']}"
    return text


def print_table(results: dict[str, Any]) -> None:
    """Print the summary and the targets with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    t = Table(title=f"StreamRL coordination benchmark, {results['date']} (median of {_reps(results)})")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("part", "configuration", "what") else "right")
    for row in table_rows(results):
        t.add_row(*row)
    console.print(t)
    tt = Table(title="targets")
    for col in ("target", "value", "bound", "met"):
        tt.add_column(col)
    for tg in results.get("targets", []):
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: _undecided(tg)}[tg["met"]]
        tt.add_row(tg["name"], f"{_f(tg['value'], 3)} {tg['unit']}", f"{tg['op']} {tg['bound']:g}", met)
    console.print(tt)
    for err in results.get("errors", []):
        console.print(f"[red]error:[/] {err}")


def _undecided(tg: dict[str, Any]) -> str:
    res = tg.get("resolution", 0.0)
    if isinstance(res, int | float) and math.isfinite(res) and res > tg["bound"]:
        return f"not measurable here (direct path varies {res:,.1f} {tg['unit']} between runs)"
    return "—"


def markdown(results: dict[str, Any]) -> str:
    """The README table (Markdown) of one results file."""
    m = results["machine"]
    lines = [
        f"Run {results['date']} on {m['cores']} cores, {m['memory_gib']} GiB ({m['cpu']}), Python {m['python']}, "
        f"1-min load average {m['load_avg_1m']:.1f} at start; median of {_reps(results)}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    lines += ["", "| target | value | bound | met |", "|---|---:|---:|---|"]
    for tg in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: _undecided(tg)}[tg["met"]]
        lines.append(
            f"| {tg['name']} | {_f(tg['value'], 3)} {tg['unit']} | {tg['op']} {tg['bound']:g} | {met} |"
        )
    return "\n".join(lines)


def now_iso() -> str:
    """UTC time to the second, ISO 8601."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
