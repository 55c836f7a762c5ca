"""Gateway and worker benchmark: added latency per call (p50/p99), and rollouts/s with 1, 2, 4 workers.

    .venv/bin/python -m bench.gateway [--calls 2000] [--samples 2000] [--workers 1,2,4]

Processes: the fake OpenAI server (``tests.support.fake_inference``), the standalone gateway
(``streamrl gateway``, recording to Kafka), worker processes (``streamrl worker``) and this client all
run separately, so the figures include real sockets and the Kafka producer. Uses
``$STREAMRL_BOOTSTRAP_SERVERS`` if set, else starts a throw-away local broker. Prints figures;
asserts nothing about speed.

Latency: sequential non-streaming chat calls, alternating direct (client → inference) and through
the gateway (client → gateway → inference); added latency = gateway call − the direct call next to
it. Throughput: samples produced up front while the workers are in the group; rollouts/s = samples /
(timestamp of the last Trajectory record − wall clock just before the first Sample was produced). Not
the span between the first and the last Trajectory: with few samples they all arrive in one
consumer batch and that span is near zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------- agents
# Imported by worker processes: ``--agent bench.gateway:one_call``.

_sessions: dict[int, Any] = {}


def trivial(task: dict, llm: Any) -> float:
    """No LLM call: the worker's own cost per rollout (sample in, Trajectory out)."""
    return 1.0


async def one_call(task: dict, llm: Any) -> float:
    """One chat call through the gateway with a pooled aiohttp session (what a lean agent does)."""
    import aiohttp

    loop_id = id(asyncio.get_running_loop())
    session = _sessions.get(loop_id)
    if session is None:
        session = _sessions[loop_id] = aiohttp.ClientSession()
    body = {"model": llm.model, "messages": [{"role": "user", "content": task["q"]}], "max_tokens": 4}
    async with session.post(llm.base_url + "/chat/completions", json=body) as r:
        r.raise_for_status()
        await r.read()
    return 1.0


# ---------------------------------------------------------------------------------------- harness


def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s")


def _env(settings: Any, upstream: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "STREAMRL_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "STREAMRL_TOPIC_PREFIX": settings.topics.prefix,
            "STREAMRL_GATEWAY__UPSTREAM_URL": upstream,
            "STREAMRL_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _latency(gateway_url: str, upstream: str, calls: int) -> dict[str, float]:
    import aiohttp
    import orjson

    from streamrl.schemas.inference_http import force_training_fields
    from streamrl.sdk import LLM

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gateway_url}/control/attempts",
            data=orjson.dumps({"rollout_id": "bench/0/0", "attempt_id": "lat", "policy_version": 0}),
        ) as r:
            r.raise_for_status()
            token = (await r.json())["token"]  # the attempt's API key
        through = LLM.scoped_base_url(gateway_url, "bench/0/0", "lat", None) + "/chat/completions"
        direct = upstream + "/chat/completions"
        request = {"model": "policy", "messages": [{"role": "user", "content": "hello REPLY:abcdefgh"}]}
        body = orjson.dumps(force_training_fields(request, chat=True))  # what the gateway sends upstream
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

        async def one(url: str) -> float:
            t0 = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            return time.perf_counter() - t0

        for _ in range(200):  # warm up both paths and the pools
            await one(direct)
            await one(through)
        d, g, added = [], [], []
        for _ in range(calls):
            a = await one(direct)
            b = await one(through)
            d.append(a)
            g.append(b)
            added.append(b - a)
        async with http.post(
            f"{gateway_url}/control/attempts/close",
            data=orjson.dumps({"rollout_id": "bench/0/0", "attempt_id": "lat", "timeout_s": 30}),
        ) as r:
            closed = await r.json()
    ms = 1e3
    return {
        "direct_p50_ms": _pct(d, 0.5) * ms,
        "direct_p99_ms": _pct(d, 0.99) * ms,
        "gateway_p50_ms": _pct(g, 0.5) * ms,
        "gateway_p99_ms": _pct(g, 0.99) * ms,
        "added_p50_ms": statistics.median(added) * ms,
        "added_p99_ms": _pct(added, 0.99) * ms,
        "recorded": float(len(closed["request_ids"])),
        "record_errors": float(len(closed["errors"])),
    }


