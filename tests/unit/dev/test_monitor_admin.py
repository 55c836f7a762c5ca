"""The monitor's admin calls to a group's coordinator never let librdkafka time them out (that aborts
the process, librdkafka #4605): they pass the longest request timeout, the monitor bounds its own wait,
and a client with a call given up on, or one that failed, is dropped for a new one. A group the
coordinator would not describe is not asked for its offsets in that reading."""

from __future__ import annotations

import concurrent.futures
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamrl.config import load_settings
from streamrl.dev import monitor as monitor_mod
from streamrl.dev.monitor import Monitor
from streamrl.dev.stats import RunStats
from streamrl.kafka import COORDINATOR_REQUEST_TIMEOUT_S, coordinator_results

#: What a fake coordinator does with a group: answer (None), fail with an error code, or never answer.
PENDING = "pending"


def _done(value: Any) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    if isinstance(value, KafkaException):
        fut.set_exception(value)
    else:
        fut.set_result(value)
    return fut


def _pending() -> concurrent.futures.Future:
    return concurrent.futures.Future()


class FakeAdmin:
    """An admin client whose groups' coordinators behave as ``coordinators`` says (group id → None,
    an error code or :data:`PENDING`); each group committed offset 3 of ``samples`` partition 0, whose
    end offset is 10."""

    made = 0

    def __init__(self, coordinators: dict[str, Any], calls: list[tuple[int, str, Any]]) -> None:
        self.coordinators = coordinators
        self.calls = calls  # (serial number of the client, call, request_timeout)
        FakeAdmin.made += 1
        self.serial = FakeAdmin.made

    def _call(self, name: str, timeout: float, what: Any = None) -> None:
        self.calls.append((self.serial, name, timeout if what is None else (timeout, what)))

    def _answer(self, gid: str, value: Any) -> concurrent.futures.Future:
        behaviour = self.coordinators[gid]
        if behaviour == PENDING:
            return _pending()
        if behaviour is not None:
            return _done(KafkaException(KafkaError(behaviour, "from the coordinator")))
        return _done(value)

    def list_consumer_groups(self, request_timeout: float) -> concurrent.futures.Future:
        self._call("list_consumer_groups", request_timeout)
        return _done(SimpleNamespace(valid=[SimpleNamespace(group_id=g) for g in self.coordinators]))

    def describe_consumer_groups(self, ids: list[str], request_timeout: float) -> dict:
        self._call("describe_consumer_groups", request_timeout)
        described = SimpleNamespace(state=SimpleNamespace(name="EMPTY"), members=[])
        return {gid: self._answer(gid, described) for gid in ids}

    def list_consumer_group_offsets(self, groups: list, request_timeout: float) -> dict:
        gid = groups[0].group_id
        self._call("list_consumer_group_offsets", request_timeout, gid)
        listed = SimpleNamespace(topic_partitions=[TopicPartition("streamrl.samples", 0, 3)])
        return {gid: self._answer(gid, listed)}

    def list_offsets(self, specs: dict, request_timeout: float) -> dict:
        self._call("list_offsets", request_timeout)
        return {tp: _done(SimpleNamespace(offset=10)) for tp in specs}


@pytest.fixture
def monitor(monkeypatch: pytest.MonkeyPatch) -> tuple[Monitor, dict[str, Any], list]:
    """A monitor whose admin clients are :class:`FakeAdmin` (a new one each time it makes one), the
    coordinators' behaviour to set, and every call made."""
    coordinators: dict[str, Any] = {}
    calls: list[tuple[int, str, Any]] = []
    monkeypatch.setattr(monitor_mod, "make_admin", lambda _settings: FakeAdmin(coordinators, calls))
    return Monitor(load_settings(None), RunStats()), coordinators, calls


def test_coordinator_calls_pass_the_longest_request_timeout(monitor) -> None:
    """librdkafka must never time out a call to a coordinator: the monitor's own timeout is not passed."""
    mon, coordinators, calls = monitor
    coordinators.update({"streamrl-workers": None, "streamrl-trainer": None})
    assert mon.measure_lag(timeout_s=5.0) == {("workers", "samples"): 7, ("trainer", "samples"): 7}
    timeouts = {name: t for _, name, t in calls}
    assert timeouts["describe_consumer_groups"] == COORDINATOR_REQUEST_TIMEOUT_S == 3600.0
    assert {t for _, name, (t, _g) in [c for c in calls if c[1] == "list_consumer_group_offsets"]} == {
        COORDINATOR_REQUEST_TIMEOUT_S
    }
    assert timeouts["list_consumer_groups"] == timeouts["list_offsets"] == 5.0  # not sent to a coordinator
    assert len({client for client, _, _ in calls}) == 1  # one client while every call succeeds


@pytest.mark.timeout(60)  # a monitor that waits for librdkafka to give up would wait for ever here
def test_a_coordinator_that_does_not_answer_is_given_up_and_its_client_dropped(monitor) -> None:
    mon, coordinators, calls = monitor
    coordinators.update({"streamrl-workers": PENDING, "streamrl-trainer": None})
    started = time.monotonic()
    groups = {g.group: g for g in mon.groups(timeout_s=0.3)}
    assert time.monotonic() - started < 2.0
    assert groups["streamrl-workers"].state == "UNKNOWN" and groups["streamrl-trainer"].state == "EMPTY"
    first = calls[-1][0]
    coordinators["streamrl-workers"] = None  # answers again
    assert mon.measure_lag(timeout_s=0.3) == {("workers", "samples"): 7, ("trainer", "samples"): 7}
    assert calls[-1][0] != first  # the client with a call still pending was not used again


def test_a_group_the_coordinator_would_not_describe_is_not_asked_for_offsets(monitor) -> None:
    """An admin client never looks a moved coordinator up again, and ``NOT_COORDINATOR`` in answer to
    ``list_consumer_group_offsets`` crashes librdkafka (#5040): the group is skipped, the client dropped."""
    mon, coordinators, calls = monitor
    coordinators.update({"streamrl-workers": KafkaError.NOT_COORDINATOR, "streamrl-trainer": None})
    assert mon.measure_lag(timeout_s=1.0) == {("trainer", "samples"): 7}
    asked = [(client, what[1]) for client, name, what in calls if name == "list_consumer_group_offsets"]
    assert [g for _, g in asked] == ["streamrl-trainer"]
    describing = next(client for client, name, _ in calls if name == "describe_consumer_groups")
    assert asked[0][0] != describing  # a new client (new coordinator look-ups) asked for the offsets


def test_coordinator_results_gives_each_call_its_result_or_error() -> None:
    failed = KafkaException(KafkaError(KafkaError.NOT_COORDINATOR, "moved"))
    started = time.monotonic()
    results = coordinator_results({"a": _done(1), "b": _done(failed), "c": _pending()}, timeout_s=0.2)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert results["a"] == 1 and results["b"] is failed
    assert isinstance(results["c"], KafkaException) and results["c"].args[0].code() == KafkaError._TIMED_OUT
