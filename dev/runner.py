"""``streamrl dev``: the whole pipeline on one machine, supervised, with one live progress display.

Order of a run:

1. load the config (file + ``base``, env, flags and ``overrides``), create ``<run_root>/<run_id>/``;
2. start the local broker unless ``STREAMRL_BOOTSTRAP_SERVERS`` is set;
3. write the effective ``config.yaml`` (see :mod:`streamrl.dev.rundir`), create the topics;
4. fetch (``dev.model.pretrained``) or build the model if its directory is empty;
5. start ``inference``, ``trainer``, ``streams`` and ``worker-<i>`` at once, while the datasets are
   published; ``sampler`` once the publishes are done and inference answers; each child in its own
   process group with its log in ``logs/<name>.log`` (``summary.json`` ``startup_s``: when each
   start-up milestone was reached);
6. watch: a child that dies is restarted under ``dev.restart`` (reported, with the tail of its
   log; only a child that keeps dying ends the run, exit 1); ``max_steps`` reached (and the last
   version validated), the sampler done and the pipeline quiet, ``timeout_s``, or Ctrl-C/SIGTERM
   stop every child;
7. write ``summary.json`` and ``reward.png``, print the summary, stop the broker it started.

Ctrl-C (or SIGTERM) at any moment stops everything the run started: during start-up (the broker's
start, the topics, the model) it interrupts at once and the broker that was being started is
stopped; once children run it is a flag the loop acts on; while stopping, a second Ctrl-C is held
until everything is down (nothing is orphaned by an impatient user).

A ``dev`` that is killed (SIGKILL, an abort in a C library) runs none of this. On Linux the kernel
then sends SIGTERM to each child and the model build (:mod:`streamrl.parent_death`; every child is
started and restarted from the thread that runs :func:`run_dev`, which the signal follows); and the
reaper ``dev`` starts first (:mod:`streamrl.dev.reaper`) does the rest of the stop: SIGTERM to every
child's process group, SIGKILL after ``dev.stop_timeout_s``, then the broker the run started (not
one it reused, nor one kept with ``dev.keep_broker``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from streamrl.config import Settings, flag_overrides, load_settings
from streamrl.dev.cpu import CpuMeter
from streamrl.dev.display import render, status_line
from streamrl.dev.local_broker import choose_broker, owner_name, stop_broker
from streamrl.dev.monitor import Monitor
from streamrl.dev.preflight import preflight
from streamrl.dev.reaper import Reaper
from streamrl.dev.report import format_summary, plot_rewards, write_summary
from streamrl.dev.rundir import (
    TopicsInUseError,
    deep_merge,
    free_port,
    metrics_ports,
    new_run_id,
    raw_config,
    refuse_used_topics,
    run_overrides,
    write_config,
    write_prometheus_targets,
)
from streamrl.dev.stats import RunStats
from streamrl.dev.supervisor import ChildFailed, ChildSpec, Restart, RestartPolicy, Supervisor
from streamrl.errors import StreamRLError
from streamrl.logs import quiet_http_clients
from streamrl.parent_death import die_with_parent
from streamrl.schemas import utc_now
from streamrl.schemas.inference_http import HEALTH_PATH, POLICY_VERSION
from streamrl.security import client_ssl_context, credentials, http_scheme, redact_logs

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CHILD_FAILED = 1
EXIT_TIMEOUT = 3
EXIT_LEFTOVERS = 4
EXIT_INTERRUPTED = 130

#: Stop order: producers of work first, the inference service last.
STOP_ORDER_PREFIXES = ("sampler", "worker", "streams", "trainer", "inference")


@dataclass
class DevResult:
    """What a run ended with.

    Attributes:
        exit_code: 0 completed, 1 a child failed, 3 ``timeout_s``, 4 processes left behind, 130 interrupted.
        outcome: one line saying why the run ended.
        run_dir: the run directory.
        summary: the content of ``summary.json``.
    """

    exit_code: int
    outcome: str
    run_dir: Path
    summary: dict[str, Any]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamrl.cli", *args]


def child_specs(
    settings: Settings, config_path: Path, metrics: dict[str, int] | None = None, run_id: str | None = None
) -> list[ChildSpec]:
    """The long-running children of a run, in start order (inference first, sampler last).

    The trainer and the sampler may exit 0 (``max_steps`` reached, all epochs done); the others
    must run until stopped. ``metrics`` (:func:`~streamrl.dev.rundir.metrics_ports`) gives each
    worker its own metrics port. Each worker gets a stable ``--worker-id`` (``<run_id>-worker-<i>``,
    or ``<worker.worker_id>-<i>``): its static group membership, so a restarted worker takes its
    partitions back at once.
    """
    cfg = ("--config", str(config_path))
    stage_env = settings.dev.stage_env
    specs = []
    if settings.dev.start_inference:
        specs.append(ChildSpec("inference", _cli("inference", *cfg), env=stage_env.get("inference", {})))
    specs.append(ChildSpec("trainer", _cli("trainer", *cfg), may_exit=True, env=stage_env.get("trainer", {})))
    specs.append(ChildSpec("streams", _cli("streams", *cfg), env=stage_env.get("streams", {})))
    stem = settings.worker.worker_id or f"{run_id or settings.dev.run_id or 'dev'}-worker"
    for i in range(settings.dev.workers):
        name = f"worker-{i}"
        env = dict(stage_env.get("worker", {}))
        if metrics and name in metrics:
            env["STREAMRL_WORKER__METRICS_PORT"] = str(metrics[name])
        specs.append(ChildSpec(name, _cli("worker", "--worker-id", f"{stem}-{i}", *cfg), env=env))
    specs.append(ChildSpec("sampler", _cli("sampler", *cfg), may_exit=True, env=stage_env.get("sampler", {})))
    return specs


def publish_specs(settings: Settings, config_path: Path) -> list[ChildSpec]:
    """One ``streamrl publish`` per ``dev.datasets`` entry."""
    specs = []
    for i, ds in enumerate(settings.dev.datasets):
        argv = _cli("publish", str(ds.path), "--split", ds.split, "--config", str(config_path))
        if ds.limit is not None:
            argv += ["--limit", str(ds.limit)]
        if ds.id_field is not None:
            argv += ["--id-field", ds.id_field]
        specs.append(
            ChildSpec(
                f"publish-{i}-{ds.split}",
                argv,
                may_exit=True,
                restart=False,
                env=settings.dev.stage_env.get("publish", {}),
            )
        )
    return specs


_MAKE_MODEL = """
import json, sys
from pathlib import Path