def _throughput(
    settings: Any, upstream: str, workers: int, agent: str, samples: int, concurrency: int
) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    s = settings.model_copy(update={"topics": settings.topics.model_copy(update={"prefix": prefix})})
    from streamrl.topics import ensure_topics

    ensure_topics(s)
    env = _env(s, upstream, STREAMRL_WORKER__COMMIT_INTERVAL_S="0.5")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamrl.cli",
                "worker",
                "--agent",
                agent,
                "--concurrency",
                str(concurrency),
                "--worker-id",
                f"bench-{i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    try:
        _wait_group(s, workers)
        started_s = time.time()
        _produce(s, samples)
        return _wait_trajectories(s, samples, started_s)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def _produce(settings: Any, n: int) -> None:
    import json

    from streamrl.kafka import make_producer
    from streamrl.schemas import Mode, Sample
    from streamrl.schemas.serde import Serde

    serde, p, topic = Serde(), make_producer(settings), settings.topics.name("samples")
    for i in range(n):
        s = Sample(
            rollout_id=f"t{i}/0/0",
            task_id=f"t{i}",
            group_id=f"t{i}/0",
            group_size=1,
            k=0,
            epoch=0,
            mode=Mode.train,
            payload=json.dumps({"q": f"question {i} REPLY:ok"}),
            policy_version=0,
        )
        while True:
            try:
                p.produce(topic, serde.encode(s), key=s.rollout_id)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def _wait_trajectories(settings: Any, n: int, started_s: float, timeout_s: float = 300.0) -> float:
    """Rollouts/s: n / (timestamp of the last Trajectory record - ``started_s``, the wall clock in s
    since the epoch just before the first Sample was produced), counting distinct rollout ids.

    Raises:
        RuntimeError: fewer than ``n`` trajectories within ``timeout_s``.
    """
    from confluent_kafka import Consumer

    from streamrl.kafka import client_config

    conf = client_config(settings)
    conf.update(
        {
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c = Consumer(conf)
    c.subscribe([settings.topics.name("trajectories")])
    seen: set[bytes] = set()
    last_ms = 0
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < n and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.1):
                if msg.error() is None:
                    # the record's timestamp (set when the worker produced it), not when we read it
                    last_ms = max(last_ms, msg.timestamp()[1])
                    seen.add(msg.key())
    finally:
        c.close()
    if len(seen) < n:
        raise RuntimeError(f"only {len(seen)} of {n} trajectories in {timeout_s} s")
    return n / max(last_ms / 1000 - started_s, 1e-3)


def _wait_group(settings: Any, members: int, timeout_s: float = 90.0) -> None:
    from confluent_kafka import ConsumerGroupState

    from streamrl.kafka import make_admin

    admin, group = make_admin(settings), settings.group_id("workers")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            d = admin.describe_consumer_groups([group])[group].result(timeout=10)
            if d.state == ConsumerGroupState.STABLE and len(d.members) == members:
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the workers group did not stabilise with {members} members")


@contextlib.contextmanager
def standalone_gateway() -> Iterator[tuple[Any, str, str]]:
    """A broker (``$STREAMRL_BOOTSTRAP_SERVERS``, else a throwaway local one), fresh topics, the fake
    OpenAI-compatible server and a standalone ``streamrl gateway`` in front of it, all stopped on exit.

    Yields ``(settings, upstream, gateway_url)``: upstream is the fake server's ``.../v1`` base URL.
    Raises ``TimeoutError`` when a server does not answer within 30 s.
    """
    from streamrl.config import load_settings
    from streamrl.topics import ensure_topics
    from tests.support.kafka import free_port, start_local_broker

    broker = None
    bootstrap = os.environ.get("STREAMRL_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = start_local_broker(Path(tempfile.mkdtemp(prefix="bench-kafka-")), heap="512m")
        bootstrap = broker.bootstrap
    procs: list[subprocess.Popen] = []
    try:
        settings = load_settings(
            None, kafka={"bootstrap_servers": bootstrap}, topics={"prefix": f"bench{uuid.uuid4().hex[:8]}."}
        )
        ensure_topics(settings)
        up_port, gw_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.fake_inference", "--port", str(up_port)],
                cwd=ROOT,
                env=_env(settings, upstream),
                stdout=subprocess.DEVNULL,
            )
        )
        _wait_http(upstream + "/models")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "streamrl.cli", "gateway", "--port", str(gw_port)],
                cwd=ROOT,
                env=_env(settings, upstream),
                stderr=subprocess.DEVNULL,
            )
        )
        gateway_url = f"http://127.0.0.1:{gw_port}"
        _wait_http(gateway_url + "/healthz")
        yield settings, upstream, gateway_url
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if broker is not None:
            broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="latency: calls per path")
    ap.add_argument("--samples", type=int, default=2000, help="throughput: samples per run")
    ap.add_argument("--workers", default="1,2,4", help="throughput: worker process counts")
    ap.add_argument("--concurrency", type=int, default=64, help="rollouts at once per worker")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with standalone_gateway() as (settings, upstream, gateway_url):
        lat = asyncio.run(_latency(gateway_url, upstream, args.calls))
        print(
            f"gateway added latency per call ({args.calls} sequential chat calls, recorded to Kafka): "
            f"p50 {lat['added_p50_ms']:.3f} ms, p99 {lat['added_p99_ms']:.3f} ms "
            f"(direct p50 {lat['direct_p50_ms']:.3f} / p99 {lat['direct_p99_ms']:.3f} ms; through the gateway "
            f"p50 {lat['gateway_p50_ms']:.3f} / p99 {lat['gateway_p99_ms']:.3f} ms; "
            f"{lat['recorded']:.0f} LLMRequests recorded, {lat['record_errors']:.0f} errors)"
        )
        for agent, label in (
            ("bench.gateway:trivial", "trivial agent, no LLM call"),
            ("bench.gateway:one_call", "one LLM call through the gateway"),
        ):
            for n in [int(x) for x in args.workers.split(",")]:
                if agent.endswith("one_call") or n == 1:
                    rate = _throughput(settings, upstream, n, agent, args.samples, args.concurrency)
                    print(
                        f"worker throughput ({label}), {n} worker process(es) x concurrency {args.concurrency}: "
                        f"{rate:,.0f} rollouts/s ({args.samples} samples, {os.cpu_count()} CPU cores shared "
                        "with broker, inference and client)"
                    )


if __name__ == "__main__":
    main()
