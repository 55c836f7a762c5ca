"""The CPU inference server: FastAPI app over :class:`Engine` + :class:`Batcher`.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both with ``stream``),
``GET /v1/models``, ``GET /health``, ``GET /metrics``. Every completion response carries the
``policy_version`` that generated it (body field and ``X-Policy-Version`` header; in streaming, in every
chunk). Response format: see :mod:`streamrl.inference.protocol`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from streamrl.inference.batcher import Batcher
from streamrl.inference.engine import Engine, LogprobsMode, Policy, Sequence, streamed_text, visible_text
from streamrl.inference.errors import OverloadedError, RequestError
from streamrl.inference.metrics import InferenceMetrics
from streamrl.inference.protocol import (
    ChatRequest,
    CompletionRequest,
    TokenizeRequest,
    TokenTable,
    chat_response,
    completion_response,
    error_body,
)
from streamrl.inference.tools import ToolCallStream, fallback_messages, template_renders_tools
from streamrl.schemas.inference_http import (
    HEALTH_PATH,
    LOGPROB_TOKENS,
    LOGPROBS,
    LOGPROBS_CONTENT,
    POLICY_VERSION,
    PROMPT_TOKEN_IDS,
    SSE_DONE,
    STOP_REASON,
    TOKEN_IDS,
    TOKEN_LOGPROBS,
    TOKENIZE_PATH,
    version_headers,
)

log = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """Options of :class:`InferenceService` (mirrors ``InferenceSettings``; see its field docs)."""

    served_model_name: str = "policy"
    initial_version: int = 0
    max_model_len: int | None = None
    max_batch_size: int = 32
    max_batch_wait_ms: float = 5.0
    max_queue: int = 4096
    logprobs_mode: LogprobsMode = "scaled"
    dtype: str = "float32"
    torch_threads: int | None = 1


def load_model(path: str, dtype: str = "float32") -> Any:
    """Load a transformers causal LM from an HF directory, in eval mode on CPU.

    Weights are read from ``*.safetensors`` only (``use_safetensors=True``): a ``pytorch_model.bin``
    (pickle) is never opened, so a tampered directory cannot run code here.

    Raises:
        OSError/ValueError: from transformers when the directory is not a loadable model (or has no
        safetensors weights).
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), use_safetensors=True)
    return model.eval()


