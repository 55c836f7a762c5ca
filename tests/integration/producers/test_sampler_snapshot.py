"""Sampler snapshots on a real broker: a sampler SIGKILLed after a snapshot restarts from it and
reads only the records after it, with the admission counts, epoch and emitted samples a replay from
the beginning gives (nothing re-emitted, nothing lost); a snapshot it cannot use is reported,
counted, and every topic is replayed instead."""

from __future__ import annotations

import ast
import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from streamrl.kafka import EventProducer
from streamrl.producers.publish import publish_file
from streamrl.producers.sampler import Sampler
from streamrl.schemas import Mode, SamplerSnapshot
from streamrl.schemas.sampler_state import parse_offset_key
from streamrl.schemas.serde import Serde
from tests.integration.producers.test_sampler_restart import spawn
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration

N_TASKS, G, EPOCHS = 16, 4, 2
SAME = (
    "epoch",
    "emitted_in_epoch",
    "version",
    "in_flight",
    "consumed",
    "released_by_outcome",
    "owed_reissues",
)
"""What a recovery from a snapshot must find exactly as a replay from the beginning does."""


def make_settings(settings_factory, **sampler):
    return settings_factory(
        rl={"group_size": G, "train_batch_size": 2, "max_staleness": 1, "seed": 11},
        sampler={"max_retries": 2, "poll_interval_s": 0.05, **sampler},
    )


def publish(s, tmp_path: Path) -> None:
    data = tmp_path / "tasks.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i:02d}", "q": i}) + "\n" for i in range(N_TASKS)))
    assert publish_file(s, data, id_field="id").published == N_TASKS


def recover(s, **sampler) -> dict:
    """A fresh sampler's recovery summary (it emits nothing: no step)."""
    sampler_obj = Sampler(s.model_copy(update={"sampler": s.sampler.model_copy(update=sampler)}))
    try:
        return sampler_obj.recover()
    finally:
        sampler_obj.consumer.close()
        sampler_obj.gate.close()


def ends(s, base: str) -> int:
    reader = TopicReader(s, base)
    try:
        return sum(reader.end_offsets().values())
    finally:
        reader.consumer.close()


def newest_snapshot(s) -> SamplerSnapshot | None:
    reader = TopicReader(s, "sampler_state", SamplerSnapshot)
    try:
        snaps = reader.read_to_end()
    finally:
        reader.consumer.close()
    return snaps[-1] if snaps else None