spec = json.loads(sys.argv[1])
if spec["pretrained"] is not None:
    from streamrl.inference.pretrained import fetch_pretrained

    fetch_pretrained(spec["pretrained"], Path(spec["path"]), progress=lambda msg: print(msg, flush=True))
else:
    from streamrl.inference.model_builder import build_model

    report = build_model(
        spec["path"], preset=spec["preset"], tokenizer=spec["tokenizer"], arch=spec["arch"],
        text=spec["text"] or None, max_chars=spec["max_chars"], seed=spec["seed"],
    )
    print(f"model: {report.num_parameters:,} parameters, vocabulary {report.vocab_size}", flush=True)
"""


def ensure_model(settings: Settings, console: Console) -> None:
    """Fetch (``dev.model.pretrained``) or build the policy model into ``dev.model.path`` when it has no
    ``config.json`` (and ``dev.model.build`` is on).

    The work runs in a child process (its output shown as it comes): it imports torch and
    transformers, which would otherwise stay in ``dev``'s memory (~700 MB) for the whole run.

    Raises:
        StreamRLError: the model is missing and ``dev.model.build`` is false, or the fetch or build
            failed (with the last lines of its output).
    """
    spec = settings.dev.model
    if (spec.path / "config.json").is_file():
        return
    if not spec.build:
        raise StreamRLError(f"dev.model.path {spec.path} has no config.json and dev.model.build is false")
    if spec.pretrained is not None:
        console.print(f"fetching {spec.pretrained} into {spec.path} ...")
    else:
        console.print(f"building the {spec.preset} {spec.tokenizer} model into {spec.path} ...")
    args = {
        "pretrained": spec.pretrained,
        "path": str(spec.path),
        "preset": spec.preset,
        "tokenizer": spec.tokenizer,
        "arch": spec.arch,
        "text": [str(t) for t in spec.text],
        "max_chars": spec.max_chars,
        "seed": spec.seed,
    }
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAKE_MODEL, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=die_with_parent(),  # a killed dev leaves no build running
    )
    try:
        assert proc.stdout is not None
        failing = False
        for line in proc.stdout:
            lines.append(line.rstrip())
            failing = failing or line.startswith("Traceback")
            if not failing:  # a traceback goes into the error, once
                console.print(f"  {line.rstrip()}", highlight=False, markup=False, soft_wrap=True)
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): the child got the signal too; make sure
            proc.kill()
            proc.wait()
    if code != 0:
        tail = "\n".join(f"  {ln}" for ln in lines[-15:])
        what = f"fetching {spec.pretrained}" if spec.pretrained is not None else "building the model"
        raise StreamRLError(f"{what} into {spec.path} failed (exit code {code}); its last lines:\n{tail}")


def wait_for_http(
    url: str,
    sup: Supervisor,
    name: str,
    timeout_s: float,
    verify: Any = True,
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait until ``GET url`` answers 200, checking that child ``name`` is still alive (a death is
    restarted under the supervisor's policy).

    Returns:
        True once it answers; False when ``stop()`` became true first (Ctrl-C).

    Args:
        verify: httpx's ``verify`` for an ``https`` URL (an ``ssl.SSLContext`` trusting ``security.ca_file``).

    Raises:
        ChildFailed: the child kept dying.  TimeoutError: no answer within ``timeout_s``.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop():
            return False
        sup.check()
        if name in sup.finished:
            raise StreamRLError(f"{name} exited before answering {url}")
        try:
            if httpx.get(url, timeout=2.0, verify=verify).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not answer {url} within {timeout_s:.0f} s")


class _Signals:
    """SIGINT/SIGTERM: remembered as a flag the run acts on, so it stops its children in order;
    inside :meth:`interruptible` they also raise ``KeyboardInterrupt`` at once (start-up work
    that starts no child: the broker, topics, the model), and a stop in progress is never
    interrupted."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._raise = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum
        if self._raise:
            self._raise = False
            raise KeyboardInterrupt

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block, a signal raises ``KeyboardInterrupt`` (one already received: at once)."""
        if self.received is not None:
            raise KeyboardInterrupt
        self._raise = True
        try:
            yield
        finally:
            self._raise = False

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_dev(
    config: Path | None = None,
    *,
    base: dict[str, Any] | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
    on_tick: Callable[[RunStats], None] | None = None,
) -> DevResult:
    """Run the pipeline until it completes, fails, times out or is interrupted (see module docstring).

    Args:
        config: YAML config; None = the default lookup of :func:`streamrl.config.load_settings`.
        base: config sections merged over the file, below the environment (``streamrl demo`` passes
            its embedded config here).
        flags: command-line flags, ``{"--max-steps": ("dev.max_steps", 5)}`` (see
            :func:`streamrl.config.load_settings`): above the environment, named in errors.
        overrides: config sections set explicitly, above the environment (as flags).
        console: where the display and the summary go (default: stdout).
        on_tick: called with the stats (under the monitor lock) after every display refresh (tests).

    Returns:
        A :class:`DevResult`; the summary and plot are written whatever the outcome.

    Raises:
        ConfigError: invalid config, a missing dataset, ``worker.agent`` unset.  AgentLoadError:
            ``worker.agent`` cannot be imported (:mod:`streamrl.dev.preflight`).  BrokerError: the
            local broker cannot start.
    """
    console = console or Console()
    overrides = deep_merge(overrides or {}, flag_overrides(flags or {})[0])
    quiet_http_clients()  # one line per /health poll is noise
    settings = load_settings(config, base=base, flags=flags, **(overrides or {}))
    redact_logs(settings)
    user = deep_merge(deep_merge(raw_config(config), base or {}), overrides)
    dev = settings.dev
    preflight(settings)  # datasets, the agent: before anything starts
    run_id = dev.run_id or new_run_id()
    run_dir = (dev.run_root / run_id).resolve()
    if (run_dir / "config.yaml").exists():
        raise StreamRLError(f"run directory {run_dir} is already used; choose another dev.run_id")
    run_dir_created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    refused: TopicsInUseError | None = None
    started_at = time.monotonic()
    stats = RunStats(
        val_samples_per_task=settings.sampler.val_samples_per_task,
        started_at=started_at,
        started_unix=time.time(),
        val_target=dev.val_target,
    )

    broker = None
    private_broker = False
    sup: Supervisor | None = None
    monitor: Monitor | None = None
    meter = CpuMeter()
    own_pids: dict[str, int | None] = {"dev": os.getpid(), "broker": None}
    outcome, code = "completed", EXIT_OK
    # stops the children and the broker if this process is killed (nothing of the stop below runs)
    reaper = Reaper(run_dir / "logs" / "reaper.log", stop_timeout_s=dev.stop_timeout_s)
    with _Signals() as signals:
        try:
            with signals.interruptible():  # nothing started yet but, perhaps, the broker
                if not os.environ.get("STREAMRL_BOOTSTRAP_SERVERS"):
                    # another dev run's broker (another clone's demo) is not ours to share: it stops
                    # it when it ends; then this run starts its own on free ports
                    local, note = choose_broker(settings, run_id, data_dir=dev.broker_data_dir)
                    private_broker = note is not None
                    if note:
                        console.print(note, highlight=False)
                    if local.pid() is not None:  # a kept broker (dev.keep_broker) is reused, not restarted
                        console.print(f"using the local Kafka broker already running on {local.bootstrap}")
                    else:
                        console.print(f"starting the local Kafka broker on {local.bootstrap} ...")
                    # stops what it spawned if interrupted; the reaper stops it if this is killed
                    spawned = (
                        None if dev.keep_broker else reaper.broker_spawned(local, private=private_broker)
                    )
                    bootstrap, broker_started = local.start(owner=owner_name(run_id), on_spawn=spawned)
                    stats.mark("broker_ready")
                    broker = local if broker_started else None  # not ours: leave it running
                    over_bootstrap: str | None = bootstrap
                else:
                    over_bootstrap = None
                port = free_port(settings.inference.host) if dev.free_ports and dev.start_inference else None
                metrics = metrics_ports(settings) if dev.metrics else None
                over = run_overrides(
                    settings,
                    run_dir,
                    bootstrap=over_bootstrap,
                    run_id=run_id,
                    inference_port=port,
                    metrics=metrics,
                )
                config_path = write_config(run_dir / "config.yaml", deep_merge(user, over))
                # the run's own prefix wins over STREAMRL_TOPIC_PREFIX (which it starts with), here
                # and in the children (_child_env), or every run would share the environment's topics
                settings = load_settings(config_path, **{k: over[k] for k in ("topics",) if k in over})
                if metrics is not None:
                    serving = settings.inference.port if dev.start_inference else None
                    targets = write_prometheus_targets(run_dir / "prometheus-targets.json", metrics, serving)
                    console.print(f"metrics: Prometheus file_sd targets in {targets}")
                console.print(f"run {run_id}: {run_dir} (topics {settings.topics.prefix}*)")
                if dev.workers == 0:
                    console.print("dev.workers is 0: waiting for rollout workers started elsewhere")
                sup = Supervisor(
                    run_dir / "logs",
                    base_env=_child_env(settings),
                    stop_timeout_s=dev.stop_timeout_s,
                    tail_lines=dev.log_tail_lines,
                    restart=RestartPolicy(**dev.restart.model_dump()),
                    on_restart=lambda event: _report_restart(console, event),
                    reaper=reaper,
                )
                own_pids["broker"] = broker.pid() if broker is not None else None
                monitor = Monitor(settings, stats)
                _prepare(settings, console)
                stats.mark("prepared")
            outcome, code = _run(
                settings,
                config_path,
                sup,
                monitor,
                stats,
                console,
                signals,
                run_id,
                on_tick,
                started_at,
                metrics,
                meter=meter,
                own_pids=own_pids,
            )
        except KeyboardInterrupt:
            name = signal.Signals(signals.received or signal.SIGINT).name
            outcome, code = f"interrupted ({name}) during start-up", EXIT_INTERRUPTED
        except ChildFailed as exc:
            again = f" (restarted {exc.restarts} time(s), it kept dying)" if exc.restarts else ""
            outcome, code = f"failed: {exc.name} exited with code {exc.returncode}{again}", EXIT_CHILD_FAILED
            console.print(f"[red]{exc}[/]", markup=True, highlight=False)
        except TopicsInUseError as exc:
            refused = exc  # nothing ran: no run to summarize; the one-line error says what to do
            outcome, code = f"refused: {exc}", EXIT_CHILD_FAILED
        except (StreamRLError, TimeoutError) as exc:
            if sup is None:
                raise  # e.g. the broker could not start: the one-line error says why (nothing to summarize)
            outcome, code = f"failed: {exc}", EXIT_CHILD_FAILED
            console.print(f"[red]error:[/] {exc}", highlight=False)
        finally:
            # signals only set the flag from here on: a second Ctrl-C cannot orphan anything
            if sup is not None:
                _sample_cpu(meter, sup, own_pids)
                stats.stopping_since = utc_now()  # attempts the stop cuts short are not failures
                _stop_children(sup, console)
            if monitor is not None:
                _drain(monitor, stats)
                monitor.stop()
            left = sup.leftovers() if sup is not None else []
            if left:
                outcome, code = f"{outcome}; processes left running: {left}", EXIT_LEFTOVERS
            if broker is not None and not dev.keep_broker:
                stop_broker(broker, private=private_broker)
            reaper.close()  # all stopped (an exception above leaves it to stop what is left at exit)
    if refused is not None:
        if run_dir_created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise refused
    cpu = meter.report(stats.trajectories, stats.version, time.monotonic())
    summary = _finish(stats, settings, run_dir, time.monotonic() - started_at, outcome, console, cpu, sup)
    return DevResult(code, outcome, run_dir, summary)


def _report_restart(console: Console, event: Restart) -> None:
    """A dead child that will be restarted: one line, and the last lines of its log."""
    last = "\n".join(f"    {line}" for line in event.tail.splitlines()[-8:])
    console.print(
        f"[yellow]{event.name} exited with code {event.returncode}; restarting it in {event.delay_s:.0f} s "
        f"(restart {event.restarts})[/]; its last lines:\n{last}",
        markup=True,
        highlight=False,
    )


def _prepare(settings: Settings, console: Console) -> None:
    """Start-up work that starts no child process (interruptible by Ctrl-C): topics (fresh ones:
    :func:`refuse_used_topics`), the model."""
    from streamrl.topics import ensure_topics

    refuse_used_topics(settings)
    ensure_topics(settings)
    ensure_model(settings, console)


def _child_env(settings: Settings) -> dict[str, str]:
    """The children's environment; without a configured admin token, a fresh one for this run
    (``STREAMRL_SECURITY__ADMIN_TOKEN``, in the environment only: never written to the run directory),
    so the inference API of a dev run takes only the gateway's calls; with ``dev.fresh_topics``, no
    ``STREAMRL_TOPIC_PREFIX`` (the run's prefix, ``<that prefix><run_id>.``, is in ``config.yaml``)."""
    env = dict(os.environ)
    if settings.dev.fresh_topics:  # config.yaml holds the run's prefix; the environment's would win
        env.pop("STREAMRL_TOPIC_PREFIX", None)
    if credentials(settings.security).admin_token is None:
        import secrets

        env["STREAMRL_SECURITY__ADMIN_TOKEN"] = secrets.token_urlsafe(32)
    paths = [str(p.resolve()) for p in settings.dev.pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(settings.dev.env)
    return env


def _run(
    settings: Settings,
    config_path: Path,
    sup: Supervisor,
    monitor: Monitor,
    stats: RunStats,
    console: Console,
    signals: _Signals,
    run_id: str,
    on_tick: Callable[[RunStats], None] | None,
    run_started: float,
    metrics: dict[str, int] | None = None,
    *,
    meter: CpuMeter | None = None,
    own_pids: dict[str, int | None] | None = None,
) -> tuple[str, int]:
    dev = settings.dev

    def interrupted() -> tuple[str, int]:
        return f"interrupted ({signal.Signals(signals.received or signal.SIGINT).name})", EXIT_INTERRUPTED

    # Start-up in parallel: the datasets are published while the long-running stages import and load
    # (torch, the model, Faust, consumer group joins); only the sampler waits, for the published
    # tasks (it reads `tasks` once to start its epoch) and for an inference server that answers (no
    # rollout is started against a server still loading).
    publishes = publish_specs(settings, config_path)
    for spec in publishes:
        console.print(f"publishing {spec.argv[4]} ({spec.name}) ...")
        sup.start(spec)
    monitor.start()
    specs = child_specs(settings, config_path, metrics, run_id)
    for spec in specs:
        if spec.name != "sampler":
            sup.start(spec)
    if not _wait_published(sup, [spec.name for spec in publishes], signals):
        return interrupted()
    stats.mark("published")
    for spec in publishes:
        _report_published(console, sup.children[spec.name].log_path)
    health_url = None
    verify = client_ssl_context(credentials(settings.security).ca_file)
    if dev.start_inference:
        host = settings.inference.host if settings.inference.host not in ("0.0.0.0", "::") else "127.0.0.1"
        health_url = f"{http_scheme(settings.inference.tls)}://{host}:{settings.inference.port}{HEALTH_PATH}"
        if not wait_for_http(health_url, sup, "inference", 300, verify, stop=lambda: bool(signals.received)):
            return interrupted()
        stats.mark("inference_ready")
    for spec in specs:
        if spec.name == "sampler":
            if signals.received:
                return interrupted()
            sup.start(spec)
            stats.mark("sampler_started")
    max_steps = dev.max_steps or settings.trainer.max_steps
    started = time.monotonic()
    mode = dev.display if dev.display != "auto" else ("live" if console.is_terminal else "plain")
    live = None
    if mode == "live":
        from rich.live import Live

        live = Live(console=console, refresh_per_second=4, transient=False)
        live.start()
    last_plain = last_lag = 0.0
    reached_at: float | None = None
    try:
        while True:
            time.sleep(dev.refresh_s)
            now = time.monotonic()
            sup.check()
            if meter is not None:
                _sample_cpu(meter, sup, own_pids or {})
            if monitor.error is not None:
                raise StreamRLError(f"the dev monitor stopped: {monitor.error!r}")
            if now - last_lag >= 2.0:
                monitor.measure_lag()
                if health_url is not None:
                    version_reported = _health_version(health_url, verify)
                    if version_reported is not None:
                        with monitor.lock:
                            if stats.inference_versions[-1:] != [version_reported]:
                                stats.inference_versions.append(version_reported)
                last_lag = now
            with monitor.lock:
                states = {n: _state(sup, n) for n in sup.children}
                if live is not None:
                    live.update(
                        render(
                            stats,
                            run_id=run_id,
                            elapsed_s=now - run_started,  # the summary's clock: from the launch
                            children=states,
                            max_steps=max_steps,
                            width=console.width,
                        )
                    )
                elif mode == "plain" and now - last_plain >= dev.plain_every_s:
                    console.print(status_line(stats, now - run_started), highlight=False)
                    last_plain = now
                if on_tick is not None:
                    on_tick(stats)
                version = stats.version
                if meter is not None and version >= 1:
                    meter.mark_start(stats.trajectories, version, now)
                val_done = stats.val_complete(version)
                target = stats.target_reached()
                # The last checkpoint counts as loaded once the inference server reports its version.
                loaded = health_url is None or max(stats.inference_versions, default=-1) >= version
                idle_s = now - max(stats.last_progress, started)
            if signals.received:
                return interrupted()
            if dev.stop_at_val_target and target is not None:
                return (
                    f"completed: val reward {target['val']} >= dev.val_target {target['target']} "
                    f"at policy version {target['version']}",
                    EXIT_OK,
                )
            if dev.timeout_s is not None and now - run_started > dev.timeout_s:
                return f"timed out after {dev.timeout_s:.0f} s at policy version {version}", EXIT_TIMEOUT
            if max_steps is not None and version >= max_steps:
                reached_at = reached_at or now
                if (not _expects_val(settings, stats, version) or val_done) and loaded:
                    return f"completed: policy version {version} reached (max_steps {max_steps})", EXIT_OK
                if now - reached_at > dev.final_val_timeout_s:
                    pending = (
                        [] if val_done or not _expects_val(settings, stats, version) else ["its validation"]
                    )
                    pending += [] if loaded else ["its load by the inference server"]
                    return (
                        f"completed: policy version {version} reached; {' and '.join(pending)} did not finish "
                        f"within {dev.final_val_timeout_s:.0f} s",
                        EXIT_OK,
                    )
            if "sampler" in sup.finished and idle_s > dev.drain_s:
                return (
                    f"completed: the sampler finished and nothing new arrived for {dev.drain_s:.0f} s",
                    EXIT_OK,
                )
    finally:
        if live is not None:
            live.stop()


def _report_published(console: Console, log_path: Path) -> None:
    """Print the publish child's report line (``published N task(s) ...; skipped D duplicate(s), I
    invalid; ...``) and, when it skipped or refused rows, where they are listed."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return
    report = next((ln for ln in reversed(lines) if ln.startswith("published ")), None)
    if report is None:
        return
    clean = "skipped 0 duplicate(s), 0 invalid;" in report
    console.print(
        f"  {report}" + ("" if clean else f" (the rows: {log_path})"), highlight=False, soft_wrap=True
    )


def _wait_published(sup: Supervisor, names: list[str], signals: _Signals, timeout_s: float = 600) -> bool:
    """Wait until every publish child in ``names`` exited 0, watching the other children meanwhile
    (a death is restarted under the supervisor's policy).

    Returns:
        True once all are done; False when a signal arrived first (Ctrl-C).

    Raises:
        ChildFailed: a publish exited non-zero (or a stage kept dying).  TimeoutError: a publish
            still ran after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if signals.received:
            return False
        sup.check()  # a publish that exited non-zero raises here (it is never restarted)
        running = [n for n in names if n not in sup.finished]
        if not running:
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{running[0]} still running after {timeout_s:.0f} s (log: {sup.children[running[0]].log_path})"
            )
        time.sleep(0.1)


def _sample_cpu(meter: CpuMeter, sup: Supervisor, own_pids: dict[str, int | None]) -> None:
    """One CPU reading of every child (and of this process and the broker it started)."""
    meter.sample({**own_pids, **{name: child.pid for name, child in sup.children.items()}})


def _health_version(url: str, verify: Any = True) -> int | None:
    """``policy_version`` reported by the inference server's ``/health`` (None if it does not answer)."""
    import httpx

    try:
        body = httpx.get(url, timeout=2.0, verify=verify).json()
    except (httpx.HTTPError, ValueError):
        return None
    version = body.get(POLICY_VERSION) if isinstance(body, dict) else None
    return int(version) if isinstance(version, int) else None


def _expects_val(settings: Settings, stats: RunStats, version: int) -> bool:
    every = settings.sampler.val_every
    if every <= 0 or not stats.val_tasks:
        return False
    return version % every == 0


def _state(sup: Supervisor, name: str) -> str:
    child = sup.children[name]
    restarts = sup.restart_count(name)
    again = f" ({restarts} restart{'s' if restarts > 1 else ''})" if restarts else ""
    if child.restart_at is not None:
        return f"restarting in {max(0.0, child.restart_at - time.monotonic()):.0f} s{again}"
    code = child.returncode()
    if code is None:
        return f"running{again}"
    return "finished" if name in sup.finished else exit_text(code)


def exit_text(code: int | None) -> str:
    """How a child ended, in words: ``exited 0``, ``stopped`` (SIGTERM: dev's own stop, a clean
    one), ``killed by SIGKILL``, ``exit 1``; None = ``not reaped``."""
    if code is None:
        return "not reaped"
    if code == 0:
        return "exited 0"
    if code == -signal.SIGTERM:
        return "stopped"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def _stop_children(sup: Supervisor, console: Console) -> None:
    if not sup.children:
        return
    running = sup.running()
    if running:
        console.print(f"stopping {', '.join(running)} ...")
    order = [n for p in STOP_ORDER_PREFIXES for n in sup.children if n.startswith(p)]
    codes = sup.stop_all(order)
    log.info("children stopped: %s", ", ".join(f"{n} {exit_text(c)}" for n, c in codes.items()))


def _drain(monitor: Monitor, stats: RunStats, timeout_s: float = 3.0) -> None:
    """Let the monitor read what the stopping children wrote last (final checkpoint, trajectories)."""
    if monitor.error is not None or not monitor.started:
        return
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        with monitor.lock:
            seen = stats.trajectories + stats.checkpoints + stats.requests
        if seen == last:
            break
        last = seen
        time.sleep(0.7)


def _finish(
    stats: RunStats,
    settings: Settings,
    run_dir: Path,
    wall_s: float,
    outcome: str,
    console: Console,
    cpu: dict[str, Any] | None = None,
    sup: Supervisor | None = None,
) -> dict[str, Any]:
    decode = _decoder(settings)
    summary = stats.summary(wall_s, decode=decode)
    summary["outcome"] = outcome
    summary["cpu"] = cpu
    summary["run_dir"] = str(run_dir)
    summary["restarts"] = (
        {n: sup.restart_count(n) for n in sup.children if sup.restart_count(n)} if sup is not None else {}
    )
    write_summary(run_dir / "summary.json", summary)
    try:
        plot_rewards(
            run_dir / "reward.png",
            {int(k): v for k, v in summary["train_reward"].items()},  # type: ignore[union-attr]
            {int(k): v for k, v in summary["val_reward"].items()},  # type: ignore[union-attr]
            title=f"streamrl dev {run_dir.name}: reward mean per policy version",
        )
    except Exception as exc:  # a plot must not hide the summary
        log.warning("cannot plot rewards: %s", exc)
    console.print(format_summary(summary, run_dir, outcome), highlight=False)
    return summary


def _decoder(settings: Settings) -> Callable[[tuple[int, ...]], str] | None:
    """Token ids → text with the policy's tokenizer (``tokenizer.json``), if it is there."""
    path = Path(settings.dev.model.path) / "tokenizer.json"
    if settings.inference.model is not None:
        path = Path(settings.inference.model) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
    except Exception:
        return None
    return lambda ids: tok.decode(list(ids), skip_special_tokens=False)
