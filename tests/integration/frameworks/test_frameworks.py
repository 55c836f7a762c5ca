"""Every agent framework we name trains through StreamRL unchanged: proven with its real package.

For each recipe in ``examples/frameworks/`` a real ``streamrl worker`` process (CrewAI's from its own
environment, ``.venv-crewai``) runs it on the real broker, through its in-process gateway, against the
real CPU inference server serving the tool policy (``tests.support.tool_policy``), once with streaming
off and once on (two samples, worker concurrency 2, so they run at the same time). Each rollout must
succeed with reward 1 after a real tool round trip, and every call must be recorded exactly:

- the first call's recorded response is the tool call and the last call's recorded prompt holds the
  tool's result (the gateway recorded what the framework sent after running the tool);
- every record has prompt and response token ids, one logprob per response token, equal to a forward
  pass of the served model, the serving policy version, and the rollout's attempt;
- a streamed rollout's calls were streamed upstream (``ttft_ms`` set), a plain one's were not.

The README's framework matrix is produced from these tests: the last test renders the matrix from what
passed and fails if the README says otherwise (``STREAMRL_UPDATE_README=1`` rewrites it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from streamrl.kafka import make_producer
from streamrl.schemas import LLMRequest, Mode, RolloutStatus, Sample, Trajectory
from streamrl.schemas.serde import Serde
from tests.support.kafka import TopicReader
from tests.support.tool_policy import ANSWER, BASH_CALL, CALL, REPORT, TOOL_RESULT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
README = REPO / "README.md"
CREWAI_PYTHON = REPO / ".venv-crewai" / "bin" / "python"
BEGIN, END = "<!-- framework-matrix:begin -->", "<!-- framework-matrix:end -->"


@dataclass(frozen=True)
class Recipe:
    """One row of the matrix: a framework, the API it speaks to the gateway, and its recipe."""

    framework: str
    packages: tuple[str, ...]
    api: str
    agent: str
    crewai_env: bool = False
    task: tuple[tuple[str, Any], ...] = (("question", "What is the weather in Paris?"),)
    """The sample's payload (``stream`` added per rollout); a tuple of items (the dataclass is frozen)."""
    first_call: str = CALL
    """What the policy answers to the task (the tool call the first recorded response must be)."""

    @property
    def id(self) -> str:
        return self.agent.removeprefix("examples.frameworks.").replace(":", "-")


RECIPES = [
    Recipe("`openai` SDK", ("openai",), "Chat Completions", "examples.frameworks.openai_chat:solve"),
    Recipe("`openai` SDK", ("openai",), "Responses", "examples.frameworks.openai_responses:solve"),
    Recipe("OpenAI Agents SDK", ("openai-agents",), "Responses", "examples.frameworks.openai_agents:solve"),
    Recipe(
        "OpenAI Agents SDK",
        ("openai-agents",),
        "Chat Completions",
        "examples.frameworks.openai_agents:solve_chat",
    ),
    Recipe(
        "LangChain `ChatOpenAI`",
        ("langchain-openai",),
        "Chat Completions",
        "examples.frameworks.langchain_openai:solve",
    ),
    Recipe(
        "LangChain `ChatOpenAI`",
        ("langchain-openai",),
        "Responses",
        "examples.frameworks.langchain_openai:solve_responses",
    ),
    Recipe(
        "LangGraph `create_react_agent`",
        ("langgraph",),
        "Chat Completions",
        "examples.frameworks.langgraph_react:solve",
    ),
    Recipe(
        "AutoGen `AssistantAgent`",
        ("autogen-agentchat", "autogen-ext"),
        "Chat Completions",
        "examples.frameworks.autogen_assistant:solve",
    ),
    Recipe(
        "CrewAI, native OpenAI",
        ("crewai",),
        "Chat Completions",
        "examples.frameworks.crewai_crew:Native",
        True,
    ),
    Recipe(
        "CrewAI, LiteLLM",
        ("crewai", "litellm"),
        "Chat Completions",
        "examples.frameworks.crewai_crew:LiteLLM",
        True,
    ),
    Recipe(
        "CrewAI, native Anthropic",
        ("crewai", "anthropic"),
        "Messages",
        "examples.frameworks.crewai_crew:Anthropic",
        True,
    ),
    Recipe("LiteLLM", ("litellm",), "Chat Completions", "examples.frameworks.litellm_completion:solve"),
    Recipe("`anthropic` SDK", ("anthropic",), "Messages", "examples.frameworks.anthropic_messages:solve"),
    Recipe(
        "Claude-Code-style agent (`anthropic` SDK, bash and file editor)",
        ("anthropic",),
        "Messages",
        "examples.frameworks.claude_code:solve",
        task=(
            ("question", f"Read {REPORT} and tell me the weather in Paris."),
            ("files", {REPORT: TOOL_RESULT}),
        ),
        first_call=BASH_CALL,
    ),
]