class InferenceService:
    """Tokenizer, engine, batcher and metrics of one server; :meth:`app` builds its FastAPI app.

    Args:
        model_dir: HF model directory served at start (its tokenizer is used for the server's life).
        options: see :class:`ServerOptions`.
    """

    def __init__(self, model_dir: str, options: ServerOptions | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        self.options = opts = options or ServerOptions()
        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = load_model(model_dir, opts.dtype)
        cfg = model.config
        self.max_model_len = opts.max_model_len or int(getattr(cfg, "max_position_embeddings", 2048))
        eos = getattr(model.generation_config, "eos_token_id", None) or cfg.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(self.tokenizer.eos_token_id)
        self.metrics = InferenceMetrics()
        self.engine = Engine(
            self.tokenizer, Policy(model, opts.initial_version, model_dir), eos_ids, opts.logprobs_mode
        )
        self.metrics.version.set(opts.initial_version)
        self.batcher = Batcher(
            self.engine,
            self.metrics,
            max_batch_size=opts.max_batch_size,
            max_batch_wait_ms=opts.max_batch_wait_ms,
            max_queue=opts.max_queue,
        )
        self.table = TokenTable(self.tokenizer)
        self.template_tools = template_renders_tools(self.tokenizer)
        """Whether the model's chat template renders ``tools`` (else :mod:`~streamrl.inference.tools` does)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batching thread."""
        self.batcher.start()

    def stop(self) -> None:
        """Stop the batching thread (queued requests finish with ``abort``)."""
        self.batcher.stop()

    def stage(self, policy: Policy) -> None:
        """Serve ``policy`` from the next batch on (called by the checkpoint watcher)."""
        self.engine.stage(policy)

    # -- request handling --------------------------------------------------------------------------
    def _check_length(self, prompt_len: int, max_tokens: int | None) -> int:
        limit = self.max_model_len
        if prompt_len == 0:
            raise RequestError("the prompt is empty (0 tokens)", "messages")
        if prompt_len >= limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, your request has "
                f"{prompt_len} input tokens. Please reduce the length of the input messages.",
                "messages",
            )
        if max_tokens is None:
            return limit - prompt_len
        if prompt_len + max_tokens > limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.",
                "max_tokens",
            )
        return max_tokens

    def _chat_prompt(
        self, req: ChatRequest | TokenizeRequest, tools: list[dict[str, Any]] | None
    ) -> list[int]:
        """Prompt token ids of a chat request: the model's chat template, with ``tools`` rendered by the
        template if it can, else by :func:`~streamrl.inference.tools.fallback_messages` (system prompt)."""
        kwargs = dict(req.chat_template_kwargs or {})
        if req.continue_final_message:
            if req.add_generation_prompt:
                raise RequestError(
                    "continue_final_message needs add_generation_prompt: false", "continue_final_message"
                )
            kwargs["continue_final_message"] = True
        messages = [{**m, "role": "system"} if m.get("role") == "developer" else m for m in req.messages]
        if self.template_tools:
            kwargs["tools"] = tools
        else:
            messages = fallback_messages(messages, tools)
        try:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=req.add_generation_prompt, tokenize=False, **kwargs
            )
        except Exception as exc:  # jinja errors: the messages do not fit the template
            raise RequestError(
                f"cannot apply the chat template to these messages: {exc}", "messages"
            ) from exc
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _encode_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        vocab = len(self.tokenizer)
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"prompt token ids out of range [0, {vocab}): {bad[:5]}", "prompt")
        return list(prompt)

    def _submit(self, groups: list[list[Sequence]]) -> _Bridge:
        bridge = _Bridge(asyncio.get_running_loop(), sum(len(g) for g in groups))
        seqs = [s for g in groups for s in g]
        for s in seqs:
            s.emit = bridge
        self.batcher.submit(seqs)  # one request = one batch unit, so one version for all its choices
        return bridge

    def app(self) -> FastAPI:
        """The FastAPI application (routes bound to this service)."""
        app = FastAPI(title="StreamRL inference (CPU)")
        svc = self

        @app.exception_handler(RequestError)
        async def _bad_request(request: Request, exc: RequestError) -> JSONResponse:
            svc.metrics.requests.labels(request.url.path, "400").inc()
            return JSONResponse(error_body(str(exc), 400, "BadRequestError", exc.param), status_code=400)

        @app.exception_handler(RequestValidationError)
        async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
            svc.metrics.requests.labels(request.url.path, "400").inc()
            parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            return JSONResponse(error_body("; ".join(parts), 400, "BadRequestError"), status_code=400)

        @app.exception_handler(OverloadedError)
        async def _overloaded(request: Request, exc: OverloadedError) -> JSONResponse:
            svc.metrics.requests.labels(request.url.path, "503").inc()
            return JSONResponse(error_body(str(exc), 503, "ServiceUnavailableError"), status_code=503)

        @app.get(HEALTH_PATH)
        async def health() -> dict[str, Any]:
            return {
                "status": "ok",
                "model": svc.options.served_model_name,
                POLICY_VERSION: svc.engine.version,
            }

        @app.get("/metrics")
        async def metrics() -> PlainTextResponse:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return PlainTextResponse(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {
                "object": "list",
                "data": [
                    {
                        "id": svc.options.served_model_name,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "streamrl",
                        "root": svc.model_dir,
                        "max_model_len": svc.max_model_len,
                        POLICY_VERSION: svc.engine.version,
                    }
                ],
            }

        @app.post(TOKENIZE_PATH)
        async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
            if req.messages is not None:
                ids = svc._chat_prompt(req, req.tools)
            elif req.prompt is not None:
                ids = svc.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
            else:
                raise RequestError("give either prompt or messages", "prompt")
            svc.metrics.requests.labels(TOKENIZE_PATH, "200").inc()
            return {"count": len(ids), "max_model_len": svc.max_model_len, "tokens": ids}

        @app.post("/v1/chat/completions")
        async def chat(req: ChatRequest) -> Any:
            tools = req.active_tools()
            prompt = svc._chat_prompt(req, tools)
            max_tokens = svc._check_length(len(prompt), req.max_completion_tokens or req.max_tokens)
            top = req.top_logprobs or 0
            params = req.sampling(max_tokens, top)
            group = [Sequence(prompt, params, index=i) for i in range(req.n)]
            bridge = svc._submit([group])
            if req.stream:
                return await svc._stream(bridge, group, req, chat=True, tools=bool(tools))
            version = await bridge.wait_all()
            texts = [visible_text(svc.tokenizer, s) for s in group]
            body = chat_response(
                model=svc.options.served_model_name,
                seqs=group,
                texts=texts,
                table=svc.table,
                with_tools=bool(tools),
                version=version,
            )
            svc.metrics.requests.labels("/v1/chat/completions", "200").inc()
            return JSONResponse(body, headers=version_headers(version))

        @app.post("/v1/completions")
        async def completions(req: CompletionRequest) -> Any:
            prompts = [svc._encode_prompt(p) for p in req.prompts()]
            groups = []
            for prompt in prompts:
                max_tokens = svc._check_length(len(prompt), req.max_tokens or 16)
                params = req.sampling(max_tokens, req.logprobs or 0)
                groups.append([Sequence(prompt, params, index=i) for i in range(req.n)])
            if req.stream and len(groups) > 1:
                raise RequestError("stream=true supports one prompt per request", "prompt")
            bridge = svc._submit(groups)
            seqs = [s for g in groups for s in g]
            if req.stream:
                return await svc._stream(bridge, seqs, req, chat=False)
            version = await bridge.wait_all()
            texts = [visible_text(svc.tokenizer, s) for s in seqs]
            body = completion_response(
                model=svc.options.served_model_name, seqs=seqs, texts=texts, table=svc.table, version=version
            )
            svc.metrics.requests.labels("/v1/completions", "200").inc()
            return JSONResponse(body, headers=version_headers(version))

        return app

    async def _stream(
        self, bridge: _Bridge, seqs: list[Sequence], req: Any, *, chat: bool, tools: bool = False
    ) -> StreamingResponse:
        """SSE response: waits for the batch to start (to know the version), then one chunk per token."""
        version = await bridge.wait_start()
        endpoint = "/v1/chat/completions" if chat else "/v1/completions"
        self.metrics.requests.labels(endpoint, "200").inc()
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            self._chunks(bridge, seqs, version, chat=chat, tools=tools, include_usage=include_usage),
            media_type="text/event-stream",
            headers={**version_headers(version), "Cache-Control": "no-cache"},
        )

    async def _chunks(
        self,
        bridge: _Bridge,
        seqs: list[Sequence],
        version: int,
        *,
        chat: bool,
        tools: bool,
        include_usage: bool,
    ) -> AsyncIterator[str]:
        """SSE chunks: one per generated token (with its id and logprob), then one per finished choice.

        With ``tools``, text that may belong to a ``<tool_call>`` block is held back and a parsed call
        is sent as a ``tool_calls`` delta (:class:`~streamrl.inference.tools.ToolCallStream`); token ids
        and logprobs are still sent with every token.
        """
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        base = {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.options.served_model_name,
            POLICY_VERSION: version,
        }
        by_index = {id(s): i for i, s in enumerate(seqs)}
        sent = [0] * len(seqs)

        parsers = [ToolCallStream() if tools else None for _ in seqs]

        def delta(i: int, s: Sequence, upto: int, final: bool) -> dict[str, Any]:
            """The chat delta (or completion text) for choice ``i`` after ``upto`` tokens."""
            full = visible_text(self.tokenizer, s) if final else streamed_text(self.tokenizer, s, upto)
            parser = parsers[i]
            if parser is not None:
                text, calls = parser.feed(full)
                if final:
                    more, calls2 = parser.finish()
                    text, calls = text + more, calls + calls2
                out: dict[str, Any] = {"content": text} if text or not calls else {}
                if calls:
                    out["tool_calls"] = calls
                return out
            text = full[sent[i] :] if len(full) > sent[i] else ""
            sent[i] = max(sent[i], len(full))
            return {"content": text}

        def chunk(choice: dict[str, Any], **extra: Any) -> str:
            return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n"

        if chat:
            for i, s in enumerate(seqs):
                first = {"index": s.index, "delta": {"role": "assistant", "content": ""}, LOGPROBS: None,
                         TOKEN_IDS: [], "finish_reason": None}  # fmt: skip
                yield chunk(first, **{PROMPT_TOKEN_IDS: list(s.prompt_ids)}) if i == 0 else chunk(first)
        finished = False
        try:
            async for kind, s, payload in bridge.events():
                i = by_index[id(s)]
                if kind == "token":
                    tok, lp, top = s.token_ids[payload], s.logprobs[payload], s.top[payload]
                    d = delta(i, s, payload + 1, final=False)
                    if chat:
                        choice = {"index": s.index, "delta": d,
                                  LOGPROBS: {LOGPROBS_CONTENT: [self.table.chat_logprob(tok, lp, top)]},
                                  TOKEN_IDS: [tok], "finish_reason": None}  # fmt: skip
                    else:
                        tok_text = self.table.entry(tok)[0]
                        choice = {"index": i, "text": d["content"], TOKEN_IDS: [tok], "finish_reason": None,
                                  LOGPROBS: {LOGPROB_TOKENS: [tok_text], TOKEN_LOGPROBS: [lp],
                                               "top_logprobs": [{self.table.entry(t)[0]: v for t, v in top}]}}  # fmt: skip
                    extra = {PROMPT_TOKEN_IDS: list(s.prompt_ids)} if (not chat and payload == 0) else {}
                    yield chunk(choice, **extra)
                elif kind == "finish":
                    d = delta(i, s, len(s.token_ids), final=True)
                    if chat:
                        parser = parsers[i]
                        reason = (
                            "tool_calls"
                            if parser is not None and parser.calls and payload == "stop"
                            else payload
                        )
                        choice = {"index": s.index, "delta": d if any(d.values()) else {}, LOGPROBS: None,
                                  TOKEN_IDS: [], "finish_reason": reason, STOP_REASON: s.stop_reason}  # fmt: skip
                    else:
                        choice = {"index": i, "text": d["content"], TOKEN_IDS: [], LOGPROBS: None,
                                  "finish_reason": payload, STOP_REASON: s.stop_reason}  # fmt: skip
                    yield chunk(choice)
                elif kind == "error":
                    yield f"data: {json.dumps(error_body(f'generation failed: {payload}', 500, 'InternalServerError'))}\n\n"
                    break
            finished = True
            if include_usage:
                prompt_tokens = len(seqs[0].prompt_ids)
                completion = sum(len(s.token_ids) for s in seqs)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                         "total_tokens": prompt_tokens + completion}  # fmt: skip
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield f"data: {SSE_DONE}\n\n"
        finally:
            if not finished:  # client went away: stop generating for it
                for s in seqs:
                    s.cancelled = True


