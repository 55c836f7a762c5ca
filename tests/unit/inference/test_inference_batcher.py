"""The dynamic batcher: requests stay whole, batches respect the size cap, overload is refused."""

from __future__ import annotations

import threading

import pytest

from streamrl.inference.batcher import Batcher
from streamrl.inference.engine import Engine, Policy, SamplingParams, Sequence
from streamrl.inference.errors import OverloadedError
from streamrl.inference.metrics import InferenceMetrics


class _RecordingEngine(Engine):
    """The real engine, recording which sequences ran together."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[int]] = []

    def run_batch(self, seqs: list[Sequence]) -> int:
        self.batches.append([id(s) for s in seqs])
        return super().run_batch(seqs)


def _group(tokenizer, n: int, done: threading.Semaphore) -> list[Sequence]:
    def emit(kind: str, seq: Sequence, payload: object) -> None:
        if kind == "finish":
            done.release()

    prompt = tokenizer.encode("What is 3 + 4?", add_special_tokens=False)
    return [
        Sequence(prompt, SamplingParams(max_tokens=3, ignore_eos=True), index=i, emit=emit) for i in range(n)
    ]


def test_groups_are_batched_whole_under_the_size_cap(tokenizer, model) -> None:
    engine = _RecordingEngine(tokenizer, Policy(model, 4, "m"), [tokenizer.eos_token_id])
    metrics = InferenceMetrics()
    batcher = Batcher(engine, metrics, max_batch_size=4, max_batch_wait_ms=200)
    done = threading.Semaphore(0)
    groups = [_group(tokenizer, n, done) for n in (3, 2, 1, 6)]
    for g in groups:
        batcher.submit(g)  # queued before the thread starts: the batcher sees them all at once
    batcher.start()
    for _ in range(12):
        assert done.acquire(timeout=60)
    batcher.stop()
    ids = [[id(s) for s in g] for g in groups]
    # [3] (the 2 does not fit: carried over), [2 + 1], [6] alone (bigger than the cap, never split).
    assert engine.batches == [ids[0], ids[1] + ids[2], ids[3]]
    assert all(s.version == 4 and len(s.token_ids) == 3 for g in groups for s in g)
    hist = {s.name: s.value for m in metrics.batch_size.collect() for s in m.samples}
    assert (
        hist["streamrl_inference_batch_size_count"] == 3 and hist["streamrl_inference_batch_size_sum"] == 12
    )
    assert metrics.generated_tokens._value.get() == 36


def test_full_queue_is_refused_and_stop_aborts_waiting_requests(tokenizer, model) -> None:
    engine = Engine(tokenizer, Policy(model, 0, "m"), [tokenizer.eos_token_id])
    batcher = Batcher(engine, InferenceMetrics(), max_batch_size=4, max_queue=4)
    done = threading.Semaphore(0)
    waiting = _group(tokenizer, 3, done)
    batcher.submit(waiting)
    with pytest.raises(OverloadedError, match="queue is full"):
        batcher.submit(_group(tokenizer, 2, done))
    batcher.stop()  # never started: the queued request is aborted, not left hanging
    assert [s.finish_reason for s in waiting] == ["abort"] * 3


def test_idle_server_swaps_in_a_staged_checkpoint_without_a_request(tokenizer, model) -> None:
    """With no request to run, a staged version is served (and reported) within moments, not at the next call."""
    import time

    engine = Engine(tokenizer, Policy(model, 1, "m"), [tokenizer.eos_token_id])
    batcher = Batcher(engine, InferenceMetrics(), max_batch_size=4)
    batcher.start()
    try:
        engine.stage(Policy(model, 2, "v2"))
        deadline = time.monotonic() + 5
        while engine.version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.version == 2 and engine.staged_version is None
    finally:
        batcher.stop()