POLICY_VERSION = 3
SERVED = "weather-policy"
"""The served model's name (``llm.model``): not the default ``policy``, so no recipe can depend on it."""

ATTEMPTED: set[str] = set()
PASSED: dict[str, dict[str, bool]] = {}


@dataclass
class ToolServer:
    """The CPU inference server serving the tool policy (``tests.support.tool_policy``)."""

    url: str  # ``http://host:port/v1``
    model: Any  # the same weights, loaded for forward passes
    tokenizer: Any


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    from transformers import AutoTokenizer

    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread, load_model
    from tests.support.tool_policy import CONTEXT, tool_policy_dir

    torch.set_num_threads(1)
    model_dir = tool_policy_dir()  # trained once, then cached in ~/.cache/streamrl/test-models
    svc = InferenceService(
        str(model_dir),
        ServerOptions(served_model_name=SERVED, initial_version=POLICY_VERSION, max_model_len=CONTEXT),
    )
    svc.start()
    thread = ServerThread(svc.app()).start()
    try:
        yield ToolServer(
            thread.url + "/v1", load_model(str(model_dir)), AutoTokenizer.from_pretrained(model_dir)
        )
    finally:
        thread.stop()
        svc.stop()


def _versions(recipe: Recipe) -> str:
    if recipe.crewai_env:
        code = "import sys, importlib.metadata as m; print(' '.join(m.version(p) for p in sys.argv[1:]))"
        out = subprocess.run(
            [str(CREWAI_PYTHON), "-c", code, *recipe.packages], capture_output=True, text=True, check=True
        )
        versions = out.stdout.split()
    else:
        versions = [metadata.version(p) for p in recipe.packages]
    return ", ".join(f"{p} {v}" for p, v in zip(recipe.packages, versions, strict=True))


def _produce(settings, recipe: Recipe, rollout_ids: list[str], stream_flags: list[bool]) -> None:
    serde = Serde()
    producer = make_producer(settings)
    for rid, stream in zip(rollout_ids, stream_flags, strict=True):
        task_id = rid.split("/")[0]
        sample = Sample(
            rollout_id=rid,
            task_id=task_id,
            group_id=f"{task_id}/0",
            group_size=2,
            k=int(rid.split("/")[-1]),
            epoch=0,
            mode=Mode.train,
            payload=json.dumps({**dict(recipe.task), "stream": stream}),
            policy_version=POLICY_VERSION,
        )
        producer.produce(settings.topics.name("samples"), serde.encode(sample), key=rid)
    assert producer.flush(30) == 0


class WorkerProcess:
    """``streamrl worker --agent <recipe>`` as a child process of the given environment."""

    def __init__(self, python: Path | str, agent: str, settings, upstream: str, log: Path) -> None:
        env = {
            **os.environ,
            "STREAMRL_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "STREAMRL_TOPIC_PREFIX": settings.topics.prefix,
            "STREAMRL_GATEWAY__UPSTREAM_URL": upstream,
            "STREAMRL_WORKER__CONCURRENCY": "2",
            "STREAMRL_WORKER__MODEL": SERVED,
            "STREAMRL_WORKER__ROLLOUT_TIMEOUT_S": "180",
            "STREAMRL_WORKER__SESSION_TIMEOUT_MS": "10000",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OMP_NUM_THREADS": "1",
        }
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(python), "-m", "streamrl.cli", "worker", "--agent", agent],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def tail(self) -> str:
        return self.log.read_bytes()[-4000:].decode(errors="replace")

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM: it finishes, publishes, commits and leaves its group)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """Stop the worker and wait for it (SIGKILL after 60 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _forward_logprobs(server: ToolServer, rec: LLMRequest) -> torch.Tensor:
    ids = torch.tensor([rec.prompt_token_ids + rec.response_token_ids])
    with torch.no_grad():
        logits = server.model(ids).logits[0, len(rec.prompt_token_ids) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(rec.response_token_ids)[:, None])[:, 0]


def _check_rollout(
    server: ToolServer, recipe: Recipe, traj: Trajectory, calls: list[LLMRequest], streamed: bool
) -> None:
    where = f"{traj.rollout_id} (stream={streamed})"
    assert traj.status == RolloutStatus.succeeded, f"{where}: {traj.error}"
    assert traj.reward == 1.0, f"{where}: reward {traj.reward}"
    assert len(calls) >= 2, f"{where}: {len(calls)} call(s), a tool round trip needs 2"
    decode = server.tokenizer.decode
    first = decode(calls[0].response_token_ids, skip_special_tokens=True)
    assert first == recipe.first_call, f"{where}: first call answered {first!r}"
    last_prompt = decode(calls[-1].prompt_token_ids)
    assert TOOL_RESULT in last_prompt, (
        f"{where}: the tool's result is not in the last prompt:\n{last_prompt[-400:]}"
    )
    assert decode(calls[-1].response_token_ids, skip_special_tokens=True) == ANSWER
    for i, rec in enumerate(calls):
        assert (
            rec.sequence == i and rec.attempt_id == traj.attempt_id and rec.policy_version == POLICY_VERSION
        )
        assert len(rec.prompt_token_ids) > 0 and len(rec.response_token_ids) == len(rec.response_logprobs) > 0
        expect = _forward_logprobs(server, rec)
        assert torch.allclose(torch.tensor(rec.response_logprobs), expect, atol=2e-3), f"{where} call {i}"
        assert (rec.ttft_ms is not None) == streamed, f"{where} call {i}: ttft_ms={rec.ttft_ms}"


@dataclass
class Run:
    """One recipe's worker, its two samples (streaming off, on) and the readers of its output topics."""

    recipe: Recipe
    worker: WorkerProcess
    streams: dict[str, bool]  # rollout_id -> streamed
    trajs: TopicReader
    reqs: TopicReader


