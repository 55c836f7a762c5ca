"""The benchmark's plumbing: broker, per-repetition pipelines (fresh topic prefix), processes, Kafka I/O.

Timing sources (all on one machine, so the clocks agree):

- **published**: ``time.time()`` in this process just before the first measured sample is handed to
  the producer (:meth:`Pipeline.publish`).
- **acknowledged / written**: the broker's ``LogAppendTime`` of a record. Every benchmark pipeline
  creates ``samples``, ``requests``, ``trajectories`` and ``batches`` with
  ``message.timestamp.type=LogAppendTime``, so each record carries the time the log accepted it (ms);
  on a single-replica topic the producer's ack follows the append at once.
- **consumed**: ``Trajectory.started_at`` (ms), stamped by the worker when it took the sample from its
  consumer and started the rollout.

While a repetition runs, this process only watches high watermarks (cheap) and reads the records
afterwards, so it takes as little CPU as possible from the workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    ConsumerGroupState,
    KafkaException,
    TopicPartition,
)

from streamrl.config import Settings, load_settings
from streamrl.errors import StreamRLError
from streamrl.kafka import client_config, make_admin, make_producer
from streamrl.topics import ensure_topics
from tests.support.kafka import free_port, start_local_broker

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_APPEND_TOPICS = ("samples", "requests", "trajectories", "batches")


class BenchError(StreamRLError):
    """A repetition could not be completed (timeout, a process died, a record is missing); says which."""


@dataclass(frozen=True)
class Msg:
    """One record as read back: key, value bytes, broker timestamp (ms, LogAppendTime) and position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    ts_ms: int


# ---------------------------------------------------------------------------------------------- broker


