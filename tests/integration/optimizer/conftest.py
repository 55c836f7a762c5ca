"""Helpers of the optimizer tests: the tiny policy served on CPU, a scripted OpenAI-compatible
optimizer LLM (the service a user brings), tasks, and the optimizer's config."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streamrl.config import Settings
from streamrl.kafka import EventProducer
from streamrl.schemas import Split, Task
from streamrl.schemas.serde import Serde

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the worker imports the test agents by name
    sys.path.insert(0, str(HERE))

SEED = "Answer the question: {question}"
EDITS = [
    "Answer precisely: {question}",  # better: reward 1.0
    "Answer the question below.",  # lost {question}: rejected before any rollout
    "HANG until told: {question}",  # the agent hangs: unfinished at the deadline, scores 0
    "Answer   the question: {question}",  # the seed again (whitespace aside): a duplicate
]
"""The scripted edits, in the order they are asked for; then ``Answer precisely, variant N: {question}``."""


class ScriptedOptimizerLLM:
    """An OpenAI-compatible ``/v1/chat/completions`` with deterministic critiques and edits (a test
    double for the optimizer LLM a user brings). Every request body is kept in ``requests``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.edits = 0
        self.lock = threading.Lock()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._loop = None
        self._thread: threading.Thread | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body["messages"][-1]["content"]
        with self.lock:
            self.requests.append(body)
            if "concise critique" in text:
                answer = "The prompt never asks for precision; ask the model to answer precisely."
            else:
                n = self.edits
                self.edits += 1
                edit = EDITS[n] if n < len(EDITS) else f"Answer precisely, variant {n}: {{question}}"
                answer = f"Here is the new template.\n<prompt>\n{edit}\n</prompt>"
        return web.json_response(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
            }
        )

    def start(self) -> ScriptedOptimizerLLM:
        import asyncio

        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/v1"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


@pytest.fixture
def optimizer_llm() -> Iterator[ScriptedOptimizerLLM]:
    llm = ScriptedOptimizerLLM().start()
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def policy_server(inference_model_dir: Path) -> Iterator[str]:
    """The tiny char-level policy behind StreamRL's CPU inference server; yields its ``/v1`` URL."""
    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread

    svc = InferenceService(
        str(inference_model_dir),
        ServerOptions(served_model_name="policy", max_model_len=1024, max_batch_wait_ms=5),
    )
    svc.start()
    thread = ServerThread(svc.app()).start()
    yield thread.url + "/v1"
    thread.stop()
    svc.stop()


def publish_tasks(settings: Settings, train: list[dict], val: list[dict]) -> None:
    """Publish ``train`` and ``val`` payloads (each with an ``id``) to ``tasks``."""
    serde = Serde()
    topic = settings.topics.name("tasks")
    with EventProducer(settings) as producer:
        for split, rows in ((Split.train, train), (Split.val, val)):
            for row in rows:
                task = Task(task_id=row["id"], split=split, payload=json.dumps(row))
                producer.produce(topic, serde.encode(task), key=task.task_id)


def base_sections(policy_url: str, tokenizer: Path, out: Path, **optimize: Any) -> dict[str, Any]:
    """Config sections of an optimizer test: worker, gateway, and ``optimize`` (no pipeline)."""
    return {
        "worker": {
            "concurrency": 32,
            "rollout_timeout_s": 300,
            "resource_timeout_s": 20,
            "shutdown_timeout_s": 1,
        },
        "gateway": {"upstream_url": policy_url},
        "optimize": {
            "start_pipeline": False,
            "tokenizer": str(tokenizer),
            "output_dir": str(out),
            "display": "plain",
            **optimize,
        },
    }
