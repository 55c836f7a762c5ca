"""The gateway's credentials, TLS and bounds, over real HTTP (aiohttp gateway, fake OpenAI server).

Every rejection a caller can meet: no token, another attempt's token, an ended attempt, a bad admin
token on the control routes, a body or ``n`` over the bounds, plain HTTP to the HTTPS gateway, an
HTTPS client that does not trust the gateway's CA. Also: the agent's token never goes upstream.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import openai
import pytest

from streamrl.config.consumers import GatewaySettings
from streamrl.config.security import ServerTLSSettings
from streamrl.consumers.gateway import Gateway
from streamrl.consumers.gateway_client import GatewayControlError, RemoteGatewayClient
from streamrl.sdk import LLM
from streamrl.security import Credentials, server_ssl_context
from streamrl.tls import DevCA, make_dev_ca
from tests.support.fake_inference import FakeInferenceServer

ADMIN = "admin-token-for-tests"
REQ = {"model": "policy", "messages": [{"role": "user", "content": "REPLY:ok"}]}


@pytest.fixture(scope="module")
def upstream():
    with FakeInferenceServer(policy_version=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return make_dev_ca(tmp_path_factory.mktemp("ca"))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _gateway(upstream_url: str, tls: ssl.SSLContext | None = None, **cfg) -> Gateway:
    gw = Gateway(
        GatewaySettings(upstream_url=upstream_url, port=0, **cfg),
        None,
        control=True,
        credentials=Credentials(admin_token=ADMIN),
    )
    await gw.start(ssl_context=tls)
    return gw


def test_calls_need_their_own_attempts_token(upstream) -> None:
    async def main() -> None:
        gw = await _gateway(upstream.url)
        try:
            a = gw.registry.open("task/0/0", "a1")
            b = gw.registry.open("task/0/1", "b1")
            assert len(a.token) >= 40 and a.token != b.token  # 256 random bits, url-safe
            url = LLM.scoped_base_url(gw.url, "task/0/0", "a1", None) + "/chat/completions"
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json=REQ) as r:  # no token
                    body = await r.json()
                    assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
                    assert body["error"]["type"] == "authentication_error"
                    assert "attempt's token" in body["error"]["message"]
                async with http.post(url, json=REQ, headers=_bearer(b.token)) as r:  # another attempt's
                    assert r.status == 401
                async with http.post(url, json=REQ, headers=_bearer(ADMIN)) as r:  # not even the admin's
                    assert r.status == 401
                async with http.post(url, json=REQ, headers=_bearer(a.token)) as r:
                    assert r.status == 200
                # the agent's key stays at the gateway: upstream gets the admin token
                assert upstream.last_authorization == f"Bearer {ADMIN}"
                async with http.post(url, json=REQ, headers={"x-api-key": a.token}) as r:  # Anthropic style
                    assert r.status == 200
                gw.registry.close("task/0/0", "a1")
                async with http.post(url, json=REQ, headers=_bearer(a.token)) as r:  # ended
                    assert r.status == 404 and "unknown or finished" in (await r.json())["error"]["message"]
        finally:
            await gw.stop()

    asyncio.run(main())


def test_the_openai_and_anthropic_clients_get_401_without_the_token(upstream) -> None:
    import threading

    import anthropic

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        gw = asyncio.run_coroutine_threadsafe(_gateway(upstream.url), loop).result()

        async def _open():
            return gw.registry.open("r/0/0", "a", None, 0).token

        token = asyncio.run_coroutine_threadsafe(_open(), loop).result()
        base = LLM.scoped_base_url(gw.url, "r/0/0", "a", None)
        with pytest.raises(openai.AuthenticationError, match="attempt's token"):
            openai.OpenAI(base_url=base, api_key="guessed", max_retries=0).chat.completions.create(**REQ)
        ok = openai.OpenAI(base_url=base, api_key=token, max_retries=0).chat.completions.create(**REQ)
        assert ok.choices[0].message.content == "ok"
        client = anthropic.Anthropic(base_url=base.removesuffix("/v1"), api_key="guessed", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as exc:
            client.messages.create(model="policy", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        assert exc.value.body["error"]["type"] == "authentication_error"  # Anthropic's error format
        asyncio.run_coroutine_threadsafe(gw.stop(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_control_routes_need_the_admin_token(upstream) -> None:
    async def main() -> None:
        gw = await _gateway(upstream.url)
        try:
            body = {"rollout_id": "r/0/0", "attempt_id": "x"}
            async with aiohttp.ClientSession() as http:
                for headers in ({}, _bearer("wrong"), {"x-api-key": ADMIN}):
                    async with http.post(gw.url + "/control/attempts", json=body, headers=headers) as r:
                        assert r.status == 401 and "admin token" in (await r.json())["error"]["message"]
                    async with http.post(gw.url + "/control/attempts/close", json=body, headers=headers) as r:
                        assert r.status == 401
                assert len(gw.registry) == 0
            # the worker's client sends the admin token and hands the agent the attempt's token
            client = RemoteGatewayClient(gw.url, Credentials(admin_token=ADMIN))
            token = await client.open("r/0/0", "x", None, 0)
            assert token == gw.registry.get("r/0/0", "x").token
            res = await client.close("r/0/0", "x", 1.0)
            assert res.errors == []
            await client.aclose()
            anonymous = RemoteGatewayClient(gw.url)
            with pytest.raises(GatewayControlError, match="HTTP 401"):
                await anonymous.open("r/0/1", "y", None, 0)
            await anonymous.aclose()
        finally:
            await gw.stop()

    asyncio.run(main())


def test_body_and_choices_are_bounded(upstream) -> None:
    async def main() -> None:
        gw = await _gateway(upstream.url, max_body_bytes=4096, max_choices=4)
        try:
            h = _bearer(gw.registry.open("r/0/0", "a").token)
            base = LLM.scoped_base_url(gw.url, "r/0/0", "a", None)
            big = {**REQ, "messages": [{"role": "user", "content": "x" * 5000}]}
            async with aiohttp.ClientSession() as http:
                async with http.post(base + "/chat/completions", json=big, headers=h) as r:
                    assert r.status == 413
                    assert "gateway.max_body_bytes" in (await r.json())["error"]["message"]

                async def chunked():
                    yield b'{"model": "policy", "messages": [{"role": "user", "content": "'
                    for _ in range(10):
                        yield b"x" * 1000
                    yield b'"}]}'

                async with http.post(base + "/chat/completions", data=chunked(), headers=h) as r:
                    assert r.status == 413  # no Content-Length: counted while read
                async with http.post(base + "/chat/completions", json={**REQ, "n": 5}, headers=h) as r:
                    msg = (await r.json())["error"]["message"]
                    assert r.status == 400 and "n=5" in msg and "gateway.max_choices" in msg
                async with http.post(base + "/chat/completions", json={**REQ, "n": 4}, headers=h) as r:
                    assert r.status == 200 and len((await r.json())["choices"]) == 4
        finally:
            await gw.stop()

    asyncio.run(main())


def test_standalone_gateway_serves_https_only(upstream, ca: DevCA, tmp_path: Path) -> None:
    async def main() -> None:
        tls = server_ssl_context(ServerTLSSettings(cert_file=ca.cert_file, key_file=ca.key_file))
        gw = await _gateway(upstream.url, tls)
        try:
            assert gw.url.startswith("https://127.0.0.1:")
            token = gw.registry.open("r/0/0", "a").token
            https_url = LLM.scoped_base_url(gw.url, "r/0/0", "a", None) + "/chat/completions"
            plain_url = https_url.replace("https://", "http://")
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                    async with http.post(plain_url, json=REQ, headers=_bearer(token)) as r:
                        await r.read()
                with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the CA is not trusted
                    async with http.post(https_url, json=REQ, headers=_bearer(token)) as r:
                        await r.read()
                trusted = ssl.create_default_context(cafile=str(ca.ca_file))
                async with http.post(https_url, json=REQ, headers=_bearer(token), ssl=trusted) as r:
                    assert r.status == 200
            # the worker's control client verifies with security.ca_file; the SDK's clients too
            client = RemoteGatewayClient(gw.url, Credentials(admin_token=ADMIN, ca_file=ca.ca_file))
            token2 = await client.open("r/0/1", "b", None, 0)
            await client.aclose()
            llm = LLM(
                base_url=LLM.scoped_base_url(gw.url, "r/0/1", "b", None),
                model="policy",
                api_key=token2,
                ca_file=str(ca.ca_file),
            )
            out = await llm.async_openai_client(max_retries=0).chat.completions.create(**REQ)
            assert out.choices[0].message.content == "ok"
            untrusting = RemoteGatewayClient(gw.url, Credentials(admin_token=ADMIN))
            with pytest.raises(GatewayControlError, match="unreachable"):
                await untrusting.open("r/0/2", "c", None, 0)
            await untrusting.aclose()
        finally:
            await gw.stop()

    asyncio.run(main())
