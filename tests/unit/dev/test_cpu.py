"""CpuMeter: CPU seconds per process from /proc, the training-phase figures per rollout."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from streamrl.dev.cpu import CpuMeter, process_cpu_s

pytestmark = pytest.mark.skipif(not os.path.isfile("/proc/self/stat"), reason="needs Linux /proc")


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_process_cpu_s_counts_this_process_and_none_for_a_gone_one() -> None:
    before = process_cpu_s(os.getpid())
    assert before is not None
    _burn(0.3)
    after = process_cpu_s(os.getpid())
    assert after is not None and after - before >= 0.2
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_cpu_s(proc.pid) is None


def test_meter_reports_training_cpu_per_rollout_and_keeps_an_exited_process_last_reading() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.4: pass"]
    )
    meter = CpuMeter()
    meter.sample({"me": os.getpid(), "child": child.pid, "absent": None})
    meter.mark_start(rollouts=100, version=1, clock=50.0)
    start_me = meter.start["me"]
    _burn(0.3)
    child.wait()
    meter.sample({"me": os.getpid(), "child": child.pid})
    assert meter.cpu_s["child"] >= 0.0  # exited: its last reading stays
    report = meter.report(rollouts=300, version=5, clock=60.0)
    training = report["training"]
    assert isinstance(training, dict)
    assert training["rollouts"] == 200 and training["versions"] == 4
    assert training["wall_s"] == 10.0 and training["s_per_version"] == 2.5
    me_s = training["cpu_s"]["me"]
    assert me_s == pytest.approx(meter.cpu_s["me"] - start_me, abs=0.01) and me_s >= 0.2
    per = training["cpu_ms_per_rollout"]
    assert per["me"] == pytest.approx(1000 * me_s / 200, rel=0.01)
    assert per["total"] == pytest.approx(sum(v for k, v in per.items() if k != "total"), abs=0.01)
    meter.mark_start(rollouts=999, version=9, clock=99.0)  # only the first call counts
    assert meter.start_rollouts == 100


def test_meter_without_a_training_phase_reports_totals_only() -> None:
    meter = CpuMeter()
    meter.sample({"me": os.getpid()})
    report = meter.report(rollouts=0, version=0, clock=0.0)
    assert report["training"] is None and report["total_s"]["me"] > 0  # type: ignore[index]
