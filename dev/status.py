"""``streamrl status``: how a pipeline is doing, on one screen, from Kafka alone.

Everything comes from the cluster the config points at, so it works the same against a ``make
demo`` on a laptop and a Kubernetes deployment: the consumer groups of the pipeline (state, members,
lag per topic: :meth:`Monitor.groups`, :meth:`Monitor.measure_lag`), and the records of ``tasks``,
``samples``, ``trajectories``, ``batches``, ``checkpoints``, ``dlq`` and ``validation`` read to their end offsets
by the same :class:`~streamrl.dev.monitor.Monitor` and :class:`~streamrl.dev.stats.RunStats` that
``streamrl dev`` uses (``requests``, the largest topic, is not read). Figures:

- state: ``running`` when the workers' or the streams' consumer group has a connected member (the
  sampler and the trainer assign their partitions, so their groups never show members; without
  workers and streams nothing moves anyway), ``idle`` when one does but no trajectory arrived within
  the rate window, ``stopped`` when neither does (the last trajectory, checkpoint and sample say when).
  A stopped stage leaves its group, static members too (workers unsubscribe first, streams sends the
  LeaveGroup itself), so a clean stop reads as stopped at once. A crashed static member stays in the
  group until its session times out, so streams counts only while it writes its timer ticks
  (``<app_id>-ticks``, every ``streams.tick_interval_s``): a member that wrote none for
  :func:`streams_silence_s` seconds is ``not responding`` (crashed, hung or still starting), and the verdict
  says so. A crashed worker counts until ``worker.session_timeout_ms`` (it writes nothing while idle);
  ``streamrl dev`` and Kubernetes restart it within seconds under the same id, which takes its member
  back;
- policy version and the last checkpoint (version, age, loss, reward, lr from its metrics);
- rollouts/s: trajectory records whose broker timestamp is within the last ``window_s`` seconds,
  counted from offsets (``offsets_for_times``), divided by ``window_s``;
- rollouts succeeded/failed/timeout, samples in flight (no trajectory yet), dead-lettered records;
- what streams made of the groups (``group_outcomes``: batched, or dropped with the reason);
- staleness of the last trained batch (trainer version − row policy version, mean and max; the
  trainer puts them in each checkpoint's metrics);
- the last val reward: the validation reward streams publishes (``ValidationResult`` on
  ``validation``: every val rollout counts, a failed or timed-out one as 0) of the newest policy
  version whose validation is complete (:meth:`RunStats.val_means`), with the one in progress.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaException

from streamrl.config import Settings
from streamrl.config.kafka import TOPIC_NAMES
from streamrl.dev.monitor import GroupState, Monitor
from streamrl.dev.stats import RunStats
from streamrl.errors import StreamRLError
from streamrl.streams.faust_config import streams_topics
from streamrl.topics import is_settling

#: Topics ``status`` reads: every topic but ``requests`` (every call's token ids: too large to read for a status).
STATUS_TOPICS = tuple(t for t in TOPIC_NAMES if t != "requests")
#: Checkpoint metrics shown with the last checkpoint.
CHECKPOINT_METRICS = ("actor/loss", "reward/mean", "actor/lr", "actor/entropy", "actor/grad_norm")


@dataclass
class PipelineStatus:
    """One reading of a pipeline (``streamrl status --json`` prints :meth:`to_json`)."""

    bootstrap: str
    prefix: str
    read_at: str
    """UTC ISO time of the reading."""
    state: str
    """``running``, ``idle`` or ``stopped``."""
    verdict: str
    """One sentence saying so, with the evidence."""
    complete: bool
    """Every topic was read to its end offset (False: the figures are from a partial read)."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    """Per consumer group: ``group``, ``stage``, ``state``, ``members``, ``lag`` ({topic: records behind}),
    ``responding`` (streams: whether its member wrote a timer tick lately; None for other stages)."""
    policy_version: int = 0
    last_checkpoint: dict[str, Any] | None = None
    """``version``, ``created_at``, ``age_s``, ``uri``, ``metrics`` (a few of its step metrics)."""
    rollouts_per_s: float = 0.0
    window_s: float = 60.0
    rollouts: dict[str, int] = field(default_factory=dict)
    """Trajectory records by status (``succeeded``, ``failed``, ``timeout``)."""
    samples: int = 0
    in_flight: int = 0
    """Samples without a trajectory yet."""
    dead_lettered: int = 0
    batches: int = 0
    group_outcomes: dict[str, int] = field(default_factory=dict)
    """What streams made of the train groups: ``batched`` or ``dropped:<reason>`` → records."""
    staleness: dict[str, float] | None = None
    """``mean``/``max`` of the last trained batch, ``max_staleness`` (the config's bound)."""
    val: dict[str, Any] | None = None
    """``version``, ``reward`` (last complete validation), ``in_progress`` ({version, done, expected})."""
    last_trajectory_age_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _stage(settings: Settings, group: str) -> str:
    stem = settings.group_id("")
    app_id = settings.streams.app_id or f"{settings.topics.prefix}streams"
    if group == app_id:
        return "streams"
    name = group.removeprefix(stem)
    return "inference" if name.startswith("inference-") else name


#: Stages whose consumer group has members while they run (they subscribe; sampler and trainer assign).
RUNNING_STAGES = ("workers", "streams")


def streams_silence_s(settings: Settings) -> float:
    """Seconds without a streams timer tick after which its connected member is read as not responding:
    ten tick intervals, at least 15 s (a rebalance or a loaded machine delays ticks by seconds).
    Below the default ``streams.session_timeout_s`` (30 s), so a crash shows before Kafka notices."""
    return max(15.0, 10 * settings.streams.tick_interval_s)


def _other_pipelines(settings: Settings, topics: Iterable[str], most: int = 5) -> str:
    """The prefixes of the pipelines the cluster does hold (a topic ``<prefix>tasks`` and
    ``<prefix>trajectories``), each with how to read it: ``streamrl status -c <run_root>/<run_id>/config.yaml``
    for a ``streamrl dev``/``demo`` run of this prefix (``<topics.prefix><run_id>.``) whose run directory
    is here, else ``STREAMRL_TOPIC_PREFIX=<prefix>``. The last ``most`` by name (run ids start with
    their start time); empty when there is none."""
    names = set(topics)
    prefixes = sorted(
        t.removesuffix("trajectories")
        for t in names
        if t.endswith("trajectories") and t.removesuffix("trajectories") + "tasks" in names
    )
    if not prefixes:
        return ""
    hints = []
    for prefix in prefixes[-most:]:
        run_id = prefix.removeprefix(settings.topics.prefix).rstrip(".")
        run_config = settings.dev.run_root / run_id / "config.yaml"
        if prefix.startswith(settings.topics.prefix) and run_id and run_config.is_file():
            hints.append(f"{prefix}* (streamrl status -c {run_config})")
        else:
            hints.append(f"{prefix}* (STREAMRL_TOPIC_PREFIX={prefix} streamrl status)")
    more = f" and {len(prefixes) - most} more" if len(prefixes) > most else ""
    return f" The cluster holds the topics of: {', '.join(hints)}{more}."


class StatusReader:
    """Reads :class:`PipelineStatus` again and again (``--watch``), incrementally: each refresh reads
    only the records that arrived since the previous one.

    Args:
        settings: the pipeline's settings (bootstrap servers, security, topic prefix).
        window_s: rate window of rollouts/s, in seconds.
        timeout_s: longest a refresh may take, in seconds.
        silence_s: seconds without a streams timer tick after which its connected member is read as
            not responding (default :func:`streams_silence_s`).

    Raises (from :meth:`refresh`):
        StreamRLError: the cluster cannot be reached, or it has none of the pipeline's topics.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        window_s: float = 60.0,
        timeout_s: float = 30.0,
        silence_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.silence_s = streams_silence_s(settings) if silence_s is None else silence_s
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.stats = RunStats(val_samples_per_task=settings.sampler.val_samples_per_task)
        self.monitor: Monitor | None = None
        self._ticks_topic = streams_topics(settings).ticks
        self._has_ticks = False

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def _connect(self) -> Monitor:
        s = self.settings
        probe = Monitor(s, self.stats, topics=())
        try:
            meta = probe._admin_().list_topics(timeout=min(10.0, self.timeout_s))
        except KafkaException as exc:
            local = f"{s.kafka.local.host}:{s.kafka.local.port}"
            hint = (
                " (the local broker: `streamrl kafka start` starts it; `streamrl dev` and `streamrl demo` "
                "stop the broker they started when they end, unless dev.keep_broker)"
                if s.kafka.bootstrap_servers == local
                else ""
            )
            raise StreamRLError(
                f"cannot reach Kafka at {s.kafka.bootstrap_servers}: {exc.args[0] if exc.args else exc}{hint}"
            ) from exc
        present = [b for b in STATUS_TOPICS if s.topics.name(b) in meta.topics]
        if not present:
            raise StreamRLError(
                f"no StreamRL topics with prefix {s.topics.prefix!r} on {s.kafka.bootstrap_servers} "
                f"(expected {', '.join(s.topics.name(b) for b in TOPIC_NAMES[:3])}, ...): is this the "
                f"pipeline's config (-c FILE, STREAMRL_TOPIC_PREFIX)?{_other_pipelines(s, meta.topics)} "
                "`streamrl topics create` makes them"
            )
        return Monitor(s, self.stats, topics=present)

    def refresh(self) -> PipelineStatus:
        """Read the groups and the new records; returns the status now.

        An error a partition answers with while it settles in (just created, a leader moving:
        :data:`streamrl.topics.SETTLING_ERRORS`) is asked again for up to ``timeout_s`` seconds.

        Raises:
            StreamRLError: the cluster cannot be read (the message names the bootstrap servers), or the
                prefix has no StreamRL topics.
        """
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return self._refresh_once()
            except StreamRLError as exc:
                if not is_settling(exc.__cause__, retriable=False) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _refresh_once(self) -> PipelineStatus:
        if self.monitor is None:
            self.monitor = self._connect()
        mon, s = self.monitor, self.settings
        try:
            complete = mon.read_to_end(self.timeout_s)
            groups = mon.groups(timeout_s=min(10.0, self.timeout_s))
            lag = mon.measure_lag(timeout_s=min(10.0, self.timeout_s))
            now_ms = int(time.time() * 1000)
            recent = mon.count_since("trajectories", now_ms - int(self.window_s * 1000), self.timeout_s)
            ticks = None  # no ticks topic: a streams that never ran (or older), judged by its group alone
            if (
                self._has_ticks
                or self._ticks_topic in mon._admin_().list_topics(timeout=min(10.0, self.timeout_s)).topics
            ):
                self._has_ticks = True
                since_ms = now_ms - int(self.silence_s * 1000)
                ticks = mon.count_since("", since_ms, self.timeout_s, topic=self._ticks_topic)
        except KafkaException as exc:
            raise StreamRLError(f"reading the pipeline from {s.kafka.bootstrap_servers}: {exc}") from exc
        return self._build(groups, lag, complete, recent, now_ms, streams_ticks=ticks)

    def _build(
        self,
        groups: list[GroupState],
        lag: dict[tuple[str, str], int],
        complete: bool,
        recent: int,
        now_ms: int,
        streams_ticks: int | None = None,
    ) -> PipelineStatus:
        """``streams_ticks``: timer ticks streams wrote in the last ``silence_s`` seconds (None:
        not read; a connected streams member then counts as running)."""
        s, st = self.settings, self.stats
        assert self.monitor is not None
        stem = s.group_id("")
        rows = []
        for g in groups:
            short = g.group.removeprefix(stem) if g.group.startswith(stem) else g.group
            stage = _stage(s, g.group)
            if stage == "inference" and g.members == 0:
                continue  # each inference server has its own group; an empty one is a server gone
            responding = None  # only streams has a sign of life of its own (its timer ticks)
            if stage == "streams" and g.members > 0 and streams_ticks is not None:
                responding = streams_ticks > 0
            rows.append(
                {
                    "group": g.group,
                    "stage": stage,
                    "state": g.state,
                    "members": g.members,
                    "responding": responding,
                    "lag": {t: n for (grp, t), n in sorted(lag.items()) if grp == short},
                }
            )
        last_ms = {b: t for b, t in self.monitor.last_record_ms.items()}
        traj_age = (now_ms - last_ms["trajectories"]) / 1000 if "trajectories" in last_ms else None
        ckpt = None
        staleness = None
        if st.latest_checkpoint is not None:
            c = st.latest_checkpoint
            created = c.created_at if c.created_at.tzinfo else c.created_at.replace(tzinfo=timezone.utc)
            ckpt = {
                "version": c.version,
                "created_at": created.isoformat(),
                "age_s": round(now_ms / 1000 - created.timestamp(), 1),
                "uri": c.uri,
                "metrics": {k: c.metrics[k] for k in CHECKPOINT_METRICS if k in c.metrics},
            }
            if "staleness/mean" in c.metrics:
                staleness = {
                    "mean": c.metrics["staleness/mean"],
                    "max": c.metrics.get("staleness/max", c.metrics["staleness/mean"]),
                    "max_staleness": float(s.rl.max_staleness),
                }
        # workers and streams subscribe to their topics, so their groups show members while they run;
        # the sampler and the trainer assign partitions themselves (their groups never show members):
        # their sign of life is their output (samples, checkpoints), which can pause while they wait
        connected = {r["stage"] for r in rows if r["stage"] in RUNNING_STAGES and r["members"] > 0}
        silent = sorted({r["stage"] for r in rows if r["members"] > 0 and r["responding"] is False})
        running = sorted(connected - set(silent))
        rate = recent / self.window_s
        note = (
            f"; {', '.join(silent)} not responding (a member is connected but wrote no timer tick in "
            f"{self.silence_s:.0f} s: crashed, hung or starting; Kafka drops a crashed static "
            f"member after streams.session_timeout_s = {s.streams.session_timeout_s:.0f} s)"
            if silent
            else ""
        )
        if not running:
            state = "stopped"
            ago = f"{_ago(traj_age)}" if traj_age is not None else "never"
            last_v = f"v{ckpt['version']} {_ago(ckpt['age_s'])}" if ckpt else "none"
            why = (
                "no rollout worker and no streams aggregator is connected (their consumer groups have no "
                "members)"
                if not silent
                else "no rollout worker or streams aggregator is running"
            )
            verdict = (
                f"STOPPED: {why}; last trajectory {ago}, last checkpoint {last_v}, last sample "
                f"{_ago((now_ms - last_ms['samples']) / 1000) if 'samples' in last_ms else 'never'}"
            )
        elif recent == 0:
            state = "idle"
            verdict = (
                f"IDLE: {', '.join(running)} running, but no trajectory in the last {self.window_s:.0f} s"
            )
        else:
            state = "running"
            verdict = f"RUNNING: {', '.join(running)}"
        verdict += note
        return PipelineStatus(
            bootstrap=s.kafka.bootstrap_servers,
            prefix=s.topics.prefix,
            read_at=datetime.fromtimestamp(now_ms / 1000, timezone.utc).isoformat(),
            state=state,
            verdict=verdict,
            complete=complete,
            groups=rows,
            policy_version=st.version,
            last_checkpoint=ckpt,
            rollouts_per_s=round(rate, 2),
            window_s=self.window_s,
            rollouts=dict(st.status),
            samples=st.samples,
            in_flight=len(st.missing_trajectories()),
            dead_lettered=st.dlq,
            batches=st.batches,
            group_outcomes=dict(st.group_outcomes),
            staleness=staleness,
            val=last_validation(st),
            last_trajectory_age_s=round(traj_age, 1) if traj_age is not None else None,
        )


def last_validation(stats: RunStats) -> dict[str, Any] | None:
    """The newest complete validation (version, mean reward) and the one in progress, if any."""
    means = stats.val_means()
    if not stats.val:
        return None
    out: dict[str, Any] = {"version": None, "reward": None, "in_progress": None}
    if means:
        v = max(means)
        out["version"], out["reward"] = v, round(means[v], 4)
    newest = max(stats.val)
    if not stats.val_complete(newest):
        out["in_progress"] = {
            "version": newest,
            "done": stats.val[newest].count,
            "expected": stats.val_expected,
        }
    return out


def _ago(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    if age_s < 120:
        return f"{age_s:.0f} s ago"
    if age_s < 7200:
        return f"{age_s / 60:.0f} min ago"
    return f"{age_s / 3600:.1f} h ago"


def render(st: PipelineStatus) -> Any:
    """The status screen (a rich renderable): verdict, headline figures, consumer groups and lag."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    color = {"running": "green", "idle": "yellow", "stopped": "red"}[st.state]
    ok = st.rollouts.get("succeeded", 0)
    failed = {k: n for k, n in sorted(st.rollouts.items()) if k != "succeeded"}
    rollouts = f"{ok} succeeded, {sum(failed.values())} failed" + (
        f" ({', '.join(f'{k} {n}' for k, n in failed.items())})" if set(failed) - {"failed"} else ""
    )
    dropped = {k.removeprefix("dropped:"): n for k, n in st.group_outcomes.items() if k != "batched"}
    outcomes = f"{st.group_outcomes.get('batched', 0)} batched, {sum(dropped.values())} dropped" + (
        f" ({', '.join(f'{k} {n}' for k, n in sorted(dropped.items()))})" if dropped else ""
    )
    stale = (
        f"{st.staleness['mean']:.2f} mean, {st.staleness['max']:.0f} max (bound {st.staleness['max_staleness']:.0f})"
        if st.staleness
        else "-"
    )
    val = (
        f"{st.val['reward']:.3f} at v{st.val['version']}" if st.val and st.val["reward"] is not None else "-"
    )
    if st.val and st.val["in_progress"]:
        p = st.val["in_progress"]
        val += f" (v{p['version']}: {p['done']}/{p['expected']})"
    ck = st.last_checkpoint
    last = "-"
    if ck:
        loss = ck["metrics"].get("actor/loss")
        last = f"v{ck['version']} {_ago(ck['age_s'])}" + (f", loss {loss:.4f}" if loss is not None else "")
    head = Table.grid(padding=(0, 2))
    for _ in range(4):
        head.add_column()
    pairs = [
        ("policy version", str(st.policy_version)),
        ("rollouts/s", f"{st.rollouts_per_s:.1f} (last {st.window_s:.0f} s)"),
        ("rollouts", rollouts),
        ("dead-lettered", str(st.dead_lettered)),
        ("in flight", f"{st.in_flight} of {st.samples} samples"),
        ("staleness", stale),
        ("batches", str(st.batches)),
        ("groups", outcomes),
        ("last checkpoint", last),
        ("last val reward", val),
    ]
    for i in range(0, len(pairs), 2):
        (a, av), (b, bv) = pairs[i], pairs[i + 1]
        head.add_row(f"[bold]{a}[/]", av, f"[bold]{b}[/]", bv)
    groups = Table("consumer group", "stage", "state", "members", "lag (records behind, by topic)")
    for g in st.groups:
        lag = ", ".join(f"{t} {n}" for t, n in g["lag"].items()) or "-"
        if g["stage"] in ("sampler", "trainer") and g["members"] == 0:  # they assign, never join
            groups.add_row(g["group"], g["stage"], "[dim]assigns partitions[/]", "-", lag)
        else:
            state = g["state"].lower() + (" [red](not responding)[/]" if g.get("responding") is False else "")
            groups.add_row(g["group"], g["stage"], state, str(g["members"]), lag)
    body: list[Any] = [f"[bold {color}]{st.verdict}[/]", head, groups]
    if not st.complete:
        body.append("[yellow]partial read: not every topic reached its end offset within the timeout[/]")
    title = f"streamrl status — {st.bootstrap} — topics {st.prefix}* — {st.read_at[:19]}Z"
    return Panel(Group(*body), title=title, expand=False)