def _settings(bootstrap: str):
    """Settings on the session's broker with a fresh topic prefix, every topic created."""
    from streamrl.config import load_settings
    from streamrl.topics import ensure_topics

    saved = {
        k: os.environ.pop(k)
        for k in ("STREAMRL_BOOTSTRAP_SERVERS", "STREAMRL_TOPIC_PREFIX")
        if k in os.environ
    }
    try:
        settings = load_settings(
            None,
            kafka={"bootstrap_servers": bootstrap},
            topics={"prefix": f"t{uuid.uuid4().hex[:10]}."},
            rl={"group_size": 2},
        )
    finally:
        os.environ.update(saved)
    ensure_topics(settings)
    return settings


class Runs:
    """Starts each recipe's worker on its own topics, one recipe ahead of the test that needs it (a
    worker's start-up, mostly imports, overlaps the previous recipe's rollouts), and stops it after."""

    def __init__(self, wanted: list[Recipe], bootstrap: str, server: ToolServer, logs: Path) -> None:
        self.wanted, self.bootstrap, self.server, self.logs = wanted, bootstrap, server, logs
        self.started: dict[str, Run] = {}

    def _start(self, recipe: Recipe) -> None:
        if recipe.agent in self.started or (recipe.crewai_env and not CREWAI_PYTHON.exists()):
            return
        settings = _settings(self.bootstrap)
        task = f"t{uuid.uuid4().hex[:6]}"
        streams = {f"{task}/0/0": False, f"{task}/0/1": True}
        python = CREWAI_PYTHON if recipe.crewai_env else sys.executable
        log = self.logs / f"{recipe.id}.log"
        worker = WorkerProcess(python, recipe.agent, settings, self.server.url, log)
        self.started[recipe.agent] = Run(
            recipe,
            worker,
            streams,
            TopicReader(settings, "trajectories", Trajectory),
            TopicReader(settings, "requests", LLMRequest),
        )
        _produce(settings, recipe, list(streams), list(streams.values()))

    def get(self, recipe: Recipe) -> Run:
        """The recipe's run (started now if it was not), after starting the next recipe's worker."""
        self._start(recipe)
        i = self.wanted.index(recipe) if recipe in self.wanted else -1
        if 0 <= i < len(self.wanted) - 1:
            self._start(self.wanted[i + 1])
        return self.started[recipe.agent]

    def close(self, run: Run) -> None:
        run.worker.stop()
        run.trajs.close()
        run.reqs.close()


@pytest.fixture(scope="module")
def runs(request, kafka_bootstrap: str, tool_server: ToolServer, tmp_path_factory) -> Iterator[Runs]:
    wanted = [
        item.callspec.params["recipe"]
        for item in request.session.items
        if item.module is request.module
        and "recipe" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    manager = Runs(wanted, kafka_bootstrap, tool_server, tmp_path_factory.mktemp("workers"))
    try:
        yield manager
    finally:
        for run in manager.started.values():
            run.worker.terminate()
        for run in manager.started.values():
            manager.close(run)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.id)