class _Bridge:
    """Carries engine-thread events of one request into its asyncio handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, num_seqs: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Sequence, Any]] = asyncio.Queue()
        self.num_seqs = num_seqs
        self.version: int | None = None
        self._pending: list[tuple[str, Sequence, Any]] = []

    def __call__(self, kind: str, seq: Sequence, payload: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, seq, payload))

    async def wait_start(self) -> int:
        """Wait until the request's batch starts; returns the policy version generating it."""
        while self.version is None:
            kind, seq, payload = await self.queue.get()
            if kind == "start":
                self.version = payload
            else:
                self._pending.append((kind, seq, payload))
        return self.version

    async def events(self) -> AsyncIterator[tuple[str, Sequence, Any]]:
        """Token/finish/error events until every sequence finished."""
        done = 0
        while done < self.num_seqs:
            if self._pending:
                ev = self._pending.pop(0)
            else:
                ev = await self.queue.get()
            kind = ev[0]
            if kind == "start":
                self.version = ev[2] if self.version is None else self.version
                continue
            if kind in ("finish", "error"):
                done += 1
            yield ev

    async def wait_all(self) -> int:
        """Wait until every sequence finished; returns the version.

        Raises:
            RuntimeError: the batch failed (HTTP 500).
        """
        async for kind, _s, payload in self.events():
            if kind == "error":
                raise RuntimeError(f"generation failed: {payload}") from payload
        assert self.version is not None
        return self.version


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = any free port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class ServerThread:
    """Run an ASGI app (FastAPI) with uvicorn in a background thread (tests, benchmarks, the vLLM proxy).

    Args:
        app: the application.
        host, port: bind address (port 0 = any free port).
        cert_file, key_file: PEM certificate and key to serve HTTPS with.

    Attributes:
        url: ``http[s]://host:port`` once started.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        import uvicorn

        self.sock = bind_socket(host, port)
        scheme = "https" if cert_file else "http"
        self.url = f"{scheme}://{host}:{self.sock.getsockname()[1]}"
        tls = {"ssl_certfile": cert_file, "ssl_keyfile": key_file} if cert_file else {}
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **tls))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        """Start and wait until uvicorn accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
