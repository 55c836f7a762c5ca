"""Gateway benchmark: added latency of the translated APIs (Responses, Anthropic Messages) next to chat.

    .venv/bin/python -m bench.translation [--calls 1000]

Processes: the fake OpenAI-compatible server (``tests.support.fake_inference``, answers at once) and a
standalone gateway (``streamrl gateway``, recording every call to Kafka) run separately; this client
makes sequential calls, alternating a direct call to the fake server with the same call through the
gateway. For chat the direct call is the agent's request; for ``/v1/responses`` and ``/v1/messages``
it is the chat completion the gateway sends upstream for it (translated and with the training
fields forced, so both sides do the same upstream work). Added latency = gateway call - the direct
call next to it, per call; p50/p99 over ``--calls`` pairs, plain and streamed (an 8-token reply,
one chunk per token). Uses ``$STREAMRL_BOOTSTRAP_SERVERS`` if set, else a throw-away local broker.
Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from typing import Any

from bench.gateway import _pct, standalone_gateway

REPLY = "hello REPLY:abcdefgh"


def _requests() -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """API -> (gateway endpoint, the agent's body, the chat body the gateway sends upstream), not streamed."""
    from streamrl.consumers import messages_api, responses_api
    from streamrl.schemas.inference_http import force_training_fields

    chat = {"model": "policy", "messages": [{"role": "user", "content": REPLY}]}
    responses = {"model": "policy", "input": REPLY}
    messages = {"model": "policy", "max_tokens": 64, "messages": [{"role": "user", "content": REPLY}]}
    return {
        "chat (pass-through)": ("chat/completions", chat, force_training_fields(dict(chat), chat=True)),
        "responses (translated)": (
            "responses",
            responses,
            force_training_fields(responses_api.translate_request(responses, lambda _: None)[0], chat=True),
        ),
        "messages (translated)": (
            "messages",
            messages,
            force_training_fields(messages_api.translate_request(messages)[0], chat=True),
        ),
    }


def _streamed(agent: dict[str, Any], upstream: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {**agent, "stream": True}, {**upstream, "stream": True, "stream_options": {"include_usage": True}}


async def _measure(gateway_url: str, upstream: str, calls: int) -> list[dict[str, Any]]:
    import aiohttp
    import orjson

    from streamrl.sdk import LLM

    rows = []
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gateway_url}/control/attempts",
            data=orjson.dumps({"rollout_id": "bench/0/0", "attempt_id": "tr", "policy_version": 0}),
        ) as r:
            r.raise_for_status()
            token = (await r.json())["token"]
        base = LLM.scoped_base_url(gateway_url, "bench/0/0", "tr", None)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

        async def one(url: str, body: bytes) -> float:
            t0 = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                assert r.status == 200, (url, r.status, await r.text())
            return time.perf_counter() - t0

        for api, (endpoint, agent_body, upstream_body) in _requests().items():
            for stream in (False, True):
                a, u = _streamed(agent_body, upstream_body) if stream else (agent_body, upstream_body)
                through, direct = orjson.dumps(a), orjson.dumps(u)
                for _ in range(100):  # warm up both paths and the pools
                    await one(f"{upstream}/chat/completions", direct)
                    await one(f"{base}/{endpoint}", through)
                d, g, added = [], [], []
                for _ in range(calls):
                    x = await one(f"{upstream}/chat/completions", direct)
                    y = await one(f"{base}/{endpoint}", through)
                    d.append(x)
                    g.append(y)
                    added.append(y - x)
                ms = 1e3
                rows.append(
                    {
                        "api": api,
                        "stream": stream,
                        "direct_p50_ms": _pct(d, 0.5) * ms,
                        "gateway_p50_ms": _pct(g, 0.5) * ms,
                        "added_p50_ms": statistics.median(added) * ms,
                        "added_p99_ms": _pct(added, 0.99) * ms,
                    }
                )
        async with http.post(
            f"{gateway_url}/control/attempts/close",
            data=orjson.dumps({"rollout_id": "bench/0/0", "attempt_id": "tr", "timeout_s": 60}),
        ) as r:
            closed = await r.json()
    expected = len(rows) * (calls + 100)
    recorded, errors = len(closed["request_ids"]), len(closed["errors"])
    assert recorded == expected and errors == 0, f"{recorded} of {expected} calls recorded, {errors} errors"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000, help="pairs of calls per API and mode")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with standalone_gateway() as (_settings, upstream, gateway_url):
        load = os.getloadavg()[0]
        rows = asyncio.run(_measure(gateway_url, upstream, args.calls))
        print(
            f"gateway added latency, {args.calls} sequential pairs per row (direct chat call vs the same "
            f"through the gateway, recorded to Kafka), {os.cpu_count()} cores, 1-min load {load:.1f} at start:"
        )
        print(
            "| API | streamed | direct p50 (ms) | through the gateway p50 (ms) | added p50 (ms) | added p99 (ms) |"
        )
        print("|---|---|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['api']} | {'yes' if r['stream'] else 'no'} | {r['direct_p50_ms']:.2f} | "
                f"{r['gateway_p50_ms']:.2f} | {r['added_p50_ms']:.2f} | {r['added_p99_ms']:.2f} |"
            )


if __name__ == "__main__":
    main()
