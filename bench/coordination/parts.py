"""Parts A, B and D: rollouts through real ``streamrl worker`` processes (and ``streamrl streams`` for D).

One repetition = a fresh topic prefix, fresh worker processes (and a fresh fake vLLM server / streams
app where the part needs one), a warm-up, then ``n`` samples published at once. Figures come from the
records' broker LogAppendTime and the Trajectory fields (see ``harness``).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.coordination.agents import FAKE_URL_ENV, LATENCY_REWARD
from bench.coordination.harness import (
    BenchError,
    Msg,
    Pipeline,
    Proc,
    make_run_dir,
    remove_tree,
    start_fake_vllm,
)
from bench.coordination.stats import (
    TrajectoryTiming,
    group_to_batch_ms,
    percentile,
    rate_per_s,
    service_times_ms,
)
from bench.coordination.workload import SampleSpec, gsm8k_questions, make_samples
from streamrl.schemas import LLMRequest, RolloutStatus, TrainingBatch, Trajectory
from streamrl.schemas.serde import Serde

log = logging.getLogger(__name__)

MEASURED_TAG = "m"
WARM_TAG = "warm"
D_GROUP_SIZE = 8
D_GROUPS_PER_BATCH = 5


@dataclass(frozen=True)
class RunSpec:
    """One configuration of a part (repeated ``reps`` times).

    Attributes:
        part: ``A``, ``B`` or ``D``.
        agent: attribute of ``bench.coordination.agents`` the workers run.
        workers: worker processes in the consumer group.
        n: measured rollouts.
        path: ``direct``/``gateway`` for LLM runs, ``-`` for part A.
        concurrency: rollouts at once per worker; None = the worker's default (``worker.concurrency``).
    """

    part: str
    agent: str
    workers: int
    n: int
    path: str = "-"
    concurrency: int | None = None

    @property
    def llm(self) -> bool:
        """Whether the agent calls the fake vLLM server."""
        return self.agent != "trivial"

    @property
    def streams(self) -> bool:
        """Whether the streams aggregator runs (part D)."""
        return self.part == "D"

    @property
    def label(self) -> str:
        """Short name for logs and directories."""
        conc = "" if self.concurrency is None else f"-c{self.concurrency}"
        return f"{self.part}-{self.path}-w{self.workers}{conc}".replace("--", "-")


@dataclass
class Options:
    """What every repetition shares.

    Attributes:
        bootstrap: the cluster.
        work_root: where run directories go (None = the temp dir).
        timeout_s: limit of one repetition's measured phase (after warm-up), in seconds.
        start_timeout_s: limit of process start, group join and warm-up, in seconds.
        keep: keep run directories (config, process logs) even when the repetition succeeded.
        profile_dir: if set, worker 0 runs under pyinstrument and its report is written there.
    """

    bootstrap: str
    work_root: Path | None = None
    timeout_s: float = 90.0
    start_timeout_s: float = 120.0
    keep: bool = False
    profile_dir: Path | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Config sections merged into every repetition's config (``--set worker.concurrency=32``)."""
    captured: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    """Request/trajectory bytes of the last gateway run (part C replays them)."""


def _worker_cmd(spec: RunSpec, index: int, opts: Options) -> list[str]:
    args = [
        "worker",
        "--agent",
        f"bench.coordination.agents:{spec.agent}",
        "--worker-id",
        f"bench-{spec.label}-{index}",
    ]
    if opts.profile_dir is not None and index == 0:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
        out = opts.profile_dir / f"profile-{spec.label}.txt"
        return ["-m", "pyinstrument", "-r", "text", "-o", str(out), "-m", "streamrl.cli", *args]
    return args


def _spawn_worker(pipe: Pipeline, spec: RunSpec, index: int, opts: Options, env: dict[str, str]) -> Proc:
    args = _worker_cmd(spec, index, opts)
    if args[0] == "-m":  # profiled: python -m pyinstrument ... -m streamrl.cli worker ...
        from bench.coordination.harness import child_env

        cmd = [sys.executable, *args]
        proc = Proc(f"worker{index}", cmd, env=child_env(pipe.config_path, env), cwd=pipe.run_dir,
                    log_path=pipe.run_dir / f"worker{index}.log")  # fmt: skip
        pipe.procs.append(proc)
        return proc
    return pipe.spawn(f"worker{index}", args, env)


