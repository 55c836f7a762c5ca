"""A real single-node Apache Kafka 4.x broker for development and tests, without Docker.

The jars come from Maven Central (``compose/kafka/pom.xml``, resolved with ``mvn`` into a cache
outside the repo); the node runs KRaft in combined mode (broker + controller) on 127.0.0.1, its
storage formatted once with ``kafka.tools.StorageTool format --standalone`` and kept, so a restart
keeps the log. The cluster id is passed as ``--cluster-id=<id>`` (a random id starts with ``-``
about once in 64, which the tool would read as a flag). A start that is interrupted (Ctrl-C) or
fails stops the JVM it spawned: the broker runs in its own session, so nothing else would.

Secured (``kafka.local.listener_security: SASL_SSL``): the client listener is SASL_SSL with
SCRAM-SHA-512 (users created at format time with ``--add-scram``, upserted at every start); its
TLS certificate comes from ``tls_dir`` (a development CA made with :mod:`streamrl.tls` if missing;
a PKCS#12 keystore, a PEM truststore). The controller listener is SSL with client certificates
required (only the broker itself, holding the keystore, can reach it), so no listener accepts an
anonymous login. ``authorizer: true`` adds Kafka's StandardAuthorizer: nothing is allowed but to
``super_users`` and what ACLs grant (:mod:`streamrl.acl`). ``server.properties`` holds the
broker's own password and keystore password and is written with mode 0600.

Ownership: ``start(owner=...)`` records who started the node (``broker.owner`` beside its pid file:
the owner's name and pid), so a ``streamrl dev`` run can tell a broker that another run will stop
when it ends from one started to stay (``streamrl kafka start``). A port that another process holds
is one clear error before any JVM starts.

Class data sharing: the JVMs map an AppCDS archive of the broker's classes (``-XX:SharedArchiveFile``,
:attr:`LocalKafka.cds_archive` beside the jars, one per Java installation), which halves the broker's
start-up CPU (4.1 -> 2.1-2.4 CPU-s to its first answer on the 2-core machine, 7.7 -> 5.2-5.9 s wall;
the storage format 1.3 -> 0.75 s). While there is none, a broker records one at its exit
(``-XX:ArchiveClassesAtExit`` into its data directory, ~2.5 s more at its stop, once); a graceful
stop moves it into place, a killed broker's is deleted. A JVM that cannot use an archive (another
Java build, a damaged file) starts without it, as it would have.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamrl.config.kafka import LocalBrokerSettings
from streamrl.errors import BrokerError

log = logging.getLogger(__name__)

#: Common name of the certificate the launcher makes for a secured broker: the principal of its
#: controller listener (a super user), which no SCRAM user may take.
CONTROLLER_CN = "streamrl-local-broker"
POM_PATH = Path(__file__).resolve().parents[1] / "compose" / "kafka" / "pom.xml"
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def check_java_and_maven() -> None:
    """Fail early, in one line, when Java 17+ or Maven is missing.

    Raises:
        BrokerError: ``java`` or ``mvn`` is not on PATH, or Java is older than 17.
    """
    if shutil.which("java") is None:
        raise BrokerError(
            "java not found: install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if m:
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        if major < 17:
            raise BrokerError(f"Java {major} found, Kafka 4 needs Java 17+: install openjdk-17 or newer")
    if shutil.which("mvn") is None:
        raise BrokerError(
            "mvn not found: install Apache Maven (e.g. `apt-get install maven`) to fetch the Kafka jars"
        )


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).

    About one id in 64 starts with ``-``: pass it to the storage tool as ``--cluster-id=<id>``
    (one argument), never as ``-t <id>``, which argparse reads as a flag.
    """
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _exists(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class BrokerStatus:
    """What ``streamrl kafka status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    answering: bool


class LocalKafka:
    """Launcher of one local Kafka node (KRaft combined mode).

    Args:
        cfg: the ``kafka.local`` settings (versions, ports, home directory, heap).
        data_dir: where the node keeps its log and state; default ``<home>/kafka-data``.
            Tests pass a temporary directory; the jar cache under ``<home>/lib`` is shared.
        log_level: root log4j2 level of the broker.
        node_id: the KRaft ``node.id`` (1 for a single node).
        voters: for one node of a multi-node cluster: every node's ``node_id -> controller port``
            on ``cfg.host`` (``controller.quorum.voters``, a static quorum: storage formatted without
            ``--standalone``, with the same cluster id on every node). None = a single node.
        replication: replication factor of the internal topics (offsets, transactions, share
            state) and ``default.replication.factor``; above 1, ``min.insync.replicas`` (broker
            default for every topic) is ``replication - 1``, so with ``acks=all`` a write survives
            the loss of one node and is refused rather than kept on a single copy.
    """

    def __init__(
        self,
        cfg: LocalBrokerSettings,
        *,
        data_dir: Path | None = None,
        log_level: str = "WARN",
        node_id: int = 1,
        voters: dict[int, int] | None = None,
        replication: int = 1,
    ) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.voters = voters
        self.replication = replication
        self.home = Path(cfg.home).expanduser()
        self.data_dir = Path(data_dir) if data_dir is not None else self.home / "kafka-data"
        self.lib_dir = self.home / "lib" / f"kafka-{cfg.kafka_version}-log4j-{cfg.log4j_version}"
        self.log_level = log_level

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the client listener."""
        return f"{self.cfg.host}:{self.cfg.port}"

    @property
    def secured(self) -> bool:
        """True when the client listener is SASL_SSL."""
        return self.cfg.listener_security == "SASL_SSL"

    @property
    def tls_dir(self) -> Path:
        """Where the secured broker's CA, certificate and keystore live."""
        return Path(self.cfg.tls_dir).expanduser() if self.cfg.tls_dir is not None else self.home / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA clients verify the secured broker with (``kafka.ssl_ca_location``)."""
        return self.tls_dir / "ca.pem"

    def client_config(self, user: str | None = None) -> dict[str, Any]:
        """librdkafka properties to reach this broker (as ``user``, default the first super user).

        Raises:
            KeyError: ``user`` is not in ``scram_users``.
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.secured:
            user = user or self.cfg.super_users[0]
            conf.update(
                {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "SCRAM-SHA-512",
                    "sasl.username": user,
                    "sasl.password": self.cfg.scram_users[user].get_secret_value(),
                    "ssl.ca.location": str(self.ca_file),
                }
            )
        return conf

    def _ensure_tls(self) -> tuple[Path, str]:
        """The keystore and its password, made with a development CA on first use."""
        from streamrl.tls import make_dev_ca

        keystore = self.tls_dir / "server.p12"
        password_file = self.tls_dir / "server.p12.password"
        if not keystore.is_file() or not password_file.is_file() or not self.ca_file.is_file():
            hosts = tuple(dict.fromkeys((self.cfg.host, "localhost", "127.0.0.1")))
            log.info("making a development CA and broker certificate in %s", self.tls_dir)
            make_dev_ca(self.tls_dir, hosts, common_name=CONTROLLER_CN)
        return keystore, password_file.read_text().strip()

    def _security_props(self) -> dict[str, str]:
        host, port, cport = self.cfg.host, self.cfg.port, self.cfg.controller_port
        keystore, store_pw = self._ensure_tls()
        admin = self.cfg.super_users[0]
        admin_pw = self.cfg.scram_users[admin].get_secret_value()
        props = {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{admin}" password="{admin_pw}";'
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": store_pw,
            "ssl.key.password": store_pw,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            # the controller listener takes only the broker itself: a client certificate of our CA
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        }
        supers = [f"User:{u}" for u in self.cfg.super_users]
        supers.append(f"User:{self._controller_principal()}")
        props["super.users"] = ";".join(supers)
        if self.cfg.authorizer:
            props["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            props["allow.everyone.if.no.acl.found"] = "false"
        return props

    def _controller_principal(self) -> str:
        """The SSL principal of the broker's own certificate (its CN, by the mapping rule;
        :data:`CONTROLLER_CN` for a certificate this launcher made)."""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_pem_x509_certificate((self.tls_dir / "server.pem").read_bytes())
        return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def owner_file(self) -> Path:
        """Who started the running node (JSON ``{"owner": name, "pid": pid}``), if it was told."""
        return self.data_dir / "broker.owner"

    def owner(self) -> dict[str, Any] | None:
        """The recorded owner of the running node (``owner``, ``pid``) while that owner process is
        alive; None if the node is not running, was started without an owner, or its owner is gone
        (then nobody will stop it but ``streamrl kafka stop``)."""
        if self.pid() is None:
            return None
        try:
            rec = json.loads(self.owner_file.read_text())
            pid = int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {"owner": str(rec.get("owner", "?")), "pid": pid} if _exists(pid) else None

    @property
    def log_file(self) -> Path:
        """The broker's stdout/stderr."""
        return self.data_dir / "broker.log"

    # -- jars -------------------------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """Resolve the broker's jars from Maven Central once; later calls reuse the cache.

        Returns:
            The directory holding the jars.

        Raises:
            BrokerError: Java/Maven missing, or Maven failed (its output tail is in the message).
        """
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        check_java_and_maven()
        if not POM_PATH.is_file():
            raise BrokerError(
                f"{POM_PATH} is missing: the local broker needs the repo's compose/kafka/pom.xml"
            )
        tmp = self.lib_dir.with_name(self.lib_dir.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(POM_PATH), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
            f"-Dkafka.version={self.cfg.kafka_version}", f"-Dlog4j.version={self.cfg.log4j_version}",
        ]  # fmt: skip
        log.info("resolving Kafka %s jars with Maven into %s", self.cfg.kafka_version, self.lib_dir)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise BrokerError("mvn could not resolve the Kafka jars:\n" + "\n".join(tail))
        (tmp / ".complete").write_text(self.cfg.kafka_version)
        try:
            tmp.rename(self.lib_dir)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
        return self.lib_dir

    def _classpath(self) -> str:
        return str(self.ensure_jars() / "*")

    # -- storage and config --------------------------------------------------------------------
    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, port, cport = self.cfg.host, self.cfg.port, self.cfg.controller_port
        rf, isr = str(self.replication), str(max(1, self.replication - 1))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": f"{host}:{cport}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "log"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(16 * 1024 * 1024),
            "replica.fetch.max.bytes": str(16 * 1024 * 1024),
            "log.cleaner.min.compaction.lag.ms": "0",
            "log.retention.check.interval.ms": "60000",
        }
        if self.voters is not None:
            del props["controller.quorum.bootstrap.servers"]
            props["controller.quorum.voters"] = ",".join(
                f"{n}@{host}:{p}" for n, p in sorted(self.voters.items())
            )
        if self.secured:
            props.update(self._security_props())
        path = self.data_dir / "server.properties"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in props.items()))
        os.chmod(path, 0o600)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        return path

    @property
    def cds_archive(self) -> Path:
        """The class-data-sharing archive of the broker's classes for the ``java`` on ``PATH``: in
        the jar directory (one per Kafka version), named after the Java installation's real path and
        modification time (a JDK upgrade makes a new one)."""
        java = shutil.which("java") or "java"
        real = os.path.realpath(java)
        try:
            stamp = os.stat(real).st_mtime_ns
        except OSError:
            stamp = 0
        digest = hashlib.sha256(f"{real}:{stamp}".encode()).hexdigest()[:16]
        return self.lib_dir / f"classes-{digest}.jsa"

    @property
    def _cds_dump(self) -> Path:
        """Where a broker started without :attr:`cds_archive` records one at its exit."""
        return self.data_dir / "classes.jsa.dump"

    def _cds_flags(self, main: str) -> list[str]:
        """Map the archive if there is one; else a broker records it at its exit (see the module docstring)."""
        archive = self.cds_archive
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        if main != "kafka.Kafka":
            return []
        self._cds_dump.unlink(missing_ok=True)
        return [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]

    def _keep_cds_dump(self, graceful: bool) -> None:
        """After the broker exited: move the archive it recorded into place (a graceful exit wrote
        it whole), or delete it (a killed JVM may have left half of one)."""
        dump = self._cds_dump
        try:
            if graceful and dump.is_file() and dump.stat().st_size > 0 and not self.cds_archive.exists():
                os.replace(dump, self.cds_archive)
                log.info("kept the broker's class-data-sharing archive in %s", self.cds_archive)
        except OSError as exc:
            log.warning("cannot keep the broker's class-data-sharing archive: %s", exc)
        dump.unlink(missing_ok=True)

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
            *self._cds_flags(main),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", self._classpath(), main, *args,
        ]  # fmt: skip

    def format_storage(self, cluster_id: str | None = None) -> bool:
        """Format the log directory once (``StorageTool format``, ``--standalone`` for a single node).

        Args:
            cluster_id: the KRaft cluster id (default: :func:`new_cluster_id`); any id the tool
                accepts, including one that starts with ``-`` (passed as ``--cluster-id=<id>``).

        Returns:
            True if it formatted, False if the storage was already formatted (kept as is).

        Raises:
            BrokerError: the tool failed.
        """
        config = self._write_config()
        if (self.data_dir / "log" / "meta.properties").exists():
            return False
        cluster_id = cluster_id or new_cluster_id()
        scram = []
        if self.secured:  # users exist before the broker first starts, so it can log itself in
            for name, pw in self.cfg.scram_users.items():
                scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={pw.get_secret_value()}]"]
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            *(["--standalone"] if self.voters is None else []),  # a static quorum names its voters
            f"--cluster-id={cluster_id}",  # one argument: an id starting with "-" is not a flag
            "--config",
            str(config),
            *scram,
        )
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()[-2000:]
            for pw in self.cfg.scram_users.values():
                out = out.replace(pw.get_secret_value(), "**********")
            raise BrokerError("kafka storage format failed:\n" + out)
        return True

    # -- process ---------------------------------------------------------------------------------
    def pid(self) -> int | None:
        """PID of the running broker, or None if it is not running."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _exists(pid):
            return None
        try:  # a reused pid is not our broker
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"kafka.Kafka" not in cmdline:
                return None
        except OSError:
            pass
        return pid

    def answers(self, timeout_s: float = 2.0) -> bool:
        """True if a metadata request to the client listener succeeds within ``timeout_s``."""
        admin = AdminClient(
            {
                **self.client_config(),
                "socket.connection.setup.timeout.ms": 1000,
                "log_level": 0,  # "connection refused" while it boots is expected, not news
                "logger": log,
            }
        )
        try:
            admin.list_topics(timeout=timeout_s)
            return True
        except KafkaException:
            return False

    def start(
        self,
        timeout_s: float | None = None,
        *,
        owner: str | None = None,
        on_spawn: Callable[[int], None] | None = None,
    ) -> tuple[str, bool]:
        """Start the broker (formatting its storage the first time) and wait until it answers.

        Args:
            timeout_s: how long to wait for it to answer (default ``start_timeout_s``), in seconds.
            owner: who starts it (e.g. ``streamrl dev run <id>``), recorded with this process's pid
                in :attr:`owner_file` (:meth:`owner`); None records nothing (a broker meant to stay).
            on_spawn: called with the JVM's pid as soon as it is spawned, before it answers (not
                when the broker was already running): ``streamrl dev`` tells its reaper
                (:mod:`streamrl.dev.reaper`), which stops the broker if ``dev`` is killed.

        Returns:
            ``(bootstrap address, started)``: ``started`` is False when it was already running.

        Raises:
            BrokerError: Java/Maven missing, jars unresolvable, the client or controller port held by
                another process, the process died (log tail in the message), or it did not answer a
                metadata request within ``timeout_s``.
        """
        timeout_s = timeout_s or self.cfg.start_timeout_s
        if self.secured:
            self._ensure_tls()
        if self.pid() is not None:
            return self.bootstrap, False
        if self.answers(timeout_s=1.0):
            log.warning(
                "another Kafka broker already answers on %s; not starting a second one", self.bootstrap
            )
            return self.bootstrap, False
        self._check_ports_free()
        self.ensure_jars()
        self.format_storage()
        config = self.data_dir / "server.properties"
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config), heap=self.cfg.heap),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            if on_spawn is not None:
                on_spawn(proc.pid)
            self.pid_file.write_text(str(proc.pid))
            self.owner_file.unlink(missing_ok=True)
            if owner is not None:
                self.owner_file.write_text(json.dumps({"owner": owner, "pid": os.getpid()}))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise BrokerError(f"Kafka exited with code {proc.returncode}:\n{self.log_tail()}")
                if self.answers(timeout_s=2.0):
                    if self.secured:
                        self._upsert_users()
                    return self.bootstrap, True
                time.sleep(0.3)
            raise BrokerError(
                f"Kafka did not answer on {self.bootstrap} within {timeout_s:.0f} s:\n{self.log_tail()}"
            )
        except BaseException:
            # Ctrl-C (KeyboardInterrupt), SIGTERM turned into an exception, or a failed start: the JVM
            # runs in its own session, so nothing else would ever stop it
            self._terminate(proc)
            raise

    def _check_ports_free(self) -> None:
        """Raise a clear error if another process listens on the client or controller port (the JVM
        would die on "Address already in use" after seconds of start-up)."""
        for key, port in (("port", self.cfg.port), ("controller_port", self.cfg.controller_port)):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((self.cfg.host, port))
                except OSError as exc:
                    raise BrokerError(
                        f"cannot start the local Kafka broker: port {port} on {self.cfg.host} "
                        f"(kafka.local.{key}) is in use by another process ({exc.strerror}); another "
                        f"clone's broker or demo? Stop it, or choose free ports: kafka.local.port and "
                        f"kafka.local.controller_port (and dev.broker_data_dir for a second broker's data)"
                    ) from None

    def _upsert_users(self, timeout_s: float = 30.0) -> None:
        """Make the broker's SCRAM users those of ``scram_users`` (a user added to the config after
        the storage was formatted is created; a changed password is set).

        Raises:
            BrokerError: the broker refused.
        """
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        admin = AdminClient({**self.client_config(), "logger": log})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        upserts = [
            UserScramCredentialUpsertion(name, info, pw.get_secret_value().encode())
            for name, pw in self.cfg.scram_users.items()
        ]
        for name, fut in admin.alter_user_scram_credentials(upserts, request_timeout=timeout_s).items():
            try:
                fut.result(timeout=timeout_s)
            except KafkaException as exc:
                raise BrokerError(f"cannot set the SCRAM credentials of user {name}: {exc}") from exc

    def _terminate(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
        """Stop a broker this launcher just started (SIGTERM, SIGKILL after ``timeout_s``) and forget it."""
        if proc.poll() is None:
            proc.terminate()
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    proc.kill()
            except KeyboardInterrupt:  # a second Ctrl-C: no graceful stop, but still no orphan
                proc.kill()
        self._keep_cds_dump(graceful=False)  # a failed or interrupted start: not a whole run's classes
        self.pid_file.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``). Data is kept.

        Returns:
            True if a running broker was stopped, False if none was running.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            self.owner_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        graceful = True
        while time.monotonic() < deadline:
            if not self._alive(pid):
                break
            time.sleep(0.2)
        else:
            log.warning("Kafka (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            graceful = False
            while self._alive(pid):
                time.sleep(0.1)
        self._keep_cds_dump(graceful)
        self.pid_file.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            return state != "Z"
        except OSError:
            return False

    def status(self) -> BrokerStatus:
        """Whether the broker runs and answers."""
        pid = self.pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            answering=pid is not None and self.answers(),
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the broker's output."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"
