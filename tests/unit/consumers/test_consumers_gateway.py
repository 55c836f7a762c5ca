"""The gateway over real HTTP (aiohttp server, fake OpenAI server upstream); records go to a list."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from streamrl.config.consumers import GatewaySettings
from streamrl.consumers.attempts import AttemptResult
from streamrl.consumers.gateway import Gateway
from streamrl.sdk import LLM
from tests.support.fake_inference import FakeInferenceServer, fake_logprob, render_chat, tokenize


class ListSink:
    """Collects records; deliveries succeed (or fail when ``fail`` is set)."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list = []
        self.fail = fail

    def publish(self, topic, key, record, on_ack=None):
        self.records.append((topic, key, record))
        fut = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(RuntimeError("broker said no"))
        else:
            fut.set_result(None)
        return fut


@pytest.fixture(scope="module")
def upstream():
    with FakeInferenceServer(policy_version=11) as srv:
        yield srv


def _run(coro):
    return asyncio.run(coro)


def auth(state) -> dict[str, str]:
    """The headers an OpenAI client sends with the attempt's token as its API key."""
    return {"Authorization": f"Bearer {state.token}"}


async def _with_gateway(upstream_url: str, body, sink=None, **cfg):
    sink = sink if sink is not None else ListSink()
    gw = Gateway(GatewaySettings(upstream_url=upstream_url, port=0, **cfg), sink)
    await gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            return await body(gw, http, sink)
    finally:
        await gw.stop()


def test_unknown_and_finished_attempts_get_404(upstream) -> None:
    async def body(gw, http, sink):
        url = LLM.scoped_base_url(gw.url, "r/0/0", "a1", None) + "/chat/completions"
        req = {"model": "policy", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(url, json=req) as r:
            assert r.status == 404 and "unknown or finished" in (await r.json())["error"]["message"]
        h = auth(gw.registry.open("r/0/0", "a1"))
        async with http.post(url, json=req, headers=h) as r:
            assert r.status == 200
        state = gw.registry.close("r/0/0", "a1")
        async with http.post(url, json=req, headers=h) as r:
            assert r.status == 404
        async with http.get(gw.url + "/v1/models") as r:
            assert r.status == 404
        res: AttemptResult = await state.settle(1.0)
        assert res.request_ids == ["a1-0-0"] and res.errors == []

    _run(_with_gateway(upstream.url, body))


def test_records_choices_agents_and_forced_fields(upstream) -> None:
    async def body(gw, http, sink):
        h = auth(gw.registry.open("r", "a", "default-agent", 2))
        base = LLM.scoped_base_url(gw.url, "r", "a", None)
        msgs = [{"role": "user", "content": "x REPLY:hey"}]
        async with http.post(
            base + "/chat/completions", json={"model": "policy", "messages": msgs, "n": 2}, headers=h
        ) as r:
            out = await r.json()
            assert r.status == 200 and r.headers["X-Policy-Version"] == "11"
            assert [c["message"]["content"] for c in out["choices"]] == ["hey", "hey"]
        assert upstream.last_request["return_token_ids"] is True and upstream.last_request["logprobs"] is True
        named = LLM.scoped_base_url(gw.url, "r", "a", "judge")
        async with http.post(
            named + "/completions", json={"model": "policy", "prompt": "p REPLY:z"}, headers=h
        ) as r:
            assert r.status == 200
        assert upstream.last_request["logprobs"] == 0
        async with http.post(
            base + "/chat/completions",
            json={"model": "policy", "messages": msgs},
            headers={"X-StreamRL-Agent": "via-header", **h},
        ) as r:
            assert r.status == 200
        async with http.get(base + "/models", headers=h) as r:
            assert (await r.json())["data"][0]["id"] == "policy"
        res = await gw.registry.close("r", "a").settle(1.0)
        assert res.request_ids == ["a-0-0", "a-0-1", "a-1-0", "a-2-0"] and not res.errors
        recs = [rec for _, _, rec in sink.records]
        assert {(t, k) for t, k, _ in sink.records} == {("requests", "r")}
        assert [(r.sequence, r.choice_index, r.agent_name) for r in recs] == [
            (0, 0, "default-agent"),
            (0, 1, "default-agent"),
            (1, 0, "judge"),
            (2, 0, "via-header"),
        ]
        assert recs[0].prompt_token_ids == tokenize(render_chat(msgs))
        assert recs[0].response_token_ids == tokenize("hey")
        assert recs[0].response_logprobs == pytest.approx([fake_logprob(t) for t in tokenize("hey")])
        assert recs[2].prompt_token_ids == tokenize("p REPLY:z") and recs[2].response_token_ids == tokenize(
            "z"
        )
        assert all(r.policy_version == 11 and r.latency_ms > 0 for r in recs)

    _run(_with_gateway(upstream.url, body))


def test_upstream_errors_pass_through_unchanged(upstream) -> None:
    async def body(gw, http, sink):
        h = auth(gw.registry.open("r", "a"))
        req = {"model": "policy", "messages": [{"role": "user", "content": "ERROR:400"}]}
        async with http.post(upstream.url + "/chat/completions", json=req) as r:
            direct_status, direct_body = r.status, await r.read()
        async with http.post(
            LLM.scoped_base_url(gw.url, "r", "a", None) + "/chat/completions", json=req, headers=h
        ) as r:
            assert (r.status, await r.read()) == (direct_status, direct_body) == (400, direct_body)
        async with http.post(
            LLM.scoped_base_url(gw.url, "r", "a", None) + "/chat/completions", data=b"{no", headers=h
        ) as r:
            assert r.status == 400 and "not JSON" in (await r.json())["error"]["message"]
        res = await gw.registry.close("r", "a").settle(1.0)
        assert res.request_ids == [] and sink.records == []

    _run(_with_gateway(upstream.url, body))


def test_stream_is_relayed_and_recorded(upstream) -> None:
    async def body(gw, http, sink):
        h = auth(gw.registry.open("r", "a"))
        req = {"model": "policy", "messages": [{"role": "user", "content": "REPLY:abc"}], "stream": True}
        async with http.post(
            LLM.scoped_base_url(gw.url, "r", "a", None) + "/chat/completions", json=req, headers=h
        ) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            raw = await r.read()
        assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"data: ") == 6
        await gw.registry.close("r", "a").settle(1.0)
        ((_, _, rec),) = sink.records
        assert (
            rec.response_token_ids == tokenize("abc")
            and rec.ttft_ms is not None
            and rec.finish_reason == "stop"
            and rec.temperature == 1.0  # the request named none: the default it sampled at
        )

    _run(_with_gateway(upstream.url, body))