def _timings(msgs: list[Msg], serde: Serde, tag: str) -> tuple[list[TrajectoryTiming], list[Trajectory]]:
    """Decode the trajectories of rollouts whose task id starts with ``<tag>-`` (first record per rollout)."""
    timings, trajs, seen = [], [], set()
    for m in sorted(msgs, key=lambda m: m.ts_ms):
        t = serde.decode(m.value or b"", Trajectory, topic=m.topic, partition=m.partition, offset=m.offset)
        if not t.task_id.startswith(f"{tag}-") or t.rollout_id in seen:
            continue
        seen.add(t.rollout_id)
        ok = t.status == RolloutStatus.succeeded
        timings.append(TrajectoryTiming(t.rollout_id, t.started_at.timestamp() * 1000.0, float(m.ts_ms), ok))
        trajs.append(t)
    return timings, trajs


def _wait_distinct(
    pipe: Pipeline, serde: Serde, expected: int, total: int, deadline: float
) -> tuple[list[Msg], bool]:
    """Wait for ``expected`` distinct measured rollouts (``total`` records in the topic) until ``deadline``.

    Returns:
        ``(trajectory records, complete)``: on timeout the records that did arrive and False, so a
        slow pipeline still yields figures (flagged ``complete: false``) instead of none.
    """
    try:
        pipe.wait_count("trajectories", total, max(1.0, deadline - time.monotonic()), "trajectories")
    except BenchError as exc:
        if "exited with code" in str(exc):
            raise
    while True:
        msgs = pipe.read("trajectories")
        if len(_timings(msgs, serde, MEASURED_TAG)[0]) >= expected:
            return msgs, True
        if time.monotonic() > deadline:
            return msgs, False
        time.sleep(0.2)


