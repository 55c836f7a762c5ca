"""The local broker launcher: any cluster id formats, and an interrupted start leaves no JVM behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrl.broker import LocalKafka, new_cluster_id
from streamrl.config.kafka import LocalBrokerSettings
from tests.support.kafka import free_port
from tests.support.processes import sigint_default

pytestmark = pytest.mark.integration


def test_a_cluster_id_starting_with_a_dash_formats_the_storage(tmp_path: Path) -> None:
    # about 1 id in 64 starts with "-": draw until one does, as `streamrl kafka start` would
    drawn = 1
    cluster_id = new_cluster_id()
    while not cluster_id.startswith("-"):
        cluster_id = new_cluster_id()
        drawn += 1
    assert drawn < 10_000
    broker = LocalKafka(
        LocalBrokerSettings(port=free_port(), controller_port=free_port()), data_dir=tmp_path / "data"
    )
    assert broker.format_storage(cluster_id=cluster_id) is True
    meta = (tmp_path / "data" / "log" / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}\n" in meta, meta
    assert broker.format_storage() is False  # formatted once, kept


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_ctrl_c_during_the_broker_start_stops_the_broker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = (
        "from pathlib import Path\n"
        "from streamrl.broker import LocalKafka\n"
        "from streamrl.config.kafka import LocalBrokerSettings\n"
        # it never answers, so the start is still waiting whenever the Ctrl-C comes (under load the test
        # polled the pid file so late that the broker had answered and the start had returned)
        "LocalKafka.answers = lambda self, timeout_s=2.0: False\n"
        f"cfg = LocalBrokerSettings(port={free_port()}, controller_port={free_port()}, heap='256m')\n"
        f"LocalKafka(cfg, data_dir=Path({str(data)!r})).start(timeout_s=120)\n"
        "print('answered', flush=True)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, preexec_fn=sigint_default
    )
    pid_file = data / "broker.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists():  # the JVM was spawned: the launcher now waits for it to answer
        assert launcher.poll() is None, "the launcher exited before starting the broker"
        assert time.monotonic() < deadline, "the broker was not spawned within 60 s"
        time.sleep(0.05)
    jvm = int(pid_file.read_text())
    try:
        launcher.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C does
        out, _ = launcher.communicate(timeout=60)
        assert "answered" not in out  # interrupted while waiting, as intended
        assert launcher.returncode != 0
        assert not _pid_alive(jvm), f"the broker JVM (pid {jvm}) outlived the interrupted start"
        assert not pid_file.exists()
    finally:
        if _pid_alive(jvm):  # the test failed: do not leave it running
            os.kill(jvm, signal.SIGKILL)


def _own_jar_dir(tmp_path: Path) -> LocalBrokerSettings:
    """Settings whose jar directory is this test's (links to the cached jars), so the class-data-sharing
    archive the test makes and damages is its own, not the one every other broker maps."""
    shared = LocalKafka(LocalBrokerSettings()).ensure_jars()
    cfg = LocalBrokerSettings(port=free_port(), controller_port=free_port(), home=str(tmp_path / "home"))
    own = LocalKafka(cfg).lib_dir
    own.mkdir(parents=True)
    for jar in shared.glob("*.jar"):
        (own / jar.name).symlink_to(jar)
    (own / ".complete").write_text("linked")
    return cfg


def _mapped(pid: int, path: Path) -> bool:
    return str(path) in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.timeout(180)
def test_a_broker_records_its_class_archive_at_a_graceful_stop_and_the_next_one_maps_it(
    tmp_path: Path,
) -> None:
    cfg = _own_jar_dir(tmp_path)
    first = LocalKafka(cfg, data_dir=tmp_path / "one")
    archive = first.cds_archive
    assert not archive.exists()
    first.start(timeout_s=120)
    try:
        assert f"-XX:ArchiveClassesAtExit={first.data_dir / 'classes.jsa.dump'}" in Path(
            f"/proc/{first.pid()}/cmdline"
        ).read_bytes().decode().replace("\0", " ")
    finally:
        assert first.stop() is True
    assert archive.is_file() and archive.stat().st_size > 0  # recorded at the exit, moved into place
    assert not (first.data_dir / "classes.jsa.dump").exists()

    second = LocalKafka(
        cfg.model_copy(update={"port": free_port(), "controller_port": free_port()}),
        data_dir=tmp_path / "two",
    )
    second.start(timeout_s=120)
    try:
        assert _mapped(second.pid(), archive)  # the JVM uses it
        assert second.answers()
    finally:
        second.stop()

    archive.write_bytes(b"not an archive" * 1000)  # damaged: a JVM starts without it
    third = LocalKafka(cfg, data_dir=tmp_path / "three")
    assert third.format_storage() is True  # the storage tool's JVM maps the same archive
    assert (third.data_dir / "log" / "meta.properties").is_file()
