"""The benchmark's records: samples (GSM8K questions), and stand-ins for the requests/trajectories of part C.

Every record is a real schema record encoded with ``streamrl.schemas.serde`` (single-object Avro), exactly what
the pipeline writes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.coordination.agents import LATENCY_REWARD
from bench.coordination.fake_vllm import fake_tokenize, render_prompt, reply_tokens
from streamrl.schemas import LLMRequest, Mode, Reward, RolloutStatus, Sample, Trajectory
from streamrl.schemas.serde import Serde

__all__ = ["EventMix", "SampleSpec", "gsm8k_questions", "make_samples", "synthetic_mix"]

GSM8K = Path(__file__).resolve().parents[2] / "examples" / "gsm8k" / "data" / "test.jsonl"


def gsm8k_questions(limit: int = 200, path: Path = GSM8K) -> list[str]:
    """Up to ``limit`` GSM8K questions from ``path``; a fixed synthetic question set if it is absent."""
    out: list[str] = []
    if path.is_file():
        with path.open() as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(str(json.loads(line)["question"]))
                if len(out) >= limit:
                    break
    if not out:
        rng = random.Random(0)
        for _ in range(limit):
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            out.append(
                f"Tom has {a} apples and buys {b} more. How many apples does he have now? Explain each step."
            )
    return out


@dataclass(frozen=True)
class SampleSpec:
    """How to build a batch of samples.

    Attributes:
        tag: prefix of task ids (unique per batch so warm-up and measured rollouts never mix).
        count: number of samples.
        group_size: samples per group (``k`` = index within the group); 1 for parts A–C.
        questions: payload questions (cycled); empty = payload without a question (part A).
        vary_reward: put ``reward = k % 2`` in the payload so groups have reward variance (part D).
    """

    tag: str
    count: int
    group_size: int = 1
    questions: tuple[str, ...] = ()
    vary_reward: bool = False


def make_samples(spec: SampleSpec, serde: Serde) -> list[tuple[str, bytes]]:
    """Encoded ``(rollout_id, Sample bytes)`` pairs; ``rollout_id = <tag>-<task>/0/<k>``.

    Raises:
        ValueError: ``count`` is not a multiple of ``group_size``.
    """
    if spec.count % spec.group_size:
        raise ValueError(f"sample count {spec.count} is not a multiple of group_size {spec.group_size}")
    now = datetime.now(timezone.utc)
    out = []
    for i in range(spec.count):
        t, k = divmod(i, spec.group_size)
        task_id = f"{spec.tag}-{t:05d}"
        payload: dict[str, object] = {"i": i}
        if spec.questions:
            payload["question"] = spec.questions[t % len(spec.questions)]
        if spec.vary_reward:
            payload["reward"] = float(k % 2)
        s = Sample(
            rollout_id=f"{task_id}/0/{k}", task_id=task_id, group_id=f"{task_id}/0", group_size=spec.group_size,
            k=k, epoch=0, retry=0, mode=Mode.train, payload=json.dumps(payload), policy_version=0, created_at=now,
        )  # fmt: skip
        out.append((s.rollout_id, serde.encode(s)))
    return out


@dataclass
class EventMix:
    """One rollout's records as bytes (part C): the sample, its request, its trajectory.

    ``source`` says where the request/trajectory bytes came from: ``"part B"`` (read back from the
    topics of a part-B run through the gateway) or ``"synthetic"`` (built here like the pipeline would).
    """

    sample: list[tuple[str, bytes]]
    request: list[tuple[str, bytes]]
    trajectory: list[tuple[str, bytes]]
    source: str

    def sizes(self) -> dict[str, float]:
        """Mean value size per kind, in bytes."""

        def mean(xs: list[tuple[str, bytes]]) -> float:
            return sum(len(v) for _, v in xs) / max(1, len(xs))

        return {"sample_bytes": mean(self.sample), "request_bytes": mean(self.request),
                "trajectory_bytes": mean(self.trajectory)}  # fmt: skip


def synthetic_mix(serde: Serde, count: int = 64, response_tokens: int = 128) -> EventMix:
    """An event mix built like part B's records: GSM8K samples, the fake server's call, a 1-call trajectory."""
    questions = tuple(gsm8k_questions())
    samples = make_samples(SampleSpec("mix", count, questions=questions), serde)
    _, ids, logprobs = reply_tokens(response_tokens)
    now = datetime.now(timezone.utc)
    requests, trajectories = [], []
    for i, (rid, _) in enumerate(samples):
        question = questions[i % len(questions)]
        attempt = f"{i:032x}"
        req_id = f"{attempt}-0-0"
        prompt = fake_tokenize(render_prompt([{"role": "user", "content": question}]))
        r = LLMRequest(
            request_id=req_id, rollout_id=rid, attempt_id=attempt, agent_name=None, sequence=0, model="policy",
            prompt_token_ids=prompt, response_token_ids=ids, response_logprobs=logprobs, finish_reason="stop",
            policy_version=0, latency_ms=1.5, started_at=now, choice_index=0,
        )  # fmt: skip
        task_id = rid.split("/")[0]
        t = Trajectory(
            rollout_id=rid, attempt_id=attempt, task_id=task_id, group_id=f"{task_id}/0", group_size=1, k=0, epoch=0,
            retry=0, mode=Mode.train, status=RolloutStatus.succeeded, reward=1.0,
            rewards=[Reward(name=LATENCY_REWARD, value=1.5, primary=False, request_id=req_id, emitted_at=now),
                     Reward(name="reward", value=1.0, primary=True, request_id=req_id, emitted_at=now)],
            request_ids=[req_id], error=None, worker_id="bench-host-12345", policy_version=0,
            started_at=now, finished_at=now,
        )  # fmt: skip
        requests.append((rid, serde.encode(r)))
        trajectories.append((rid, serde.encode(t)))
    return EventMix(samples, requests, trajectories, "synthetic")