def run_once(spec: RunSpec, opts: Options, rep: int) -> dict[str, Any]:
    """Run one repetition of ``spec``; returns its figures (ms, rollouts/s) and counts.

    Raises:
        BenchError: a process died, the group did not form, or records did not arrive in time; the
            run directory with every process log is kept and named in the message.
    """
    serde = Serde()
    run_dir = make_run_dir(opts.work_root, f"{spec.label}-r{rep}")
    fake: Proc | None = None
    pipe: Pipeline | None = None
    ok = False
    try:
        fake_url = "http://127.0.0.1:9/v1"  # part A makes no call; the gateway needs some upstream
        if spec.llm:
            fake, fake_url = start_fake_vllm(run_dir)
        sections: dict[str, Any] = {"gateway": {"upstream_url": fake_url}}
        if spec.concurrency is not None:
            sections["worker"] = {"concurrency": spec.concurrency}
        questions = tuple(gsm8k_questions()) if spec.llm else ()
        group_size = D_GROUP_SIZE if spec.streams else 1
        if spec.streams:
            sections["rl"] = {
                "group_size": D_GROUP_SIZE,
                "train_batch_size": D_GROUPS_PER_BATCH,
                "max_staleness": 4,
            }
            sections["streams"] = {
                "state_dir": str(run_dir / "streams-state"), "blob_dir": str(run_dir / "blobs"),
                "batch_timeout_s": 5.0, "tick_interval_s": 0.5,
            }  # fmt: skip
        for section, values in opts.overrides.items():
            sections[section] = {**sections.get(section, {}), **values}
        pipe = Pipeline(opts.bootstrap, run_dir, **sections)
        env = {FAKE_URL_ENV: fake_url}
        if spec.streams:
            pipe.spawn("streams", ["streams", "--worker-log-level", "WARNING"])
        for i in range(spec.workers):
            _spawn_worker(pipe, spec, i, opts, env)
        pipe.wait_group(pipe.settings.group_id("workers"), spec.workers, opts.start_timeout_s)

        # warm-up: 10 × workers rollouts (part D: one full batch of groups), all through the real path
        warm_n = D_GROUP_SIZE * D_GROUPS_PER_BATCH if spec.streams else 10 * spec.workers
        warm = make_samples(SampleSpec(WARM_TAG, warm_n, group_size, questions, spec.streams), serde)
        pipe.publish("samples", warm)
        pipe.wait_count("trajectories", warm_n, opts.start_timeout_s, "warm-up trajectories")
        if spec.streams:
            pipe.wait_count("batches", 1, opts.start_timeout_s, "warm-up batch")
        warm_records = pipe.end_offsets("trajectories")

        measured = make_samples(SampleSpec(MEASURED_TAG, spec.n, group_size, questions, spec.streams), serde)
        deadline = time.monotonic() + opts.timeout_s
        workers = [p for p in pipe.procs if p.name.startswith("worker")]
        cpu0 = sum(p.cpu_s() for p in workers)
        t0_ms = pipe.publish("samples", measured)
        msgs, complete = _wait_distinct(pipe, serde, spec.n, warm_records + spec.n, deadline)
        cpu_s = sum(p.cpu_s() for p in workers) - cpu0  # includes the few ms of reading back, not more
        if not any((m.key or b"").startswith(f"{MEASURED_TAG}-".encode()) for m in msgs):
            raise BenchError(f"no measured rollout finished within {opts.timeout_s:.0f} s")
        figures = _rollout_figures(spec, msgs, serde, t0_ms)
        figures["complete"] = complete
        figures["worker_cpu_ms_per_rollout"] = cpu_s * 1000.0 / max(1, figures["rollouts"])
        figures["rollouts_per_worker_cpu_s"] = figures["rollouts"] / cpu_s if cpu_s > 0 else float("nan")
        if not complete:
            log.warning("%s repetition %d: only %d of %d rollouts within %.0f s; figures cover those",
                        spec.label, rep, figures["rollouts"], spec.n, opts.timeout_s)  # fmt: skip
        if spec.streams:
            n_groups = spec.n // D_GROUP_SIZE
            while True:  # partial batches (batch_timeout_s) can make more records than full batches would
                batch_figures = _batch_figures(pipe, msgs, serde, t0_ms, spec.n)
                if batch_figures["batched_groups"] >= n_groups or time.monotonic() > deadline + 30:
                    break
                pipe.check_procs()
                time.sleep(0.2)
            batch_figures["groups"] = n_groups
            batch_figures["batches_complete"] = batch_figures["batched_groups"] >= n_groups
            figures.update(batch_figures)
        if spec.path == "gateway":
            reqs = [
                m for m in pipe.read("requests") if (m.key or b"").startswith(f"{MEASURED_TAG}-".encode())
            ]
            figures["requests_recorded"] = len(reqs)
            figures.update(_in_gateway(reqs, msgs, serde))
            figures["request_bytes"] = sum(len(m.value or b"") for m in reqs) / max(1, len(reqs))
            trajs = [m for m in msgs if (m.key or b"").startswith(f"{MEASURED_TAG}-".encode())]
            opts.captured = {
                "request": [(m.key.decode(), m.value) for m in reqs[:256] if m.key and m.value],
                "trajectory": [(m.key.decode(), m.value) for m in trajs[:256] if m.key and m.value],
                "sample": measured[:256],
            }
        ok = True
        return figures
    except BenchError as exc:
        raise BenchError(f"{spec.label} repetition {rep}: {exc} (logs in {run_dir})") from exc
    finally:
        if pipe is not None:
            pipe.close()
        if fake is not None:
            fake.stop()
        if ok and not opts.keep:
            remove_tree(run_dir)


