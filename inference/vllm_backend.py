"""The ``vllm`` backend: ``vllm serve`` on GPUs behind a thin front server with the CPU server's API.

This module never imports vllm (CPU machines do not have it): it launches ``vllm serve`` as a
subprocess (or attaches to a running one) and talks HTTP to it.

Front server (``inference.host:port``): forwards ``/tokenize`` as is, and ``/v1/chat/completions`` and
``/v1/completions`` to vLLM with ``return_token_ids: true`` and (chat) ``logprobs: true`` forced, and adds
``policy_version`` to every response and stream chunk plus the ``X-Policy-Version`` header.

Weight reload, between requests: a :class:`VersionGate` stops admitting new requests, waits until the
in-flight ones finish (they report the old version), reloads, then admits again with the new version.

- ``full``: ``POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": dir}}``
  (vLLM >= 0.11's ``Worker.reload_weights(weights_path=...)``), falling back to
  ``update_config({"model_config": {"model": dir}})`` + ``reload_weights()`` (vLLM 0.10.x); then
  ``POST /reset_prefix_cache`` so no KV computed by the old weights is reused. ``/collective_rpc``
  and ``/reset_prefix_cache`` exist only with ``VLLM_SERVER_DEV_MODE=1``, which the launcher sets;
  keep that port private (it executes worker methods).
- ``lora``: ``POST /v1/load_lora_adapter {"lora_name": "<policy>-v<version>", "lora_path": dir}``
  (needs ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); requests are then sent with
  ``model = "<policy>-v<version>"`` and the previous adapter is unloaded.

Logprobs: ``logprobs_mode=scaled`` launches vLLM with ``--logprobs-mode processed_logprobs``
(log-softmax after temperature, and after top-k/top-p masking, which equals the CPU server's
``scaled`` when top_p = 1 and top_k is off); ``raw`` uses vLLM's default ``raw_logprobs``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from streamrl.errors import CheckpointError
from streamrl.inference.errors import InferenceError
from streamrl.inference.metrics import InferenceMetrics
from streamrl.inference.reload import require_safetensors
from streamrl.parent_death import die_with_parent
from streamrl.schemas.inference_http import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    HEALTH_PATH,
    POLICY_VERSION,
    SSE_DONE,
    TOKENIZE_PATH,
    force_training_fields,
    version_headers,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from streamrl.config import Settings
    from streamrl.schemas import CheckpointEvent

log = logging.getLogger(__name__)


def vllm_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The ``vllm serve`` argv and extra environment for ``settings.inference``.

    Raises:
        InferenceError: ``inference.model`` is not set.
    """
    inf, v = settings.inference, settings.inference.vllm
    if not inf.model:
        raise InferenceError("inference.model is not set: pass --model DIR")
    argv = [
        v.executable, "serve", inf.model,
        "--host", "127.0.0.1",
        "--port", str(v.port),
        "--served-model-name", inf.served_model_name or settings.rl.policy_name,
        "--gpu-memory-utilization", str(v.gpu_memory_utilization),
        "--tensor-parallel-size", str(v.tensor_parallel_size),
        "--dtype", inf.dtype,
        "--logprobs-mode", "processed_logprobs" if inf.logprobs_mode == "scaled" else "raw_logprobs",
        "--max-logprobs", "20",
        "--seed", str(settings.rl.seed),
    ]  # fmt: skip
    if inf.max_model_len:
        argv += ["--max-model-len", str(inf.max_model_len)]
    if v.enable_lora:
        argv += ["--enable-lora", "--max-lora-rank", str(v.max_lora_rank)]
    if v.enforce_eager:
        argv.append("--enforce-eager")
    if not any(a == "--generation-config" or a.startswith("--generation-config=") for a in v.extra_args):
        # vLLM's own sampling defaults (temperature 1.0), not the model's generation_config.json: a
        # request that names no temperature samples at DEFAULT_TEMPERATURE, which the gateway records
        # and the trainer divides its logits by
        argv += ["--generation-config", "vllm"]
    if not any(a == "--load-format" or a.startswith("--load-format=") for a in v.extra_args):
        argv += ["--load-format", "safetensors"]  # never a pickled .bin (docs/SECURITY.md)
    argv += list(v.extra_args)
    env = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    return argv, env


def prepare_body(body: dict[str, Any], *, chat: bool, model: str) -> dict[str, Any]:
    """The request body sent to vLLM: token ids and logprobs forced on, ``model`` set to the current policy."""
    out = dict(body)
    out["model"] = model
    return force_training_fields(out, chat=chat)


