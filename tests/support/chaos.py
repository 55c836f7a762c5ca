"""Faults for the reliability tests and benchmarks: the children of a ``streamrl dev`` run, killing
them, and the accounting that says whether a run lost or double-trained anything.

:func:`dev_children` finds a run's stage processes by the run's config path in their command line;
:func:`kill_and_recover` SIGKILLs one and measures how the run came back (:class:`Recovery`).
:func:`account` reads what a finished run left on its topics and :meth:`Accounts.problems` lists
every train rollout that was lost (emitted, never decided by streams nor dead-lettered by the
sampler), decided twice, trained twice (the trainer's ``consumed_rollouts`` above the rollouts
streams batched) or not trained (below), and every dead letter of a sample whose reason is not the
task's own (an infrastructure failure must be re-run, never dead-lettered).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrl.config import Settings
from streamrl.schemas import CheckpointEvent, DeadLetter, GroupOutcome, Mode, Sample
from streamrl.schemas.serde import Serde
from tests.support.kafka import TopicReader

REPO = Path(__file__).resolve().parents[2]
STAGES = ("inference", "trainer", "streams", "worker", "sampler")
AGENT_SIDE = ("agent_failure", "request_failure")
"""``DeadLetter.error_type`` of a sample dead-lettered for a reason of its own task (the sampler
writes ``<failure kind>_failure``)."""


def dev_children(config_path: Path) -> dict[str, int]:
    """``name -> pid`` of the live stage processes started with ``--config config_path``.

    Names as ``streamrl dev`` gives them: ``inference``, ``trainer``, ``streams``, ``sampler``,
    ``worker-<i>`` (from ``--worker-id <run>-worker-<i>``). Zombies are skipped.
    """
    found: dict[str, int] = {}
    needle = str(config_path)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle not in argv or state == "Z" or "streamrl.cli" not in argv:
            continue
        stage = argv[argv.index("streamrl.cli") + 1]
        if stage not in STAGES:
            continue
        name = stage
        if stage == "worker" and "--worker-id" in argv:
            name = "worker-" + argv[argv.index("--worker-id") + 1].rsplit("-", 1)[1]
        found[name] = int(proc.name)
    return found


@dataclass
class Accounts:
    """What became of every train rollout of a run (from its topics).

    Attributes:
        emitted: train rollout ids the sampler emitted (any retry).
        batched: rollout id -> batch ids of ``batched`` group outcomes naming it (each group's
            outcomes, repeated ones included).
        dropped: rollout id -> the reason streams dropped its group.
        dead_lettered: rollout id -> ``(error_type, reason)`` of the sampler's dead letter.
        trained: the newest checkpoint's ``consumed_rollouts`` (None: no checkpoint).
        version: the newest checkpoint's version (0: none).
        trainer_dead_letters: batch id (the dead letter's key) -> reason, of the batches the
            trainer dead-lettered.
    """

    emitted: set[str] = field(default_factory=set)
    batched: dict[str, set[str]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    dead_lettered: dict[str, tuple[str, str]] = field(default_factory=dict)
    trained: int | None = None
    version: int = 0
    trainer_dead_letters: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Every way the run lost, repeated or wrongly dead-lettered a train rollout (empty = none)."""
        out = []
        decided = set(self.batched) | set(self.dropped)
        lost = self.emitted - decided - set(self.dead_lettered)
        if lost:
            out.append(
                f"{len(lost)} rollout(s) neither decided by streams nor dead-lettered: {sorted(lost)[:5]}"
            )
        twice = sorted(r for r, b in self.batched.items() if len(b) > 1)
        if twice:
            out.append(f"{len(twice)} rollout(s) in more than one batch: {twice[:5]}")
        both = sorted(set(self.batched) & set(self.dropped))
        if both:
            out.append(f"{len(both)} rollout(s) both batched and dropped: {both[:5]}")
        infra = {r: why for r, why in self.dead_lettered.items() if why[0] not in AGENT_SIDE}
        if infra:
            r, why = next(iter(infra.items()))
            out.append(f"{len(infra)} rollout(s) dead-lettered for a reason not the task's, e.g. {r}: {why}")
        if self.trainer_dead_letters:
            batch_id, why = next(iter(self.trainer_dead_letters.items()))
            out.append(
                f"the trainer dead-lettered {len(self.trainer_dead_letters)} batch(es), e.g. {batch_id}: {why}"
            )
        if self.trained is None:
            out.append("no checkpoint was published")
        elif self.trained != len(self.batched):
            out.append(
                f"the trainer consumed {self.trained} rollouts, streams batched {len(self.batched)}"
                " (more: trained twice; fewer: batched but not trained)"
            )
        return out

    def summary(self) -> dict[str, object]:
        """Counts for a report line."""
        reasons = Counter(self.dropped.values())
        return {
            "emitted": len(self.emitted),
            "trained": self.trained,
            "batched": len(self.batched),
            "dropped": dict(reasons),
            "dead_lettered": len(self.dead_lettered),
            "trainer_dead_letters": len(self.trainer_dead_letters),
            "version": self.version,
        }


def account(settings: Settings, timeout_s: float = 60.0) -> Accounts:
    """Read ``samples``, ``group_outcomes``, ``dlq`` and ``checkpoints`` of ``settings``' topics to
    their ends and account for every train rollout (see :class:`Accounts`)."""
    acc = Accounts()
    serde = Serde()
    with TopicReader(settings, "samples", Sample) as r:
        acc.emitted = {s.rollout_id for s in r.read_to_end(timeout_s) if s.mode is Mode.train}
    with TopicReader(settings, "group_outcomes", GroupOutcome) as r:
        for o in r.read_to_end(timeout_s):
            if o.status.value == "batched" and o.batch_id:
                for rid in o.rollout_ids:
                    acc.batched.setdefault(rid, set()).add(o.batch_id)
            else:  # a rollout's first outcome decides (as the sampler reads them); a late member of a
                # group closed as a straggler has its own, later outcome
                for rid in o.rollout_ids:
                    acc.dropped.setdefault(rid, o.reason or o.status.value)
    samples_topic = settings.topics.name("samples")
    with TopicReader(settings, "dlq", DeadLetter) as r:
        for d in r.read_to_end(timeout_s):
            if d.stage == "trainer":
                key = d.original_key.decode(errors="replace") if d.original_key else f"@{d.original_offset}"
                acc.trainer_dead_letters[key] = d.reason
            elif d.stage == "sampler" and d.original_topic == samples_topic and d.original_value:
                s = serde.decode(d.original_value, Sample)
                if s.mode is Mode.train:
                    acc.dead_lettered[s.rollout_id] = (d.error_type, d.reason)
    with TopicReader(settings, "checkpoints", CheckpointEvent) as r:
        events = [e for e in r.read_to_end(timeout_s) if e.policy_name == settings.rl.policy_name]
    if events:
        last = max(events, key=lambda e: e.version)
        acc.version, acc.trained = last.version, last.consumed_rollouts
    return acc


def newest_step(run_dir: Path) -> int:
    """The newest policy version with a checkpoint directory in a ``streamrl dev`` run (0: none).

    Reads ``<run_dir>/checkpoints/<policy>/step-<version>`` (the trainer keeps the last few), so it
    only grows while the run lasts."""
    steps = [0]
    for p in (run_dir / "checkpoints").glob("*/step-*"):
        tail = p.name.removeprefix("step-")
        if tail.isdigit():
            steps.append(int(tail))
    return max(steps)


@dataclass
class Recovery:
    """One SIGKILL of a stage under ``streamrl dev`` and how the run came back (seconds since the kill).

    Attributes:
        stage: the child's name (``worker-0``, ``sampler``, ...).
        version: the newest checkpointed policy version when it was killed.
        restarted_s: until its restarted process existed (``dev.restart`` back-off included).
        serving_s: inference only: until the restarted server answered ``/health`` (it loads the
            newest checkpoint before it binds its port), else None.
        serving_version: the version that answer reported (None: not inference).
        next_version_s: until a newer policy version was checkpointed (training resumed); for
            inference newer than the one at its first answer, since the trainer may go on with
            rollouts that ran before the kill meanwhile.
    """

    stage: str
    version: int
    restarted_s: float
    serving_s: float | None
    serving_version: int | None
    next_version_s: float

    @property
    def resumed_after_return_s(self) -> float:
        """Seconds from the stage's return (inference: serving; others: restarted) to the next version."""
        back = self.serving_s if self.serving_s is not None else self.restarted_s
        return round(self.next_version_s - back, 1)


def health_version(url: str) -> int | None:
    """``policy_version`` of an inference server's ``/health`` at ``url`` (None: no answer)."""
    import httpx

    from streamrl.schemas.inference_http import POLICY_VERSION

    try:
        body = httpx.get(url, timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return None
    version = body.get(POLICY_VERSION) if isinstance(body, dict) else None
    return version if isinstance(version, int) else None


def kill_and_recover(
    run_dir: Path, stage: str, alive: Callable[[], bool], timeout_s: float = 240.0
) -> Recovery:
    """SIGKILL ``stage`` of the ``streamrl dev`` run in ``run_dir`` and wait until dev restarted it
    and the trainer checkpointed a newer version.

    Args:
        alive: False once ``streamrl dev`` itself exited (then this raises at once).

    Raises:
        AssertionError: the stage is not running, dev exited, or a wait passed ``timeout_s``.
    """
    from streamrl.config import load_settings
    from streamrl.schemas.inference_http import HEALTH_PATH

    config = run_dir / "config.yaml"
    pid = dev_children(config).get(stage)
    assert pid is not None, f"{stage} is not running (the epoch ended too early?): {dev_children(config)}"
    health = None
    if stage == "inference":
        upstream = load_settings(config).gateway.upstream_url
        health = upstream.rstrip("/").removesuffix("/v1") + HEALTH_PATH
    version = after = newest_step(run_dir)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    restarted = serving = serving_version = None
    while True:
        now = time.monotonic() - t0
        assert alive(), f"streamrl dev exited while {stage} was recovering"
        assert now < timeout_s, f"{stage}: no newer version than v{version} within {timeout_s} s of its kill"
        if restarted is None and dev_children(config).get(stage) not in (None, pid):
            restarted = now
        if health is not None and restarted is not None and serving is None:
            serving_version = health_version(health)
            if serving_version is not None:
                serving = time.monotonic() - t0
                # a version trained meanwhile came from rollouts run before the kill: wait for a newer one
                after = max(version, newest_step(run_dir))
        if restarted is not None and (health is None or serving is not None) and newest_step(run_dir) > after:
            return Recovery(
                stage,
                version,
                round(restarted, 1),
                None if serving is None else round(serving, 1),
                serving_version,
                round(now, 1),
            )
        time.sleep(0.1)  # polling the process table, the run directory and the server


def dev_environment(tmp: Path) -> tuple[dict[str, str], Any]:
    """The environment of a benchmark's ``streamrl dev`` run, and the broker started for it.

    ``$STREAMRL_BOOTSTRAP_SERVERS`` if set (broker None), else a local Apache Kafka on free ports
    with its data under ``tmp/kafka`` (the caller stops it). ``PYTHONPATH`` is the repository (so
    ``examples.*`` agents import); ``STREAMRL_TOPIC_PREFIX`` is dropped (dev gives the run its own).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("STREAMRL_TOPIC_PREFIX", None)
    broker = None
    if not env.get("STREAMRL_BOOTSTRAP_SERVERS"):
        from tests.support.kafka import start_local_broker

        broker = start_local_broker(tmp / "kafka", heap="512m")
        env["STREAMRL_BOOTSTRAP_SERVERS"] = broker.bootstrap
    return env, broker


def start_dev(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``streamrl dev --config config`` as a child process, its output piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamrl.cli", "dev", "--config", str(config)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish_dev(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """Wait up to ``timeout_s`` for a :func:`start_dev` run to end and return its output; past it,
    SIGTERM it and fail the test with the output's tail."""
    import pytest

    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"streamrl dev still running after {timeout_s} s:\n{out[-5000:]}")
    return out


def interrupt_dev(proc: subprocess.Popen[Any], timeout_s: float = 180.0) -> None:
    """Stop a ``streamrl dev`` process started with ``start_new_session`` as Ctrl-C would (SIGINT),
    then its whole process group with SIGKILL if it has not exited within ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
