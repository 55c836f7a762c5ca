"""Run the inference service in the foreground (what ``streamrl inference`` calls)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from streamrl.errors import BrokerError
from streamrl.inference.errors import InferenceError

if TYPE_CHECKING:
    from streamrl.config import Settings

log = logging.getLogger(__name__)


def cpu_service(settings: Settings):  # -> InferenceService
    """Build the CPU :class:`~streamrl.inference.server.InferenceService` from ``settings.inference``.

    Raises:
        InferenceError: ``inference.model`` is not set, or is not a local Hugging Face model
            directory (the CPU backend never downloads from a hub).
    """
    from pathlib import Path

    from streamrl.inference.server import InferenceService, ServerOptions

    inf = settings.inference
    if not inf.model:
        raise InferenceError(
            "inference.model is not set: pass --model DIR (e.g. one made by `streamrl model build`)"
        )
    model_dir = Path(inf.model).expanduser()
    if not model_dir.is_dir():
        raise InferenceError(
            f"inference.model={inf.model}: no such directory (the cpu backend serves a local Hugging Face "
            "model directory, e.g. one made by `streamrl model build --out DIR`)"
        )
    if not (model_dir / "config.json").is_file():
        raise InferenceError(
            f"inference.model={inf.model}: no config.json (not a Hugging Face model directory)"
        )
    opts = ServerOptions(
        served_model_name=inf.served_model_name or settings.rl.policy_name,
        initial_version=inf.initial_version,
        max_model_len=inf.max_model_len,
        max_batch_size=inf.max_batch_size,
        max_batch_wait_ms=inf.max_batch_wait_ms,
        max_queue=inf.max_queue,
        logprobs_mode=inf.logprobs_mode,
        dtype=inf.dtype,
        torch_threads=inf.torch_threads,
    )
    return InferenceService(inf.model, opts)


def run_inference(settings: Settings) -> None:
    """Serve until interrupted: the chosen backend, plus the ``checkpoints`` watcher if ``streamrl.inference.reload``."""
    import uvicorn

    from streamrl.inference.guard import guard_app
    from streamrl.inference.reload import CheckpointWatcher, CpuReloadTarget
    from streamrl.inference.server import bind_socket
    from streamrl.security import credentials, http_scheme, is_loopback

    creds = credentials(settings.security)

    inf = settings.inference
    if inf.backend == "vllm":
        from streamrl.inference.vllm_backend import VllmService

        service = VllmService(settings)
        target = service
    else:
        service = cpu_service(settings)
        target = CpuReloadTarget(service)
    service.start()
    watcher = None
    try:
        if inf.reload:
            # the newest checkpoint first: nothing is served (the port is not even bound) before it
            watcher = CheckpointWatcher(settings, target, service.metrics)
            try:
                watcher.catch_up(inf.catch_up_timeout_s)
            except BrokerError as exc:
                raise InferenceError(
                    f"cannot load the newest checkpoint before serving: {exc} "
                    "(not serving a policy that may be stale; --no-reload serves --model as is)"
                ) from exc
            if isinstance(target, CpuReloadTarget):
                target.activate()
            watcher.start()
        sock = bind_socket(inf.host, inf.port)
    except BaseException:
        if watcher is not None:
            watcher.stop()
        service.stop()
        raise
    log.info(
        "inference (%s) serving %s at policy version %d on %s://%s:%d",
        inf.backend,
        inf.model,
        target.loaded_version,
        http_scheme(inf.tls),
        inf.host,
        sock.getsockname()[1],
    )
    if creds.admin_token is None and not is_loopback(inf.host):
        log.warning(
            "inference: the API on %s takes no token (set security.admin_token or security.admin_token_file): "
            "anyone who reaches this port can generate",
            inf.host,
        )

    def rejected(path: str, status: int) -> None:
        service.metrics.requests.labels(path, str(status)).inc()

    app = guard_app(service.app(), creds, inf.max_body_bytes, rejected)
    tls = {}
    if inf.tls.enabled:
        tls = {"ssl_certfile": str(inf.tls.cert_file), "ssl_keyfile": str(inf.tls.key_file)}
    try:
        config = uvicorn.Config(app, log_level="info", access_log=inf.access_log, **tls)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.stop()
        service.stop()
        sock.close()
