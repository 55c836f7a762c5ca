"""Crash safety: SIGKILL after a checkpoint write (before its event) and between steps; after restarts no
batch is trained twice into the weights and none is skipped, and the unpublished checkpoint is published.

The trainer runs as a real process (``python -m streamrl.cli trainer``) against the real broker; the last
restart runs in the test process.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from streamrl.config import Settings
from streamrl.schemas import CheckpointEvent, digest_dir
from tests.support.kafka import read_topic

from .conftest import produce, toy_batch

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]


#: ``python -c`` program: ``streamrl`` with the trainer SIGKILLing itself right after writing checkpoint
#: ``{version}``, before publishing its event (the crash window between the two).
KILL_BEFORE_PUBLISH = """
import logging, os, signal
logging.basicConfig(level=logging.INFO)  # before torch is imported (the CLI configures logging later)
from streamrl.trainer.service import TrainerService
publish = TrainerService._publish
def _publish(self, ckpt):
    if ckpt.version == {version}:
        os.kill(os.getpid(), signal.SIGKILL)
    return publish(self, ckpt)
TrainerService._publish = _publish
from streamrl.cli import main
main()
"""


class TrainerProcess:
    """``streamrl trainer`` in a subprocess; its log lines are collected from stderr."""

    def __init__(self, config: Path, *extra: str, kill_before_publishing: int | None = None) -> None:
        self.lines: list[str] = []
        if kill_before_publishing is None:
            cli = ["-m", "streamrl.cli"]
        else:
            cli = ["-c", KILL_BEFORE_PUBLISH.format(version=kill_before_publishing)]
        self.proc = subprocess.Popen(
            [sys.executable, *cli, "trainer", "-c", str(config), *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout_s: float = 120) -> None:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(rx.search(x) for x in self.lines):
                return
            if self.proc.poll() is not None:
                self._t.join(timeout=10)  # the reader stops at the end of the output
                if any(rx.search(x) for x in self.lines):
                    return
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; log:\n" + "\n".join(self.lines[-40:]))

    def wait(self, timeout_s: float = 120) -> int:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"trainer still running after {timeout_s} s; log:\n" + "\n".join(self.lines[-40:])
            ) from None
        self._t.join(timeout=5)
        return rc

    def steps(self) -> list[tuple[int, str]]:
        """(version, batch_id) of every step this process logged."""
        out = []
        for x in self.lines:
            mt = re.search(r"step (\d+) \| batch (\S+) ", x)
            if mt:
                out.append((int(mt.group(1)), mt.group(2)))
        return out


def _events(settings: Settings, expect: int) -> list[int]:
    return [e.version for e in read_topic(settings, "checkpoints", CheckpointEvent, n=expect, timeout_s=15)]


def test_sigkill_and_restart_trains_every_batch_exactly_once(
    settings_factory, tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt_root = tmp_path / "ckpt"
    settings = settings_factory(
        rl={"policy_name": "policy", "group_size": 4, "max_staleness": 100},
        trainer={
            "model_path": str(tiny_model_dir),
            "checkpoint_dir": str(ckpt_root),
            "save_every": 2,
            "keep_last": 10,
            "lr": 1e-3,
            "micro_batch_size": 8,
            "poll_timeout_s": 0.2,
            "torch_threads": 1,
        },
    )
    config = tmp_path / "streamrl.yaml"
    config.write_text(yaml.safe_dump(json.loads(settings.model_dump_json())))
    ckpt_dir = ckpt_root / "policy"
    produce(settings, [toy_batch(i) for i in range(5)])

    # run A: killed right after writing checkpoint 2, before publishing it
    a = TrainerProcess(config, kill_before_publishing=2)
    assert a.wait() == -signal.SIGKILL, "\n".join(a.lines[-30:])
    assert a.steps() == [(1, "b0"), (2, "b1")], "\n".join(a.lines[-30:])
    assert (ckpt_dir / "step-00000002" / "meta.json").is_file()
    assert not (ckpt_dir / "step-00000002" / "PUBLISHED").exists()
    assert _events(settings, expect=0) == []

    # run B: republishes 2, trains b2..b4, checkpoint 4; killed (SIGKILL) between steps, after step 5
    b = TrainerProcess(config)
    b.wait_for(r"step 5 \| batch b4 ")
    # SIGKILL anywhere after step 5's line: step 5 is not checkpointed (save_every 2), so it is lost
    b.proc.send_signal(signal.SIGKILL)
    assert b.wait() == -signal.SIGKILL
    assert any("publishing again" in x for x in b.lines)
    assert b.steps() == [(3, "b2"), (4, "b3"), (5, "b4")]
    assert _events(settings, expect=2) == [2, 4]

    # more batches, and b3 delivered again at a later offset
    produce(settings, [toy_batch(5), toy_batch(3), toy_batch(6), toy_batch(7)])

    # run C (in this process, to spare a third import of torch+verl): resumes at checkpoint 4 -> retrains
    # b4 (its step 5 was lost with run B), skips the duplicate b3, stops at max_steps 8
    from streamrl.trainer.run import make_backend
    from streamrl.trainer.service import TrainerService

    settings.trainer.max_steps = 8
    caplog.set_level(logging.INFO, logger="trainer")
    assert TrainerService(settings, make_backend(settings)).run() == 8
    c_lines = [r.getMessage() for r in caplog.records if r.name == "trainer"]
    c_steps = [
        (int(mt.group(1)), mt.group(2))
        for x in c_lines
        if (mt := re.search(r"step (\d+) \| batch (\S+) ", x))
    ]
    assert c_steps == [(5, "b4"), (6, "b5"), (7, "b6"), (8, "b7")]
    assert any("batch b3 already trained: skipped" in x for x in c_lines)
    assert _events(settings, expect=4) == [2, 4, 6, 8]

    meta = json.loads((ckpt_dir / "step-00000008" / "meta.json").read_text())
    assert meta["trained_batch_ids"] == [f"b{i}" for i in range(8)]  # each batch exactly once, in order
    assert meta["digest"] == digest_dir(ckpt_dir / "step-00000008" / "model")
    assert meta["offsets"] == {"0": 9}
    # each batch's 8 rollouts consumed once, across the kills (b4 retrained after run B's loss)
    assert meta["consumed_rollouts"] == 8 * 8
    assert json.loads((ckpt_dir / "step-00000004" / "meta.json").read_text())["consumed_rollouts"] == 4 * 8
    assert json.loads((ckpt_dir / "step-00000004" / "meta.json").read_text())["trained_batch_ids"] == [
        "b0",
        "b1",
        "b2",
        "b3",
    ]
