"""StreamRL runs beside packages that install generic top-level names.

chromadb (a dependency of CrewAI) installs a top-level ``schemas`` folder into site-packages; other
packages could ship ``producers``, ``consumers``, ``streams``, ``trainer`` or ``inference``. StreamRL
installs every package under ``streamrl.``, so a real worker process, whose agent imports the foreign
``schemas`` first, runs rollouts and records them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from consumers_testkit import make_sample, produce_samples

from streamrl.schemas import LLMRequest, RolloutStatus, Trajectory
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration

GENERIC = ("schemas", "producers", "consumers", "inference", "streams", "trainer")

AGENT = """
import schemas  # the foreign package, imported first as chromadb's would be

from openai import AsyncOpenAI
from streamrl import rollout

assert schemas.__file__.startswith({foreign!r}), schemas.__file__


@rollout
async def solve(task, llm):
    client = AsyncOpenAI(base_url=llm.base_url, api_key=llm.api_key)
    out = await client.chat.completions.create(
        model=llm.model, messages=[{{"role": "user", "content": task["question"]}}], max_tokens=4
    )
    return float(out.choices[0].message.content is not None)
"""


def _foreign_site(root: Path) -> Path:
    """A folder of top-level packages named like StreamRL's stages; importing any but ``schemas`` fails."""
    for name in GENERIC:
        pkg = root / name
        pkg.mkdir(parents=True)
        body = (
            "" if name == "schemas" else f"raise ImportError('the foreign top-level {name} was imported')\n"
        )
        (pkg / "__init__.py").write_text(body)
    (root / "schemas" / "mode.py").write_text("Mode = None  # not StreamRL's\n")
    return root


def test_worker_runs_beside_foreign_top_level_packages(settings_factory, tmp_path: Path) -> None:
    s = settings_factory(worker={"session_timeout_ms": 6000, "max_poll_interval_ms": 6000})
    foreign = _foreign_site(tmp_path / "site")
    work = tmp_path / "work"
    work.mkdir()
    (work / "foreign_agent.py").write_text(textwrap.dedent(AGENT.format(foreign=str(foreign))))
    samples = [make_sample(f"t{i}", 0, {"question": f"q{i}"}) for i in range(3)]
    with FakeInferenceServer() as inference:
        env = {
            **os.environ,
            # the foreign packages come first on the path, as site-packages would hold them
            "PYTHONPATH": os.pathsep.join([str(foreign), str(work)]),
            "STREAMRL_BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "STREAMRL_TOPIC_PREFIX": s.topics.prefix,
            "STREAMRL_GATEWAY__UPSTREAM_URL": inference.url,
        }
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamrl.cli", "worker", "--agent", "foreign_agent:solve"],
                cwd=work,  # not the repository: nothing of StreamRL is importable from the cwd
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                produce_samples(s, samples)
                trajs = TopicReader(s, "trajectories", Trajectory)
                got = trajs.read_until(lambda r: len(r) >= 3, timeout_s=90)
                calls = TopicReader(s, "requests", LLMRequest).read_until(lambda r: len(r) >= 3, timeout_s=30)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    text = log.read_text(errors="replace")
    assert "foreign top-level" not in text, text[-3000:]
    assert sorted(t.rollout_id for t in got) == sorted(x.rollout_id for x in samples), text[-3000:]
    assert all(t.status == RolloutStatus.succeeded for t in got), [t.error for t in got]
    assert {c.rollout_id for c in calls} == {x.rollout_id for x in samples}
    assert all(c.response_token_ids and len(c.response_token_ids) == len(c.response_logprobs) for c in calls)
