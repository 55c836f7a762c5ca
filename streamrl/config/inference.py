"""Config section of the inference service (``inference:`` in ``streamrl.yaml``).

Imports no torch or vllm: the CLI parses this before any heavy import.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from streamrl.config.base import Section
from streamrl.config.security import ServerTLSSettings


class VllmSettings(Section):
    """How the ``vllm`` backend launches (or attaches to) ``vllm serve``."""

    attach_url: str | None = None
    """Base URL of an already running ``vllm serve`` (``http://gpu-host:8001``); None = launch one."""
    executable: str = "vllm"
    """The ``vllm`` command used to launch the server."""
    port: int = Field(8001, ge=1, le=65535)
    """Port of the launched ``vllm serve`` (the StreamRL front server listens on ``inference.port``)."""
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM may take (``--gpu-memory-utilization``)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs per model replica (``--tensor-parallel-size``)."""
    enable_lora: bool = False
    """Start vLLM with ``--enable-lora`` so LoRA checkpoints are loaded at run time."""
    max_lora_rank: int = Field(64, ge=1)
    """Largest LoRA rank accepted (``--max-lora-rank``)."""
    enforce_eager: bool = False
    """Disable CUDA graphs (``--enforce-eager``): faster start, slower decode."""
    extra_args: list[str] = Field(default_factory=list)
    """More ``vllm serve`` arguments, appended verbatim."""
    startup_timeout_s: float = Field(600.0, gt=0)
    """How long to wait for a launched ``vllm serve`` to answer ``/health``."""
    request_timeout_s: float = Field(600.0, gt=0)
    """Timeout of one proxied request to vLLM."""


class InferenceSettings(Section):
    """The inference service: CPU server (transformers) or vLLM, weight reload on ``checkpoints``."""

    backend: Literal["cpu", "vllm"] = "cpu"
    """``cpu``: the built-in transformers/PyTorch server; ``vllm``: ``vllm serve`` behind the same API."""
    model: str | None = None
    """Hugging Face model directory served at start (e.g. one made by ``streamrl model build``)."""
    served_model_name: str | None = None
    """Name reported by ``/v1/models`` and accepted in ``model``; None = ``rl.policy_name``."""
    host: str = "127.0.0.1"
    """Interface the HTTP server binds."""
    port: int = Field(8000, ge=0, le=65535)
    """HTTP port of the OpenAI-compatible API (0 = any free port)."""
    initial_version: int = Field(0, ge=0)
    """Policy version reported for the model loaded at start (before any checkpoint)."""
    max_model_len: int | None = Field(None, ge=2)
    """Context length (prompt + completion tokens); None = the model's ``max_position_embeddings``."""
    max_batch_size: int = Field(32, ge=1)
    """Most sequences (choices) generated together in one batch."""
    max_batch_wait_ms: float = Field(5.0, ge=0.0)
    """How long the batcher waits for more requests after the first one arrives."""
    max_queue: int = Field(4096, ge=1)
    """Most sequences waiting; beyond it requests get HTTP 503."""
    logprobs_mode: Literal["scaled", "raw"] = "scaled"
    """Which log-probabilities are returned for sampled tokens.

    ``scaled`` (default): ``log_softmax(logits / temperature)``, the distribution sampled from (before
    top-p/top-k truncation); this is what the trainer computes (verl divides the logits by the rollout
    temperature). ``raw``: ``log_softmax(logits)`` at temperature 1, vLLM's default ``raw_logprobs``.
    Greedy requests (temperature 0) always report ``raw``.
    """
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype of the CPU backend (float32 keeps logprobs close to the trainer's)."""
    torch_threads: int | None = Field(1, ge=1)
    """``torch.set_num_threads`` of the CPU backend; None = torch's default (one per core).

    1 by default: small models gain little from intra-op threads, and on a busy machine OpenMP's
    spinning threads slow decoding down by 10x or more (measured: 2 threads at load 10 on 2 cores).
    """
    reload: bool = True
    """Consume ``checkpoints`` and switch to new policy versions."""
    reload_poll_s: float = Field(0.5, gt=0)
    """Poll timeout of the ``checkpoints`` consumer."""
    catch_up_timeout_s: float = Field(120.0, gt=0)
    """With ``reload``: how long the server may take at start to read ``checkpoints`` to its end and
    load the newest verified checkpoint, in seconds, before it serves anything (a restarted server
    must not serve an old policy). Past it, the server exits with the reason (a supervisor restarts
    it)."""
    access_log: bool = False
    """Log one line per HTTP request (uvicorn's access log). Off: at rollout rates it writes megabytes
    per minute and buries the lines that matter."""
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    """Options of the ``vllm`` backend."""
    tls: ServerTLSSettings = Field(default_factory=ServerTLSSettings)
    """HTTPS certificate of the API (CPU server or the vLLM front); clients verify it against
    ``security.ca_file``."""
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest request body, in bytes; a larger one is HTTP 413 before it is parsed."""

    @model_validator(mode="after")
    def _attach_needs_vllm_backend(self) -> InferenceSettings:
        if self.backend == "cpu" and self.vllm.attach_url is not None:
            raise ValueError(
                "inference.vllm.attach_url is set but inference.backend is 'cpu'; set backend: vllm"
            )
        return self
