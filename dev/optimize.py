"""``streamrl optimize``: a prompt-optimization run, with the pipeline it needs on this machine.

With ``optimize.start_pipeline`` (default), as ``streamrl dev`` does: the local broker unless
``STREAMRL_BOOTSTRAP_SERVERS`` is set, the run's own topic prefix (``<prefix><run_id>.``), the model
(fetched or built), ``dev.datasets`` published, then ``inference`` and ``dev.workers`` rollout
workers as supervised children (logs in ``<run_dir>/logs/``; a dead one is restarted under
``dev.restart``, its unfinished samples redelivered to the group); no sampler, streams or trainer. The
optimizer runs in this process with its live display and writes ``<run_dir>/optimize/``. Running
again with the same ``--run-id`` resumes: the run directory's ``config.yaml`` is reused (same topics,
same broker), and the optimizer reads its state back from ``optimizer_state``.

With ``--no-pipeline`` only the optimizer runs, against the config's cluster and topics, where
rollout workers and an inference service already run (a deployment).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from streamrl.config import Settings, flag_overrides, load_settings
from streamrl.dev.reaper import Reaper
from streamrl.dev.rundir import deep_merge, free_port, new_run_id, raw_config, run_overrides, write_config
from streamrl.dev.runner import (
    _child_env,
    _cli,
    _report_restart,
    ensure_model,
    publish_specs,
    wait_for_http,
)
from streamrl.dev.supervisor import ChildFailed, ChildSpec, RestartPolicy, Supervisor
from streamrl.errors import ConfigError, StreamRLError
from streamrl.schemas.inference_http import HEALTH_PATH

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def run_id_of(settings: Settings) -> str:
    """``optimize.run_id``, else ``dev.run_id``, else a new one."""
    return settings.optimize.run_id or settings.dev.run_id or new_run_id()


async def _serve(settings: Settings, run_id: str, out: Path, console: Console, sup: Supervisor | None) -> int:
    """Run the optimizer until it ends, a signal arrives, or a child of ``sup`` dies."""
    from streamrl.optimizer.service import optimize

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    failure: list[ChildFailed] = []

    async def watch() -> None:
        while sup is not None and not stop.is_set():
            try:
                sup.check()
            except ChildFailed as exc:
                failure.append(exc)
                stop.set()
                return
            await asyncio.sleep(1.0)

    watcher = asyncio.ensure_future(watch())
    try:
        result = await optimize(settings, run_id, out, console=console, stop=stop)
    finally:
        watcher.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
    s = result.summary
    if failure:
        console.print(f"[red]{failure[0]}[/]", markup=True, highlight=False)
        console.print(f"run {run_id} stopped; resume with --run-id {run_id}", highlight=False)
        return EXIT_FAILED
    console.print(
        f"{s.get('outcome')}\nscore_first {s.get('score_first')}  score_best {s.get('score_best')}  "
        f"rounds {s.get('rounds')}  rollouts {s.get('rollouts')}  wall {s.get('wall_s')} s\n"
        f"results: {out} (best_prompt.txt, history.json, summary.json, val_score.png)",
        highlight=False,
        soft_wrap=True,
    )
    if result.interrupted:
        console.print(f"resume with: streamrl optimize ... --run-id {run_id}", highlight=False)
        return EXIT_INTERRUPTED
    return EXIT_OK


def run_optimize(
    config: Path | None,
    *,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    console: Console | None = None,
) -> int:
    """``streamrl optimize`` (see the module docstring); returns the exit code (0 done, 1 failed,
    130 interrupted: the state is saved and the same run id resumes).

    Raises:
        ConfigError: invalid config.  OptimizerError: the seed prompt is missing or does not parse
        (before anything starts).  StreamRLError: the broker, the model or the optimizer failed.
    """
    console = console or Console()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = load_settings(config, flags=flags)
    from streamrl.optimizer.service import seed_text

    seed_text(settings)  # a missing or unparsable seed prompt fails before anything starts
    run_id = run_id_of(settings)
    if not settings.optimize.start_pipeline:
        out = settings.optimize.output_dir or settings.dev.run_root / run_id / "optimize"
        return asyncio.run(_serve(settings, run_id, Path(out), console, None))
    return _with_pipeline(config, flags or {}, settings, run_id, console)


def _with_pipeline(
    config: Path | None,
    flags: Mapping[str, tuple[str, Any]],
    settings: Settings,
    run_id: str,
    console: Console,
) -> int:
    dev = settings.dev
    run_dir = (dev.run_root / run_id).resolve()
    config_path = run_dir / "config.yaml"
    resume = config_path.exists()
    for i, ds in enumerate(dev.datasets):
        if not resume and not ds.path.exists():
            raise ConfigError(f"dev.datasets[{i}].path: {ds.path} does not exist (relative to {Path.cwd()})")
    broker = None
    bootstrap = None
    # stops the children and the broker if this process is killed (nothing of the stop below runs)
    reaper = Reaper(run_dir / "logs" / "reaper.log", stop_timeout_s=dev.stop_timeout_s)
    if not os.environ.get("STREAMRL_BOOTSTRAP_SERVERS"):
        from streamrl.broker import LocalKafka

        broker = LocalKafka(settings.kafka.local, data_dir=dev.broker_data_dir)
        running = broker.pid() is not None
        console.print(
            f"using the local Kafka broker already running on {broker.bootstrap}"
            if running
            else f"starting the local Kafka broker on {broker.bootstrap} ..."
        )
        reap = None if dev.keep_broker else reaper.broker_spawned(broker, private=False)
        bootstrap, started = broker.start(on_spawn=reap)  # a failed start stops what it spawned
        if not started:
            broker = None  # not ours: leave it running
    try:
        if resume:
            console.print(f"run {run_id}: resuming with {config_path}")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            port = free_port(settings.inference.host) if dev.free_ports and dev.start_inference else None
            over = run_overrides(settings, run_dir, bootstrap=bootstrap, run_id=run_id, inference_port=port)
            over = deep_merge(over, {"optimize": {"run_id": run_id, "output_dir": str(run_dir / "optimize")}})
            user = deep_merge(raw_config(config), flag_overrides(flags)[0])
            write_config(config_path, deep_merge(user, over))
        settings = load_settings(config_path, flags=flags)
        console.print(f"run {run_id}: {run_dir} (topics {settings.topics.prefix}*)", soft_wrap=True)
        sup = Supervisor(
            run_dir / "logs",
            base_env=_child_env(settings),
            stop_timeout_s=dev.stop_timeout_s,
            tail_lines=dev.log_tail_lines,
            restart=RestartPolicy(**dev.restart.model_dump()),
            on_restart=lambda event: _report_restart(console, event),
            reaper=reaper,
        )
        try:
            _start_children(settings, config_path, sup, console, publish=not resume)
            out = settings.optimize.output_dir or run_dir / "optimize"
            return asyncio.run(_serve(settings, run_id, Path(out), console, sup))
        except (ChildFailed, StreamRLError, TimeoutError) as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)
            return EXIT_FAILED
        finally:
            if sup.running():
                console.print(f"stopping {', '.join(sup.running())} ...")
            sup.stop_all([n for n in sup.children if n.startswith("worker")] + ["inference"])
    finally:
        if broker is not None and not dev.keep_broker:
            broker.stop()
        reaper.close()  # all stopped (an exception from the broker's stop leaves it to the reaper)


def _start_children(
    settings: Settings, config_path: Path, sup: Supervisor, console: Console, *, publish: bool
) -> None:
    from streamrl.topics import ensure_topics

    ensure_topics(settings)
    ensure_model(settings, console)
    if publish:
        for spec in publish_specs(settings, config_path):
            console.print(f"publishing {spec.argv[4]} ({spec.name}) ...")
            sup.start(spec)
            sup.wait(spec.name, timeout_s=600)
    cfg = ("--config", str(config_path))
    if settings.dev.start_inference:
        sup.start(ChildSpec("inference", _cli("inference", *cfg)))
        host = settings.inference.host if settings.inference.host not in ("0.0.0.0", "::") else "127.0.0.1"
        console.print("waiting for the inference server ...")
        wait_for_http(f"http://{host}:{settings.inference.port}{HEALTH_PATH}", sup, "inference", 600)
    for i in range(settings.dev.workers):
        sup.start(ChildSpec(f"worker-{i}", _cli("worker", *cfg)))
    if settings.dev.workers == 0:
        console.print("dev.workers is 0: waiting for rollout workers started elsewhere")