@pytest.mark.parametrize("endpoint", ["/chat/completions", "/responses"])
def test_an_agent_that_closes_its_stream_is_no_failure_of_the_service(
    upstream, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    # aiohttp raises ClientConnectionResetError ("Cannot write to closing transport"), an
    # aiohttp.ClientError too, when the agent's connection is closing: once as the agent leaves
    # mid-answer (the call is not recorded), once as it leaves after data: [DONE] (CrewAI's
    # streaming client): that call is complete and recorded. Neither is the service's failure.
    from aiohttp import web

    write, write_eof, calls = web.StreamResponse.write, web.StreamResponse.write_eof, {"n": 0}
    gone = aiohttp.ClientConnectionResetError("Cannot write to closing transport")

    def to_agent(resp) -> bool:  # the gateway's answer, not the fake upstream's (same process)
        return resp._req is not None and resp._req.url.port == calls["port"]

    async def leaves_mid_answer(self, data):
        if to_agent(self):
            calls["n"] += 1
            if calls["n"] == 1:
                raise gone
        return await write(self, data)

    async def leaves_after_done(self, data=b""):
        if to_agent(self):
            raise gone
        return await write_eof(self, data)

    async def body(gw, http, sink):
        calls["port"] = aiohttp.client.URL(gw.url).port
        results = []
        for attempt, (name, patch) in enumerate(
            [("write", leaves_mid_answer), ("write_eof", leaves_after_done)]
        ):
            with monkeypatch.context() as mp:
                mp.setattr(web.StreamResponse, name, patch)
                h = auth(gw.registry.open("r", f"a{attempt}"))
                req = {"model": "policy", "stream": True}
                if endpoint == "/responses":
                    req["input"] = "REPLY:abc"
                else:
                    req["messages"] = [{"role": "user", "content": "REPLY:abc"}]
                url = LLM.scoped_base_url(gw.url, "r", f"a{attempt}", None) + endpoint
                try:
                    async with http.post(url, json=req, headers=h) as r:
                        await r.read()
                except aiohttp.ClientError:
                    pass  # the patched server cut the answer short
            results.append(await gw.registry.close("r", f"a{attempt}").settle(1.0))
        return results

    mid, after = _run(_with_gateway(upstream.url, body))
    assert mid.unrecovered is None and mid.infra_failures == 0 and mid.request_ids == [], mid
    assert after.unrecovered is None and after.infra_failures == 0 and len(after.request_ids) == 1, after


def test_unrecordable_responses_and_failed_deliveries_fail_the_attempt(upstream) -> None:
    async def body(gw, http, sink):
        h = auth(gw.registry.open("r", "a"))
        req = {"model": "policy", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(
            LLM.scoped_base_url(gw.url, "r", "a", None) + "/chat/completions", json=req, headers=h
        ) as r:
            assert r.status == 200  # the agent still gets its answer
        res = await gw.registry.close("r", "a").settle(1.0)
        return res

    res = _run(_with_gateway(upstream.url, body, force_token_ids=False))
    assert res.errors and "no token_ids" in res.errors[0]
    res = _run(_with_gateway(upstream.url, body, sink=ListSink(fail=True)))
    assert res.errors and "not delivered" in res.errors[0] and "broker said no" in res.errors[0]


def test_unreachable_upstream_is_502() -> None:
    async def body(gw, http, sink):
        h = auth(gw.registry.open("r", "a"))
        req = {"model": "policy", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(
            LLM.scoped_base_url(gw.url, "r", "a", None) + "/chat/completions", json=req, headers=h
        ) as r:
            assert r.status == 502 and orjson.loads(await r.read())["error"]["type"] == "upstream_error"

    _run(_with_gateway("http://127.0.0.1:9/v1", body))
