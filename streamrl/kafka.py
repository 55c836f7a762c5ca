"""Kafka client factories: the one place that turns :class:`Settings` into client configs.

Stages never hand-build a confluent-kafka config; they call :func:`make_producer`,
:func:`make_consumer` or :func:`make_admin`, or use :class:`EventProducer` for the common
"produce, and know that it was acknowledged" pattern.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from streamrl.config import Settings
from streamrl.errors import BrokerError, DeliveryError

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]
_K = TypeVar("_K")


class _RepeatFilter(logging.Filter):
    """Lets a librdkafka message through once per ``window_s`` (digits ignored), then says how many were held.

    An unreachable broker makes librdkafka log a connection failure every few tens of ms; without this,
    the one clear error a command ends with is buried under hundreds of lines.
    """

    def __init__(self, window_s: float = 30.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            first, held = self._seen.get(key, (0.0, 0))
            if now - first < self.window_s:
                self._seen[key] = (first, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:
                self._seen.clear()
        if held:
            record.msg = (
                f"{record.getMessage()} (and {held} similar message(s) in the last {self.window_s:.0f} s)"
            )
            record.args = None
        return True


#: Where every client built here sends librdkafka's own log lines (repeats suppressed).
LIBRDKAFKA_LOG = logging.getLogger("streamrl.librdkafka")
LIBRDKAFKA_LOG.addFilter(_RepeatFilter())


def _logged(conf: dict[str, Any]) -> dict[str, Any]:
    conf.setdefault("logger", LIBRDKAFKA_LOG)
    return conf


def client_config(settings: Settings) -> dict[str, Any]:
    """The properties every client shares: bootstrap servers, security, extra client properties.

    Returns:
        librdkafka property dict (``bootstrap.servers``, ``security.protocol``, ``sasl.*``, ``ssl.*``,
        plus ``kafka.client_properties`` verbatim). Secrets are revealed here and nowhere else.
    """
    k = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "security.protocol": k.security_protocol,
    }
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username is not None:
        conf["sasl.username"] = k.sasl_username
    if k.sasl_password is not None:
        conf["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_ca_location is not None:
        conf["ssl.ca.location"] = str(k.ssl_ca_location)
    if k.ssl_certificate_location is not None:
        conf["ssl.certificate.location"] = str(k.ssl_certificate_location)
    if k.ssl_key_location is not None:
        conf["ssl.key.location"] = str(k.ssl_key_location)
    if k.ssl_key_password is not None:
        conf["ssl.key.password"] = k.ssl_key_password.get_secret_value()
    conf.update(k.client_properties)
    return conf


#: Client configs (bootstrap, security, credentials) whose login this process has checked
#: (:func:`verify_login`), as sorted items.
_LOGINS_CHECKED: set[tuple[tuple[str, str], ...]] = set()
#: librdkafka errors that mean "these credentials or this CA will never work": retrying is pointless.
_LOGIN_ERRORS = (KafkaError._AUTHENTICATION, KafkaError._SSL)


def verify_login(settings: Settings, timeout_s: float = 15.0) -> None:
    """Fail fast, with one clear error, when a secured cluster refuses our login or certificate.

    librdkafka retries a refused SASL login (or a TLS handshake with an untrusted broker
    certificate) forever, logging a line each time; a stage would hang instead of saying why.
    This makes one metadata request and reports such an error. A cluster that merely does not
    answer is left to the caller (it may come back). Checked once per client configuration
    (bootstrap, security settings, credentials) per process; :func:`make_producer`, :func:`make_consumer` and :func:`make_admin` call it.

    Raises:
        BrokerError: authentication failed (wrong user or password, unknown mechanism) or the TLS
            handshake failed (``kafka.ssl_ca_location`` does not verify the broker).
    """
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return
    conf = client_config(settings)
    key = tuple(sorted((name, str(value)) for name, value in conf.items()))
    if key in _LOGINS_CHECKED:
        return
    errors: list[KafkaError] = []
    probe = Producer({**conf, "error_cb": errors.append, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                probe.list_topics(timeout=1.0)
                _LOGINS_CHECKED.add(key)
                return
            except KafkaException:
                pass
            probe.poll(0)
            refused = [e for e in errors if e.code() in _LOGIN_ERRORS]
            if refused:
                who = f"user {k.sasl_username!r}" if k.sasl_username else "this client"
                hint = (
                    "check kafka.sasl_username / kafka.sasl_password / kafka.sasl_mechanism"
                    if refused[0].code() == KafkaError._AUTHENTICATION
                    else "check kafka.ssl_ca_location (the CA that signed the broker's certificate)"
                )
                raise BrokerError(
                    f"{k.bootstrap_servers}: the cluster refused {who} ({k.security_protocol}): "
                    f"{refused[0].str()}; {hint}"
                )
    finally:
        probe.flush(0)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Config of an idempotent, ``acks=all``, compressed producer (see :func:`make_producer`)."""
    conf = client_config(settings)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": settings.kafka.compression_type,
            "linger.ms": 2,
            "message.max.bytes": settings.topics.max_message_bytes,
        }
    )
    conf.update(overrides)
    return _logged(conf)


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer (``acks=all``, ``enable.idempotence``, lz4/zstd compression).

    Delivery callbacks run only inside ``poll()``/``flush()``; use :class:`EventProducer` to get a
    background poll thread. ``overrides`` are librdkafka properties (dots in names), e.g.
    ``make_producer(s, **{"transactional.id": "sampler-0"})``.

    Raises:
        BrokerError: a secured cluster refused the login (:func:`verify_login`).
    """
    verify_login(settings)
    return Producer(producer_config(settings, **overrides))


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Config of a manual-commit, cooperative-sticky consumer (see :func:`make_consumer`)."""
    conf = client_config(settings)
    conf.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
            "fetch.max.bytes": max(settings.topics.max_message_bytes * 2, 52428800),
            "max.partition.fetch.bytes": settings.topics.max_message_bytes,
        }
    )
    conf.update(overrides)
    return _logged(conf)


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer in ``group_id`` with manual commits and cooperative-sticky assignment.

    Offsets are neither auto-committed nor auto-stored: commit explicitly once the output of a
    record is acknowledged. New groups start at the earliest offset. With cooperative-sticky,
    rebalance callbacks must use ``incremental_assign``/``incremental_unassign``.

    Raises:
        BrokerError: a secured cluster refused the login (:func:`verify_login`).
    """
    verify_login(settings)
    return Consumer(consumer_config(settings, group_id, **overrides))


def make_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client for topic management.

    A call answered by a group's coordinator follows :data:`COORDINATOR_REQUEST_TIMEOUT_S`.

    Raises:
        BrokerError: a secured cluster refused the login (:func:`verify_login`).
    """
    verify_login(settings)
    conf = client_config(settings)
    conf.update(overrides)
    return AdminClient(_logged(conf))