def tag_sse_line(line: str, version: int) -> str:
    """Add ``policy_version`` to one SSE ``data:`` line of vLLM's stream (other lines unchanged)."""
    if not line.startswith("data:"):
        return line
    payload = line[5:].strip()
    if not payload or payload == SSE_DONE:
        return line
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError:
        return line
    if isinstance(obj, dict):
        obj[POLICY_VERSION] = version
    return "data: " + json.dumps(obj)


class VersionGate:
    """Admits requests under the current version; a reload drains them first.

    ``enter()`` blocks while a reload runs and returns the version the request will be served by;
    ``exit()`` ends it; ``exclusive()`` closes the gate, waits for in-flight requests, and reopens it
    after the ``with`` block (the caller switches the version inside).
    """

    def __init__(self, version: int) -> None:
        self.version = version
        self._cond = threading.Condition()
        self._inflight = 0
        self._closed = False

    def try_enter(self) -> int | None:
        """Non-blocking :meth:`enter`: None while a reload runs."""
        with self._cond:
            if self._closed:
                return None
            self._inflight += 1
            return self.version

    def enter(self, timeout_s: float | None = None) -> int:
        """Wait for the gate to be open, then count a request in.

        Raises:
            TimeoutError: the gate stayed closed for ``timeout_s``.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: not self._closed, timeout_s):
                raise TimeoutError("a weight reload is taking too long")
            self._inflight += 1
            return self.version

    def exit(self) -> None:
        """Count a request out."""
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    @contextmanager
    def exclusive(self, timeout_s: float | None = None) -> Iterator[None]:
        """Close the gate and wait until no request is in flight.

        Raises:
            TimeoutError: in-flight requests did not finish within ``timeout_s`` (the gate reopens).
        """
        with self._cond:
            self._closed = True
            if not self._cond.wait_for(lambda: self._inflight == 0, timeout_s):
                self._closed = False
                self._cond.notify_all()
                raise TimeoutError(f"{self._inflight} requests still in flight")
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()


class VllmService:
    """``vllm serve`` (launched or attached) plus the front server and the reload target.

    Args:
        settings: StreamRL settings (``inference`` and ``inference.vllm`` sections, ``rl.policy_name``).
    """

    def __init__(self, settings: Settings) -> None:
        inf = settings.inference
        self.settings = settings
        self.served_name = inf.served_model_name or settings.rl.policy_name
        self.model_dir = inf.model or ""
        self.base_url = (inf.vllm.attach_url or f"http://127.0.0.1:{inf.vllm.port}").rstrip("/")
        self.metrics = InferenceMetrics()
        self.gate = VersionGate(inf.initial_version)
        self.metrics.version.set(inf.initial_version)
        self.lora_name: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._timeout = inf.vllm.request_timeout_s

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Launch ``vllm serve`` (unless attaching) and wait until ``/health`` answers. On Linux it
        gets SIGTERM when the calling thread ends (this server's death included): call it from the
        thread that serves.

        Raises:
            InferenceError: vLLM exited or did not become healthy within ``startup_timeout_s``.
        """
        v = self.settings.inference.vllm
        if v.attach_url is None:
            argv, env = vllm_command(self.settings)
            log_path = Path(os.environ.get("STREAMRL_VLLM_LOG", "vllm-serve.log"))
            self._log_file = log_path.open("ab")
            log.info("launching: %s (log: %s)", " ".join(argv), log_path)
            self._proc = subprocess.Popen(
                argv,
                env={**os.environ, **env},
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),  # SIGTERM if this server is killed before its stop
            )
        deadline = time.monotonic() + v.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise InferenceError(f"vllm serve exited with code {self._proc.returncode}; see its log")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise InferenceError(f"vllm serve at {self.base_url} not healthy after {v.startup_timeout_s:.0f} s")

    def stop(self) -> None:
        """Terminate a launched ``vllm serve`` (SIGTERM, then SIGKILL after 30 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._log_file is not None:
            self._log_file.close()

    # -- reload (ReloadTarget) ---------------------------------------------------------------------
    @property
    def loaded_version(self) -> int:
        """Version serving now (reloads are synchronous, so nothing is ever only staged)."""
        return self.gate.version

    def _post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", json=body, timeout=self._timeout)

    def apply(self, event: CheckpointEvent, path: Path) -> None:
        """Drain in-flight requests, load the checkpoint into vLLM, switch the version.

        Raises:
            CheckpointError: vLLM refused the weights (``reason="load"``) or the drain timed out.
        """
        require_safetensors(event, path)
        try:
            with self.gate.exclusive(timeout_s=self._timeout):
                if event.kind.value == "lora":
                    self._load_lora(event, path)
                else:
                    self._reload_full(path)
                self.gate.version = event.version
        except TimeoutError as exc:
            raise CheckpointError(f"checkpoint v{event.version}: {exc}", "drain") from exc
        except httpx.HTTPError as exc:
            raise CheckpointError(f"checkpoint v{event.version}: vLLM unreachable: {exc}", "load") from exc
        self.metrics.version.set(event.version)

    def _reload_full(self, path: Path) -> None:
        r = self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
        if r.status_code != 200:
            log.info(
                "reload_weights(weights_path=) refused (%d); trying update_config + reload_weights",
                r.status_code,
            )
            r = self._post(
                "/collective_rpc",
                {"method": "update_config", "args": [{"model_config": {"model": str(path)}}]},
            )
            if r.status_code == 200:
                r = self._post("/collective_rpc", {"method": "reload_weights"})
        if r.status_code != 200:
            raise CheckpointError(
                f"vLLM could not reload weights from {path}: HTTP {r.status_code} {r.text[:300]}", "load"
            )
        self._post("/reset_prefix_cache")

    def _load_lora(self, event: CheckpointEvent, path: Path) -> None:
        name = f"{self.served_name}-v{event.version}"
        r = self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        if r.status_code != 200:
            raise CheckpointError(
                f"vLLM could not load LoRA {path}: HTTP {r.status_code} {r.text[:300]}", "load"
            )
        old, self.lora_name = self.lora_name, name
        if old is not None:
            self._post("/v1/unload_lora_adapter", {"lora_name": old})

    # -- front server ------------------------------------------------------------------------------
    async def _admit(self) -> int:
        version = self.gate.try_enter()
        if version is None:
            version = await asyncio.to_thread(self.gate.enter, self._timeout)
        return version

    def app(self) -> FastAPI:
        """FastAPI front server with the CPU server's routes, proxying to vLLM."""
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

        app = FastAPI(title="StreamRL inference (vLLM)")
        client = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout)
        svc = self

        @app.get(HEALTH_PATH)
        async def health() -> dict[str, Any]:
            r = await client.get(HEALTH_PATH)
            return {"status": "ok" if r.status_code == 200 else "unhealthy", "model": svc.served_name,
                    POLICY_VERSION: svc.gate.version, "staged_version": None}  # fmt: skip

        @app.get("/metrics")
        async def metrics() -> PlainTextResponse:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return PlainTextResponse(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        @app.get("/v1/models")
        async def models() -> Any:
            r = await client.get("/v1/models")
            body = r.json()
            for m in body.get("data", []):
                m[POLICY_VERSION] = svc.gate.version
            return JSONResponse(body, status_code=r.status_code)

        async def forward(request: Request, path: str, chat: bool) -> Response:
            body = await request.json()
            version = await svc._admit()
            model = svc.lora_name or svc.served_name
            out = prepare_body(body, chat=chat, model=model)
            if not out.get("stream"):
                try:
                    r = await client.post(path, json=out)
                finally:
                    svc.gate.exit()
                svc.metrics.requests.labels(path, str(r.status_code)).inc()
                if r.status_code != 200:
                    return Response(r.content, status_code=r.status_code, media_type="application/json")
                data = r.json()
                data[POLICY_VERSION] = version
                data["model"] = svc.served_name
                svc.metrics.generated_tokens.inc((data.get("usage") or {}).get("completion_tokens", 0))
                return JSONResponse(data, headers=version_headers(version))
            req = client.build_request("POST", path, json=out)
            try:
                resp = await client.send(req, stream=True)
            except BaseException:
                svc.gate.exit()
                raise
            svc.metrics.requests.labels(path, str(resp.status_code)).inc()
            if resp.status_code != 200:
                content = await resp.aread()
                await resp.aclose()
                svc.gate.exit()
                return Response(content, status_code=resp.status_code, media_type="application/json")

            async def lines() -> AsyncIterator[str]:
                try:
                    async for line in resp.aiter_lines():
                        yield tag_sse_line(line, version) + "\n"
                finally:
                    await resp.aclose()
                    svc.gate.exit()

            return StreamingResponse(
                lines(), media_type="text/event-stream", headers=version_headers(version)
            )

        @app.post(f"/v1/{CHAT_COMPLETIONS}")
        async def chat(request: Request) -> Response:
            return await forward(request, f"/v1/{CHAT_COMPLETIONS}", chat=True)

        @app.post(f"/v1/{COMPLETIONS}")
        async def completions(request: Request) -> Response:
            return await forward(request, f"/v1/{COMPLETIONS}", chat=False)

        @app.post(TOKENIZE_PATH)
        async def tokenize(request: Request) -> Response:
            body = await request.json()
            body["model"] = svc.lora_name or svc.served_name
            r = await client.post(TOKENIZE_PATH, json=body)
            return Response(r.content, status_code=r.status_code, media_type="application/json")

        return app
