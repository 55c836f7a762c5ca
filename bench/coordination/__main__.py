"""``python -m bench.coordination``: run parts A–D against a local broker, print one table, write JSON.

Bounded: every repetition has a timeout, and once ``--budget-s`` is spent the remaining
configurations are skipped (and listed as skipped). Exit code 0 when every part ran (targets are
reported, not enforced), 1 when a part failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.coordination.harness import BenchError, broker, remove_tree
from bench.coordination.parts import Options, RunSpec, run_once
from bench.coordination.report import machine, markdown, now_iso, print_table, targets
from bench.coordination.stats import median_of

log = logging.getLogger("bench.coordination")

METHOD = (
    "Each repetition: fresh topic prefix (samples/requests/trajectories/batches with LogAppendTime "
    "timestamps), fresh `streamrl worker` processes (default concurrency) in one consumer group, "
    "warm-up (10 × workers rollouts; part D one full batch), then N samples published at once. "
    "rollouts/s = N / (LogAppendTime of the last Trajectory − wall clock before the first sample was "
    "produced); service time = Trajectory LogAppendTime − Trajectory.started_at (worker took the sample); "
    "LLM latency = the agent's perf_counter around AsyncOpenAI.chat.completions.create; gateway added "
    "latency = gateway p50/p99 − direct p50/p99. C: bare confluent-kafka producer → consumer process, "
    "same producer/consumer configs and record bytes as B. D: B with `streamrl streams`, to the last "
    "batch record's LogAppendTime."
)


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    p = argparse.ArgumentParser(prog="python -m bench.coordination", description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="ABCD", help="which parts to run, e.g. AC (default ABCD)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per configuration (median reported)")
    p.add_argument("--n-a", type=int, default=2000, help="measured rollouts in part A")
    p.add_argument("--n-b", type=int, default=400, help="measured rollouts in parts B and D")
    p.add_argument("--workers-a", type=_csv_ints, default=[1, 2, 4], help="worker counts of part A")
    p.add_argument("--workers-b", type=_csv_ints, default=[1, 4], help="worker counts of part B")
    p.add_argument(
        "--probe-n",
        type=int,
        default=200,
        help="part B latency probe: rollouts with 1 worker at concurrency 1, direct and gateway (0 = off)",
    )
    p.add_argument("--workers-d", type=_csv_ints, default=[1], help="worker counts of part D")
    p.add_argument(
        "--reps-d", type=int, default=1, help="repetitions of part D (the streams app starts slowly)"
    )
    p.add_argument(
        "--ceiling-rollouts", type=int, default=20_000, help="rollouts (× 3 events) moved in part C"
    )
    p.add_argument("--timeout-s", type=float, default=90.0, help="limit of one repetition's measured phase")
    p.add_argument(
        "--budget-s",
        type=float,
        default=540.0,
        help="skip the A/B repetitions left once this much time is spent (C and D always run, each bounded)",
    )
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="directory of the JSON results")
    p.add_argument("--work-dir", type=Path, default=None, help="where run directories and broker data go")
    p.add_argument("--keep", action="store_true", help="keep every run directory (configs, process logs)")
    p.add_argument(
        "--profile", action="store_true", help="run worker 0 under pyinstrument; reports go to --out"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=YAML",
        help="config override for every process, e.g. worker.concurrency=32 (repeatable; default: none)",
    )
    p.add_argument(
        "--readme", type=Path, default=None, help="print the README table of a results file and exit"
    )
    args = p.parse_args(argv)
    if set(args.parts) - set("ABCD") or not args.parts:
        p.error(f"--parts takes letters of ABCD, got {args.parts!r}")
    if args.reps < 1 or args.reps_d < 1 or args.n_a < 1 or args.n_b < 1:
        p.error("--reps, --reps-d, --n-a and --n-b must be >= 1")
    try:
        args.overrides = parse_overrides(args.overrides)
    except ValueError as exc:
        p.error(str(exc))
    if args.n_b % 40:
        p.error("--n-b must be a multiple of 40 (part D groups of 8, 5 groups per batch)")
    return args


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["worker.concurrency=32", "worker.consumer_properties={fetch.wait.max.ms: '5'}"]`` → nested sections.

    Raises:
        ValueError: an item is not ``section.key=value`` or its value is not YAML.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        path, sep, raw = item.partition("=")
        section, dot, key = path.partition(".")
        if not sep or not dot or not section or not key:
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. worker.concurrency=32")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: the value is not YAML: {exc}") from exc
        out.setdefault(section, {})[key] = value
    return out


def _jobs(args: argparse.Namespace) -> list[list[tuple[RunSpec, int]]]:
    """Blocks of ``(spec, repetition)`` in execution order; each block's specs become rows of the results.

    Part B runs its direct and gateway repetitions alternately (direct, gateway, direct, ...) so both
    paths see the same machine load; the added latency is their difference.
    """
    blocks: list[list[tuple[RunSpec, int]]] = []
    if "A" in args.parts:
        for w in args.workers_a:
            spec = RunSpec("A", "trivial", w, args.n_a)
            blocks.append([(spec, r) for r in range(args.reps)])
    if "B" in args.parts:
        for w in args.workers_b:
            direct = RunSpec("B", "llm_direct", w, args.n_b, "direct")
            gateway = RunSpec("B", "llm_gateway", w, args.n_b, "gateway")
            blocks.append([(s, r) for r in range(args.reps) for s in (direct, gateway)])
        if args.probe_n:  # latency probe: one rollout at a time, so no call waits behind another on the loop
            direct = RunSpec("B", "llm_direct", 1, args.probe_n, "direct", concurrency=1)
            gateway = RunSpec("B", "llm_gateway", 1, args.probe_n, "gateway", concurrency=1)
            blocks.append([(s, r) for r in range(args.reps) for s in (direct, gateway)])
    if "D" in args.parts:
        for w in args.workers_d:
            spec = RunSpec("D", "llm_gateway", w, args.n_b, "gateway")
            blocks.append([(spec, r) for r in range(args.reps_d)])
    return blocks


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected parts; returns the results dict (also written to ``--out``)."""
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "date": now_iso(), "machine": machine(), "method": METHOD,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "parts": {}, "errors": [], "skipped": [],
    }  # fmt: skip
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="streamrl-bench-"))
    with broker(work) as bootstrap:
        results["bootstrap"] = bootstrap
        opts = Options(bootstrap, work_root=work, timeout_s=args.timeout_s, keep=args.keep,
                       profile_dir=args.out if args.profile else None, overrides=args.overrides)  # fmt: skip
        c_done = "C" not in args.parts
        for block in _jobs(args):
            if block[0][0].part == "D" and not c_done:
                _run_c(args, opts, results)
                c_done = True
            runs: dict[str, list[dict[str, Any]]] = {spec.label: [] for spec, _ in block}
            for spec, rep in block:
                reps = args.reps_d if spec.part == "D" else args.reps
                if spec.part != "D" and time.monotonic() - t_start > args.budget_s:
                    results["skipped"].append(f"{spec.label} repetition {rep}: time budget spent")
                    continue
                log.info("%s repetition %d/%d ...", spec.label, rep + 1, reps)
                try:
                    figures = run_once(spec, opts, rep)
                except BenchError as exc:
                    log.error("%s", exc)
                    results["errors"].append(str(exc))
                    continue
                log.info("%s repetition %d: %s", spec.label, rep + 1, _brief(figures))
                runs[spec.label].append(figures)
            for spec in dict.fromkeys(s for s, _ in block):
                done = runs[spec.label]
                row = {"workers": spec.workers, "concurrency": spec.concurrency, "path": spec.path,
                       "agent": spec.agent, "n": spec.n, "reps": done, "median": median_of(done)}  # fmt: skip
                results["parts"].setdefault(spec.part, []).append(row)
        if not c_done:
            _run_c(args, opts, results)
    if args.work_dir is None and not args.keep and not results["errors"]:
        remove_tree(work)  # the broker's data; kept with the failed runs' logs when something failed
    results["targets"] = [t.as_dict() for t in targets(results)]
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return results