@contextmanager
def broker(work_dir: Path) -> Iterator[str]:
    """The cluster to measure against: ``$STREAMRL_BOOTSTRAP_SERVERS`` if set, else a fresh local broker.

    The local broker is ``streamrl.broker.LocalKafka`` on free ports with its data under ``work_dir``;
    it is stopped on exit.

    Yields:
        The bootstrap address.

    Raises:
        streamrl.errors.BrokerError: the local broker cannot start (Java/Maven missing, ...).
    """
    external = os.environ.get("STREAMRL_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    kafka = start_local_broker(work_dir / "kafka-data", heap="768m")
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


# ---------------------------------------------------------------------------------------------- processes


class Proc:
    """A child process (its own session, output to a log file) that is stopped with SIGTERM then SIGKILL."""

    def __init__(
        self, name: str, cmd: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.name, self.log_path = name, log_path
        self._out = open(log_path, "wb")
        self.popen = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def check(self) -> None:
        """Raise :class:`BenchError` (with the log tail) if the process has exited."""
        if not self.alive():
            raise BenchError(f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}")

    def cpu_s(self) -> float:
        """CPU time (user + system, all threads) the process has used so far, in seconds; NaN if unknown."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def log_tail(self, lines: int = 25) -> str:
        """The last ``lines`` lines of its output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout_s)
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        self._out.close()
        return self.popen.returncode


def child_env(config_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child: this one without ``STREAMRL_*`` overrides, plus the repetition's config.

    ``PYTHONPATH`` gets the repository root so ``bench.coordination.agents`` imports in a worker.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRL_")}
    env["STREAMRL_CONFIG"] = str(config_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_fake_vllm(run_dir: Path, *, policy_version: int = 0, timeout_s: float = 20.0) -> tuple[Proc, str]:
    """Start ``python -m bench.coordination.fake_vllm`` on a free port; returns ``(process, /v1 URL)``.

    Raises:
        BenchError: it exited or did not print its URL within ``timeout_s``.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "bench.coordination.fake_vllm", "--port", str(port),
           "--policy-version", str(policy_version)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = Proc("fake-vllm", cmd, env=env, cwd=run_dir, log_path=run_dir / "fake_vllm.log")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check()
        if "listening on" in proc.log_tail(5):
            return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    proc.stop()
    raise BenchError(f"fake vLLM server did not start within {timeout_s:.0f} s:\n{proc.log_tail()}")


# ---------------------------------------------------------------------------------------------- pipeline


class Pipeline:
    """One repetition's topics (fresh prefix, LogAppendTime timestamps), config file and processes.

    Args:
        bootstrap: the cluster.
        run_dir: this repetition's directory (config, process logs, streams state).
        sections: extra config sections for every process (``gateway``, ``worker``, ``streams``, ``rl``).
    """

    def __init__(self, bootstrap: str, run_dir: Path, **sections: dict[str, Any]) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"bench{uuid.uuid4().hex[:8]}."
        topics = {
            "prefix": self.prefix,
            "configs": {t: {"message.timestamp.type": "LogAppendTime"} for t in LOG_APPEND_TOPICS},
        }
        data: dict[str, Any] = {"kafka": {"bootstrap_servers": bootstrap}, "topics": topics, **sections}
        self.config_path = run_dir / "streamrl.yaml"
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        saved = {
            k: os.environ.pop(k)
            for k in ("STREAMRL_BOOTSTRAP_SERVERS", "STREAMRL_TOPIC_PREFIX")
            if k in os.environ
        }
        try:
            self.settings: Settings = load_settings(self.config_path)
        finally:
            os.environ.update(saved)
        ensure_topics(self.settings)
        self.procs: list[Proc] = []
        self._producer = make_producer(self.settings)
        conf = client_config(self.settings)
        conf.update(
            {"group.id": f"{self.prefix}reader", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
        self._meta = Consumer(conf)
        self._reader_conf = conf

    def topic(self, base: str) -> str:
        """Full name of a topic of this pipeline."""
        return self.settings.topics.name(base)

    # -- processes --------------------------------------------------------------------------------
    def spawn(self, name: str, args: Sequence[str], extra_env: dict[str, str] | None = None) -> Proc:
        """Start ``python -m streamrl.cli <args>`` with this pipeline's config; logs to ``<run_dir>/<name>.log``."""
        cmd = [sys.executable, "-m", "streamrl.cli", *args]
        env = child_env(self.config_path, extra_env)
        proc = Proc(name, cmd, env=env, cwd=self.run_dir, log_path=self.run_dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def check_procs(self) -> None:
        """Raise :class:`BenchError` if any child died."""
        for p in self.procs:
            p.check()

    def wait_group(self, group: str, members: int, timeout_s: float) -> None:
        """Wait until consumer group ``group`` is stable with ``members`` members, each with partitions.

        Raises:
            BenchError: not so within ``timeout_s`` (the last seen state is in the message), or a child died.
        """
        admin = make_admin(self.settings)
        deadline = time.monotonic() + timeout_s
        seen = "not described yet"
        while time.monotonic() < deadline:
            self.check_procs()
            try:
                desc = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=5)
                sizes = [len(m.assignment.topic_partitions) for m in desc.members]
                seen = f"state {desc.state.name}, members' partition counts {sizes}"
                if desc.state == ConsumerGroupState.STABLE and len(sizes) == members and all(sizes):
                    return
            except (KafkaException, TimeoutError) as exc:  # the group coordinator may still be loading
                seen = f"describe failed: {exc!r}"
            time.sleep(0.2)
        raise BenchError(
            f"consumer group {group} not ready with {members} member(s) in {timeout_s:.0f} s: {seen}"
        )

    def stop_all(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL)."""
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def close(self) -> None:
        """Stop children and close clients. Topics are left for inspection (the prefix is unique)."""
        self.stop_all()
        self._producer.flush(10)
        self._meta.close()

    # -- Kafka I/O --------------------------------------------------------------------------------
    def publish(self, base: str, records: Sequence[tuple[str, bytes]], timeout_s: float = 30.0) -> float:
        """Produce pre-encoded ``(key, value)`` records to ``base`` and wait for their acks.

        Returns:
            ``time.time()`` in ms just before the first record was handed to the producer.

        Raises:
            BenchError: a delivery failed or did not finish within ``timeout_s``.
        """
        topic = self.topic(base)
        errors: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{topic} key={msg.key()!r}: {err}")

        t0_ms = time.time() * 1000.0
        for key, value in records:
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.01)
            self._producer.poll(0)
        left = self._producer.flush(timeout_s)
        if errors or left:
            raise BenchError(f"publishing to {topic} failed: {errors[:3]} ({left} record(s) unacknowledged)")
        return t0_ms

    def end_offsets(self, base: str) -> int:
        """Sum of the high watermarks of ``base``'s partitions (records ever written)."""
        topic = self.topic(base)
        parts = self.settings.topics.partitions[base]
        return sum(
            self._meta.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(parts)
        )

    def wait_count(self, base: str, count: int, timeout_s: float, what: str = "") -> None:
        """Wait until ``base`` holds at least ``count`` records, checking children every 20 ms.

        Raises:
            BenchError: fewer records after ``timeout_s`` (message gives how many), or a child died.
        """
        deadline = time.monotonic() + timeout_s
        have = 0
        while time.monotonic() < deadline:
            have = self.end_offsets(base)
            if have >= count:
                return
            self.check_procs()
            time.sleep(0.02)
        raise BenchError(
            f"{what or base}: {have} of {count} record(s) in {self.topic(base)} after {timeout_s:.0f} s"
        )

    def read(self, base: str, timeout_s: float = 30.0) -> list[Msg]:
        """Every record of ``base`` from the beginning to the current end, with LogAppendTime stamps.

        Raises:
            BenchError: the end is not reached within ``timeout_s``, or a record does not carry a
                LogAppendTime timestamp (the topic was not created by this pipeline).
        """
        topic = self.topic(base)
        parts = self.settings.topics.partitions[base]
        ends = {
            p: self._meta.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(parts)
        }
        todo = {p for p, e in ends.items() if e > 0}
        out: list[Msg] = []
        if not todo:
            return out
        conf = dict(self._reader_conf, **{"group.id": f"{self.prefix}reader-{uuid.uuid4().hex[:6]}"})
        consumer = Consumer(conf)
        try:
            consumer.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
            deadline = time.monotonic() + timeout_s
            while todo:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"reading {topic}: partitions {sorted(todo)} not read to the end in {timeout_s} s"
                    )
                for m in consumer.consume(num_messages=1000, timeout=0.2):
                    if m.error() is not None:
                        continue
                    ts_type, ts = m.timestamp()
                    if ts_type != TIMESTAMP_LOG_APPEND_TIME:
                        raise BenchError(
                            f"{topic}[{m.partition()}]@{m.offset()}: timestamp type {ts_type}, not LogAppendTime; "
                            "the benchmark must create its topics itself"
                        )
                    out.append(Msg(topic, m.partition(), m.offset(), m.key(), m.value(), ts))
                    if m.offset() >= ends[m.partition()] - 1:
                        todo.discard(m.partition())
        finally:
            consumer.close()
        return out


def make_run_dir(root: Path | None, name: str) -> Path:
    """A fresh directory for one repetition under ``root`` (default: a temp dir)."""
    base = root or Path(tempfile.gettempdir()) / "streamrl-bench"
    path = base / f"{name}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_tree(path: Path) -> None:
    """Delete a run directory (best effort; logs are kept when a repetition failed)."""
    shutil.rmtree(path, ignore_errors=True)
