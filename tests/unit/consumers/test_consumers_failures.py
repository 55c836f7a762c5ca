"""Failure classification (whose failure an attempt was) and the inference circuit breaker."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers.attempts import AttemptResult, upstream_failure_kind
from streamrl.consumers.breaker import InferenceBreaker
from streamrl.consumers.failures import classify
from streamrl.consumers.gateway import Gateway
from streamrl.consumers.runner import Outcome
from streamrl.schemas import FailureKind
from streamrl.sdk import LLM
from tests.support.fake_inference import FakeInferenceServer
from tests.support.kafka import free_port

INFRA, REQ, AGENT = FailureKind.infrastructure, FailureKind.request, FailureKind.agent


def result(**kw) -> AttemptResult:
    return AttemptResult(kw.pop("request_ids", []), {}, kw.pop("errors", []), **kw)


OK = Outcome("succeeded", 1.0, error=None)
RAISED = Outcome("failed", error="Traceback ... openai.InternalServerError: 502")
TIMEOUT = Outcome("timeout", error="rollout exceeded its time limit of 5 s")
UNREACHABLE = ("infrastructure", "inference service call failed: ClientConnectorError(...)")
REFUSED = ("request", "the inference service answered HTTP 400: maximum context length")


@pytest.mark.parametrize(
    ("outcome", "res", "kw", "status", "kind", "in_error"),
    [
        (OK, result(calls_ok=2), {}, "succeeded", None, None),
        # a 502 the agent's client retried past: no failure at all
        (OK, result(calls_ok=1, infra_failures=1), {}, "succeeded", None, None),
        # the agent raised because the service was down: not the task's failure
        (RAISED, result(infra_failures=3, unrecovered=UNREACHABLE), {}, "failed", INFRA, "last call"),
        # the agent caught the error and returned a reward anyway: the reward says nothing
        (OK, result(calls_ok=1, infra_failures=1, unrecovered=UNREACHABLE), {}, "failed", INFRA, "Connector"),
        # an exception of the agent's own, with a recovered infra error earlier
        (RAISED, result(calls_ok=1, infra_failures=1), {}, "failed", AGENT, "InternalServerError"),
        (RAISED, result(), {}, "failed", AGENT, "Traceback"),
        (TIMEOUT, result(calls_ok=4), {}, "timeout", AGENT, "time limit"),
        # a deterministic 4xx the agent did not recover from
        (RAISED, result(unrecovered=REFUSED), {}, "failed", REQ, "HTTP 400"),
        # ... and one it handled (returned a reward): the task's business
        (OK, result(calls_ok=1, unrecovered=REFUSED), {}, "succeeded", None, None),
        # records not delivered: the Trajectory cannot name them
        (
            OK,
            result(calls_ok=1, errors=["1 LLMRequest record(s) not acknowledged"]),
            {},
            "failed",
            INFRA,
            "ack",
        ),
        # the worker stopped it, or could not start it
        (TIMEOUT, result(), {"interrupted": True}, "timeout", INFRA, "time limit"),
        # a call hung at the time limit on a service that then failed its probe
        (TIMEOUT, result(in_progress=1), {"healthy": False}, "timeout", INFRA, "health probe"),
        (TIMEOUT, result(in_progress=1), {"healthy": True}, "timeout", AGENT, "time limit"),
        # the agent returned while its calls still ran: its bug
        (
            OK,
            result(in_progress=1, in_progress_error="1 LLM call(s) still in progress"),
            {},
            "failed",
            AGENT,
            "still",
        ),
    ],
)
def test_classify(outcome, res, kw, status, kind, in_error) -> None:
    got = classify(outcome, res, **kw)
    assert (got.status, got.failure_kind) == (status, kind)
    if in_error is None:
        assert got.error is None
    else:
        assert in_error in got.error


def test_upstream_status_kinds() -> None:
    assert [upstream_failure_kind(s) for s in (500, 502, 503, 504, 408, 429)] == ["infrastructure"] * 6
    assert [upstream_failure_kind(s) for s in (400, 401, 404, 413, 422)] == ["request"] * 5


# ---------------------------------------------------------------------------------------- breaker


class Probe:
    def __init__(self) -> None:
        self.healthy = True
        self.calls = 0
        self.probed = asyncio.Event()

    async def __call__(self) -> tuple[bool, str]:
        self.calls += 1
        self.probed.set()
        return self.healthy, "HTTP 200" if self.healthy else "HTTP 503"


def test_breaker_opens_after_failures_in_a_row_and_closes_on_a_healthy_probe() -> None:
    async def main() -> None:
        probe, closed = Probe(), asyncio.Event()
        br = InferenceBreaker(
            probe, failures_to_open=3, probe_initial_s=0.01, probe_max_s=0.02, on_close=closed.set
        )
        br.record(True, False)  # one failure: a probe at once, healthy: nothing changes
        await probe.probed.wait()
        await asyncio.sleep(0)
        assert not br.is_open and br.consecutive == 1
        br.record(False, True)  # an answered attempt resets the count
        assert br.consecutive == 0
        probe.healthy = False
        probe.probed.clear()
        br.record(True, False)
        br.record(True, False)
        br.record(True, False)  # three in a row: open (the check probe may open it first)
        assert br.is_open and br.trips == 1
        for _ in range(3):  # probes keep failing while it is down
            probe.probed.clear()
            await probe.probed.wait()
        assert br.is_open
        probe.healthy = True
        await asyncio.wait_for(closed.wait(), 5)
        assert not br.is_open and br.consecutive == 0
        await br.aclose()

    asyncio.run(main())


def test_breaker_opens_on_one_failure_when_the_probe_fails() -> None:
    async def main() -> None:
        probe = Probe()
        probe.healthy = False
        br = InferenceBreaker(probe, failures_to_open=3, probe_initial_s=5, probe_max_s=5)
        br.record(True, False)
        await probe.probed.wait()
        await asyncio.sleep(0)
        assert br.is_open and br.last_detail == "HTTP 503"
        await br.aclose()
        with pytest.raises(ValueError, match="failures_to_open"):
            InferenceBreaker(probe, failures_to_open=0)

    asyncio.run(main())


# ---------------------------------------------------------------------------------------- gateway


def test_gateway_notes_each_upstream_outcome_and_probes_the_service() -> None:
    async def main() -> None:
        with FakeInferenceServer() as upstream:
            gw = Gateway(GatewaySettings(upstream_url=upstream.url, port=0), None)
            await gw.start()
            try:
                async with aiohttp.ClientSession() as http:

                    async def call(text: str) -> int:
                        base = LLM.scoped_base_url(gw.url, "r/0/0", "a", None)
                        req = {"model": "p", "messages": [{"role": "user", "content": text}]}
                        headers = {"Authorization": f"Bearer {state.token}"}
                        async with http.post(base + "/chat/completions", json=req, headers=headers) as r:
                            await r.read()
                            return r.status

                    state = gw.registry.open("r/0/0", "a")
                    assert await call("ERROR:503") == 503
                    assert state.unrecovered[0] == "infrastructure" and state.infra_failures == 1
                    assert await call("hi") == 200
                    assert state.unrecovered is None and state.calls_ok == 1  # recovered
                    assert await call("ERROR:400") == 400
                    res = await gw.registry.close("r/0/0", "a").settle(1.0)
                    assert res.unrecovered[0] == "request" and "HTTP 400" in res.unrecovered[1]
                    assert (res.calls_ok, res.infra_failures) == (1, 1)

                    assert await gw.probe_upstream() == (True, "HTTP 200")
                    upstream.healthy = False
                    assert await gw.probe_upstream() == (False, "HTTP 503")
                    async with http.get(gw.url + "/healthz/upstream") as r:
                        assert r.status == 503 and (await r.json())["healthy"] is False
            finally:
                await gw.stop()
        # the service gone: unreachable is an infrastructure failure of the call, and of the probe
        gw = Gateway(GatewaySettings(upstream_url=f"http://127.0.0.1:{free_port()}/v1", port=0), None)
        await gw.start()
        try:
            state = gw.registry.open("r/0/1", "b")
            async with aiohttp.ClientSession() as http:
                url = LLM.scoped_base_url(gw.url, "r/0/1", "b", None) + "/chat/completions"
                headers = {"Authorization": f"Bearer {state.token}"}
                async with http.post(url, json={"model": "p", "messages": []}, headers=headers) as r:
                    assert r.status == 502
            assert state.unrecovered[0] == "infrastructure" and "ClientConnectorError" in state.unrecovered[1]
            healthy, detail = await gw.probe_upstream()
            assert not healthy and "unreachable" in detail
        finally:
            await gw.stop()

    asyncio.run(main())