def _run_c(args: argparse.Namespace, opts: Options, results: dict[str, Any]) -> None:
    from bench.coordination.ceiling import run_ceiling
    from bench.coordination.workload import EventMix, synthetic_mix
    from streamrl.schemas.serde import Serde

    cap = opts.captured
    if cap.get("request") and cap.get("trajectory"):
        mix = EventMix(cap["sample"], cap["request"], cap["trajectory"], "part B")
    else:
        mix = synthetic_mix(Serde())
    log.info(
        "C: bare confluent-kafka, %d rollouts × 3 events (%s bytes) ...", args.ceiling_rollouts, mix.source
    )
    try:
        results["parts"]["C"] = run_ceiling(
            opts.bootstrap, mix, args.ceiling_rollouts, work_root=opts.work_root
        )
        log.info("C: %s", _brief(results["parts"]["C"]))
    except BenchError as exc:
        log.error("C: %s", exc)
        results["errors"].append(f"C: {exc}")


def _brief(figures: dict[str, Any]) -> str:
    keys = ("rollouts_per_s", "service_p50_ms", "service_p99_ms", "llm_p50_ms", "llm_p99_ms", "failed",
            "batch_rollouts_per_s", "group_to_batch_p99_ms", "events_per_s")  # fmt: skip
    return ", ".join(f"{k}={figures[k]:.4g}" for k in keys if isinstance(figures.get(k), int | float)
                     and math.isfinite(figures[k]))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    if args.readme is not None:
        saved = json.loads(args.readme.read_text())
        saved["targets"] = [t.as_dict() for t in targets(saved)]  # judged with this version's rules
        print(markdown(saved))
        return 0
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{results['date'][:10]}.json"
    if path.exists():
        path = args.out / f"{results['date'][:19].replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
    print_table(results)
    print(f"results: {path}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