def test_sigkill_after_a_snapshot_replays_only_the_tail(
    settings_factory, trainer_sim, tmp_path: Path
) -> None:
    s = make_settings(settings_factory)
    publish(s, tmp_path)
    sim = trainer_sim(s, fail={("t03/0/2", 0), ("t13/1/0", 0)})
    log = tmp_path / "sampler.log"
    extra = {
        "STREAMRL_SAMPLER__SNAPSHOT_INTERVAL_S": "3600",
        "STREAMRL_SAMPLER__SNAPSHOT_EVERY_GROUPS": "4",
        # the restart takes the fence once the killed sampler's session expired: the shortest one
        "STREAMRL_SAMPLER__FENCE_SESSION_TIMEOUT_S": "6",
        "STREAMRL_SAMPLER__FENCE_TIMEOUT_S": "20",
    }
    proc = spawn(s, log, extra)
    try:
        sim.drain(quiet_s=0.5, first_s=30)
        snap = None
        deadline = time.monotonic() + 90
        while snap is None or snap.seq < 3:  # 1: after recovery; then one per 4 groups decided
            assert time.monotonic() < deadline, f"no snapshot: {log.read_text()[-3000:]}"
            sim.answer()
            sim.drain(quiet_s=0.4)
            snap = newest_snapshot(s)
        proc.send_signal(signal.SIGKILL)  # the samples just drained are unanswered
        proc.wait(10)
        sim.answer()  # workers, streams and the trainer go on while the sampler is down: the tail
        snap = newest_snapshot(s)
        covered = {parse_offset_key(k)[0]: 0 for k in snap.input_offsets}
        for key, offset in snap.input_offsets.items():
            covered[parse_offset_key(key)[0]] += offset
        traj_tail = ends(s, "trajectories") - covered[s.topics.name("trajectories")]
        assert traj_tail > 0 and snap.groups < N_TASKS, snap
        partial = recover(s)
        full = recover(s, snapshot_interval_s=0)
        assert partial["snapshot"]["seq"] == snap.seq and partial["snapshot_refused"] is None, partial
        assert full["snapshot"] is None and full["snapshot_refused"] is None, full
        assert {k: partial[k] for k in SAME} == {k: full[k] for k in SAME}, (partial, full)
        # only the tail was read: the trajectories after the snapshot, and fewer samples than all
        assert partial["records"][s.topics.name("trajectories")] == traj_tail, (partial, traj_tail)
        assert partial["records"][s.topics.name("samples")] < full["records"][s.topics.name("samples")]
        assert full["records"][s.topics.name("trajectories")] == ends(s, "trajectories")
        assert partial["groups"] < full["groups"]  # finished groups were pruned
        # the restarted sampler goes on from the snapshot and finishes both epochs
        proc = spawn(s, log, extra)
        sim.drain(quiet_s=0.5, first_s=30)
        deadline = time.monotonic() + 120
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"sampler did not finish: {log.read_text()[-3000:]}"
            sim.answer()
            sim.drain(quiet_s=0.4)
        assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    sim.drain(quiet_s=0.3)
    firsts = [x for x in sim.samples if x.mode is Mode.train and x.retry == 0]
    assert Counter((x.task_id, x.epoch, x.k) for x in firsts) == {
        (f"t{i:02d}", e, k): 1 for i in range(N_TASKS) for e in range(EPOCHS) for k in range(G)
    }
    assert sorted((x.rollout_id, x.retry) for x in sim.samples if x.retry) == [("t03/0/2", 1), ("t13/1/0", 1)]
    assert len(sim.duplicates) <= sim.bound, len(sim.duplicates)
    assert sim.version == (N_TASKS * EPOCHS) // 2
    summaries = [
        ast.literal_eval(line.split("sampler recovered: ", 1)[1])
        for line in log.read_text().splitlines()
        if "sampler recovered: " in line
    ]
    assert [x["snapshot"] is not None for x in summaries] == [False, True], summaries
    print(
        f"snapshot {snap.seq}: {snap.groups} group books, {len(snap.state)} bytes; recovery read "
        f"{partial['records']} from it against {full['records']} from the beginning"
    )


def fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("streamrl_sampler_snapshot_fallbacks_total", {"reason": reason}) or 0.0


def test_a_snapshot_that_cannot_be_used_is_reported_and_everything_replayed(
    settings_factory, trainer_sim, tmp_path: Path
) -> None:
    s = make_settings(settings_factory, max_epochs=1)
    publish(s, tmp_path)
    sim = trainer_sim(s)
    log = tmp_path / "sampler.log"
    proc = spawn(s, log, {"STREAMRL_SAMPLER__SNAPSHOT_INTERVAL_S": "3600"})
    try:
        sim.drain(quiet_s=0.5, first_s=30)
        while sim.version < 1:
            sim.answer()
            sim.drain(quiet_s=0.4)
        proc.send_signal(signal.SIGTERM)  # a graceful stop writes a last snapshot
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    good = newest_snapshot(s)
    assert good is not None and good.seq >= 2, good  # 1: after recovery, 2: at the stop
    assert recover(s)["snapshot"]["seq"] == good.seq
    full = recover(s, snapshot_interval_s=0)
    serde, producer = Serde(), EventProducer(s)
    topic, key = s.topics.name("sampler_state"), good.sampler_id
    bad = {
        "undecodable": b"\x00garbage",
        "foreign": serde.encode(good.model_copy(update={"sampler_id": "someone-else"})),
        "settings": serde.encode(good.model_copy(update={"settings_digest": "sha256:" + "0" * 64})),
        "offsets": serde.encode(
            good.model_copy(update={"input_offsets": {k: v + 10**6 for k, v in good.input_offsets.items()}})
        ),
        "state": serde.encode(good.model_copy(update={"state": b"not zlib"})),
    }
    try:
        for reason, value in bad.items():
            before = fallbacks(reason)
            producer.produce(topic, value, key=key)
            producer.flush(10)
            t0 = time.monotonic()
            got = recover(s)
            print(
                f"{reason}: refused and replayed in {time.monotonic() - t0:.1f} s ({got['seconds']} s recovering)"
            )
            assert got["snapshot"] is None and got["snapshot_refused"] == reason, (reason, got)
            assert fallbacks(reason) == before + 1, reason
            assert {k: got[k] for k in SAME} == {k: full[k] for k in SAME}, (reason, got, full)
            assert got["records"] == full["records"], reason  # everything replayed
    finally:
        producer.close()