COORDINATOR_REQUEST_TIMEOUT_S = 3600.0
"""``request_timeout`` of an admin call answered by a group's coordinator (``describe_consumer_groups``,
``list_consumer_group_offsets``), in seconds: librdkafka's largest, so that librdkafka never times
such a call out itself; the caller bounds its wait with :func:`coordinator_results`.

When librdkafka times one out before it sent the request (the coordinator down, frozen or still
being looked up), it still sends the request later, once a coordinator answers, and frees the call's
state twice: the whole process aborts (``rd_kafka_enq_once_del_source_return: Assertion
`eonce->refcnt > 0' failed``) or crashes, uncatchable from Python. That is librdkafka issue
https://github.com/confluentinc/librdkafka/issues/4605, open in 2.16. A call the caller stopped
waiting for ends safely when its client is dropped (destroying the client fails what it still has
pending), so a client that gave up on a call must not be used again."""


def coordinator_results(
    futures: Mapping[_K, concurrent.futures.Future[Any]], timeout_s: float
) -> dict[_K, Any]:
    """The results of admin calls made with :data:`COORDINATOR_REQUEST_TIMEOUT_S` (e.g. the futures
    ``describe_consumer_groups`` returns), all waited for together for at most ``timeout_s`` seconds.

    Returns:
        ``{key: result}``, a failed call's value being its :class:`KafkaException`: the error it
        failed with, or ``_TIMED_OUT`` when it did not finish within ``timeout_s`` (it is still
        pending: drop its client, see :data:`COORDINATOR_REQUEST_TIMEOUT_S`).
    """
    concurrent.futures.wait(list(futures.values()), timeout=max(0.0, timeout_s))
    out: dict[_K, Any] = {}
    for key, future in futures.items():
        if not future.done():
            out[key] = KafkaException(
                KafkaError(
                    KafkaError._TIMED_OUT, f"no answer from the group coordinator within {timeout_s:.1f} s"
                )
            )
            continue
        try:
            out[key] = future.result()
        except KafkaException as exc:
            out[key] = exc
    return out


class EventProducer:
    """An idempotent producer with a background poll thread and checked deliveries.

    ``produce`` never blocks on the network; a full local queue is drained (``BufferError`` →
    poll → retry). Every delivery failure is remembered, and :meth:`flush` raises
    :class:`DeliveryError` if any happened since the last flush.

    Args:
        settings: the StreamRL settings (cluster, security, compression).
        poll_interval_s: how often the background thread serves delivery callbacks, in seconds.
        **overrides: librdkafka properties for this producer.
    """

    def __init__(self, settings: Settings, *, poll_interval_s: float = 0.05, **overrides: Any) -> None:
        self._producer = make_producer(settings, **overrides)
        self._failures: list[tuple[str, object, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._poll_interval_s = poll_interval_s
        self._thread = threading.Thread(target=self._poll_loop, name="streamrl-producer-poll", daemon=True)
        self._thread.start()

    @property
    def producer(self) -> Producer:
        """The underlying confluent-kafka producer."""
        return self._producer

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(self._poll_interval_s)

    def _record_failure(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._failures.append((msg.topic() or "?", msg.key(), str(err)))
            log.error("delivery failed: %s key=%r: %s", msg.topic(), msg.key(), err)

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | dict[str, bytes] | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record. ``on_delivery(err, msg)`` runs on the poll thread once it is acked or failed."""

        def callback(err: KafkaError | None, msg: Message) -> None:
            self._record_failure(err, msg)
            if on_delivery is not None:
                on_delivery(err, msg)

        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": callback}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged.

        Raises:
            DeliveryError: a record failed since the last flush, or records were still queued after
                ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        remaining = self._producer.flush(timeout_s)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining:
            failures.append(("?", None, f"{remaining} record(s) still queued after {timeout_s:.1f} s"))
        if failures:
            raise DeliveryError(failures)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, then stop the poll thread. Raises :class:`DeliveryError` like :meth:`flush`."""
        try:
            self.flush(timeout_s)
        finally:
            self._closed.set()
            self._thread.join(timeout=5)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