def test_recipe_trains_through_a_real_worker(recipe: Recipe, runs: Runs, tool_server) -> None:
    ATTEMPTED.add(recipe.agent)
    if recipe.crewai_env and not CREWAI_PYTHON.exists():
        pytest.fail(f"{CREWAI_PYTHON} is missing: run `make setup` (it builds CrewAI's environment)")
    run = runs.get(recipe)
    worker, trajs = run.worker, run.trajs
    try:
        deadline = time.monotonic() + 300
        while len(trajs.records) < 2:  # the worker must stay alive until both rollouts are in
            assert worker.proc.poll() is None, f"worker exited:\n{worker.tail()}"
            assert time.monotonic() < deadline, f"no trajectories after 300 s:\n{worker.tail()}"
            trajs.poll(0.5)
        got: list[Trajectory] = list(trajs.records)
        n_calls = sum(len(t.request_ids) for t in got)
        records = {r.request_id: r for r in run.reqs.read_until(lambda r: len(r) >= n_calls, timeout_s=30)}
    finally:
        runs.close(run)
    for traj in got:
        calls = [records[i] for i in traj.request_ids]
        try:
            _check_rollout(tool_server, recipe, traj, calls, run.streams[traj.rollout_id])
        except AssertionError as exc:
            raise AssertionError(f"{recipe.agent}: {exc}\nworker log:\n{worker.tail()}") from exc
    PASSED[recipe.agent] = {"streaming": True, "tool round trip": True, "ids recorded": True}


_STAGE_MODULES = (
    "streamrl.cli",
    "streamrl.dev.runner",
    "streamrl.producers.publish",
    "streamrl.producers.sampler",
    "streamrl.consumers.worker",
    "streamrl.streams.app",
)


def test_streamrl_runs_in_one_environment_with_crewai_and_chromadb(kafka_bootstrap: str, tmp_path) -> None:
    """chromadb (a CrewAI dependency) installs a top-level ``schemas`` package; StreamRL's own
    packages live under ``streamrl.*``, so in CrewAI's environment every stage still imports and
    ``streamrl publish`` publishes to the real broker (the worker runs there in the CrewAI recipes)."""
    if not CREWAI_PYTHON.exists():
        pytest.fail(f"{CREWAI_PYTHON} is missing: run `make setup` (it builds CrewAI's environment)")
    code = (
        "import importlib, sys, chromadb, schemas\n"
        "assert list(schemas.__path__)[0].endswith('site-packages/schemas'), schemas.__path__\n"
        "from chromadb.utils.embedding_functions.schemas.schema_utils import load_schema\n"
        "assert load_schema('base_schema')\n"
        "for m in sys.argv[1:]: importlib.import_module(m)\n"
        "from streamrl.schemas import Mode; print('ok', chromadb.__version__, Mode.train.value)"
    )
    out = subprocess.run(  # outside the repository: the top-level ``schemas`` is chromadb's
        [str(CREWAI_PYTHON), "-c", code, *_STAGE_MODULES], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0 and out.stdout.startswith("ok "), out.stderr[-3000:]
    settings = _settings(kafka_bootstrap)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"id": "a", "question": "Weather in Paris?"}\n{"id": "b", "question": "Is it sunny?"}\n'
    )
    env = {
        **os.environ,
        "STREAMRL_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMRL_TOPIC_PREFIX": settings.topics.prefix,
    }
    pub = subprocess.run(
        [str(CREWAI_PYTHON), "-m", "streamrl.cli", "publish", str(tasks), "--id-field", "id"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert pub.returncode == 0 and "published 2 task(s)" in pub.stdout, pub.stdout + pub.stderr[-3000:]


def render_matrix() -> str:
    """The README's framework matrix from what passed in this run."""
    lines = [
        "| framework | version | API to the gateway | recipe | streaming | tool round trip | ids recorded |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in RECIPES:
        ok = PASSED.get(r.agent, {})
        cells = ["yes" if ok.get(k) else "**no**" for k in ("streaming", "tool round trip", "ids recorded")]
        lines.append(
            f"| {r.framework} | {_versions(r)} | {r.api} | `{r.agent.removeprefix('examples.frameworks.')}` | {' | '.join(cells)} |"
        )
    return "\n".join(lines)


def test_readme_matrix_is_what_passed() -> None:
    if ATTEMPTED != {r.agent for r in RECIPES}:
        pytest.skip("the README's matrix is checked when every recipe test ran in this session")
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"README.md has no {BEGIN} ... {END} section"
    head, rest = text.split(BEGIN, 1)
    current, tail = rest.split(END, 1)
    expected = render_matrix()
    if os.environ.get("STREAMRL_UPDATE_README") == "1":
        README.write_text(f"{head}{BEGIN}\n{expected}\n{END}{tail}", encoding="utf-8")
        return
    assert current.strip() == expected, (
        "README.md's framework matrix differs from what the tests just showed; rerun with "
        f"STREAMRL_UPDATE_README=1 to write it:\n{expected}"
    )