def _rollout_figures(spec: RunSpec, msgs: list[Msg], serde: Serde, t0_ms: float) -> dict[str, Any]:
    timings, trajs = _timings(msgs, serde, MEASURED_TAG)
    service = service_times_ms(timings)
    last_ack = max(t.acked_ms for t in timings)
    out: dict[str, Any] = {
        "rollouts": len(timings),
        "failed": sum(not t.ok for t in timings),
        "duplicates": sum(1 for m in msgs if (m.key or b"").startswith(f"{MEASURED_TAG}-".encode()))
        - len(timings),
        "rollouts_per_s": rate_per_s(len(timings), t0_ms, last_ack),
        "makespan_ms": last_ack - t0_ms,
        # Little's law: mean rollouts in service = total service time / makespan (≤ workers × concurrency)
        "mean_in_flight": sum(service) / max(1e-9, last_ack - t0_ms),
        "service_p50_ms": percentile(service, 50),
        "service_p99_ms": percentile(service, 99),
        "workers_seen": len({t.worker_id for t in trajs}),
        "trajectory_bytes": sum(len(m.value or b"") for m in msgs) / max(1, len(msgs)),
    }
    if spec.llm:
        lat = [r.value for t in trajs for r in t.rewards if r.name == LATENCY_REWARD]
        out["llm_calls_timed"] = len(lat)
        out["llm_p50_ms"] = percentile(lat, 50)
        out["llm_p99_ms"] = percentile(lat, 99)
    errors = [t.error for t in trajs if t.error]
    if errors:
        out["first_error"] = errors[0][:500]
    return out


def _in_gateway(req_msgs: list[Msg], traj_msgs: list[Msg], serde: Serde) -> dict[str, Any]:
    """Per call, the agent's latency minus the gateway's upstream time (``LLMRequest.latency_ms``), in ms.

    Paired within one run. It is everything but the upstream exchange: the agent's own client time
    (request building, response parsing: a few ms with the openai SDK, also paid on the direct path)
    plus the gateway's server and relay; so it is an upper bound of the gateway's share, kept in the
    JSON only (the table shows gateway − direct). The latency reward carries the ``request_id`` of the
    call it timed.
    """
    upstream = {}
    for m in req_msgs:
        r = serde.decode(m.value or b"", LLMRequest, topic=m.topic, partition=m.partition, offset=m.offset)
        upstream[r.request_id] = r.latency_ms
    _, trajs = _timings(traj_msgs, serde, MEASURED_TAG)
    inner = [
        rw.value - upstream[rw.request_id]
        for t in trajs
        for rw in t.rewards
        if rw.name == LATENCY_REWARD and rw.request_id in upstream
    ]
    return {
        "in_gateway_calls": len(inner),
        "in_gateway_p50_ms": percentile(inner, 50),
        "in_gateway_p99_ms": percentile(inner, 99),
        "upstream_p50_ms": percentile(list(upstream.values()), 50),
    }


def _batch_figures(
    pipe: Pipeline, traj_msgs: list[Msg], serde: Serde, t0_ms: float, n: int
) -> dict[str, Any]:
    """Part D: rollouts/s until the last batch record, and group's last Trajectory → its batch delays."""
    last_traj: dict[str, float] = {}
    for m in traj_msgs:
        t = serde.decode(m.value or b"", Trajectory, topic=m.topic, partition=m.partition, offset=m.offset)
        if t.task_id.startswith(f"{MEASURED_TAG}-"):
            last_traj[t.group_id] = max(last_traj.get(t.group_id, 0.0), float(m.ts_ms))
    batch_of: dict[str, float] = {}
    last_batch_ms, claim_checked, rows = 0.0, 0, 0
    for m in pipe.read("batches"):
        b = serde.decode(m.value or b"", TrainingBatch, topic=m.topic, partition=m.partition, offset=m.offset)
        groups = {r.group_id for r in b.rows or []}
        if b.rows is None:
            claim_checked += 1
        if not any(g.startswith(f"{MEASURED_TAG}-") for g in groups):
            continue
        rows += len(b.rows or [])
        last_batch_ms = max(last_batch_ms, float(m.ts_ms))
        for g in groups:
            batch_of.setdefault(g, float(m.ts_ms))
    delays = group_to_batch_ms(last_traj, batch_of)
    return {
        "batched_groups": len(batch_of),
        "batched_rows": rows,
        "claim_checked_batches": claim_checked,
        "batch_rollouts_per_s": rate_per_s(n, t0_ms, last_batch_ms) if last_batch_ms else float("nan"),
        "group_to_batch_p50_ms": percentile(delays, 50),
        "group_to_batch_p99_ms": percentile(delays, 99),
    }
