"""The benchmark's vLLM-like server over real sockets: keep-alive, vLLM token fields, errors."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from bench.coordination.fake_vllm import VOCAB_SIZE, FakeVLLM, fake_tokenize, render_prompt, reply_tokens


def test_tokenizer_and_reply_shapes() -> None:
    ids = fake_tokenize("abcdefghi")  # 9 bytes -> 3 tokens
    assert len(ids) == 3 and all(0 <= t < VOCAB_SIZE for t in ids)
    text, rids, lps = reply_tokens(16)
    assert len(rids) == len(lps) == 16 and len(text.split()) == 16
    assert all(lp < 0 for lp in lps)
    assert render_prompt([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == "user: hi\n"


async def _raw(port: int, requests: list[bytes]) -> list[tuple[int, dict]]:
    """Send requests on ONE connection (keep-alive) and parse the responses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for req in requests:
        writer.write(req)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
        )
        out.append((status, json.loads(await reader.readexactly(length))))
    writer.close()
    return out


def _post(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(data),
        data,
    )


def test_keep_alive_and_vllm_fields() -> None:
    async def main() -> list[tuple[int, dict]]:
        server = FakeVLLM(policy_version=7, response_tokens=5)
        await server.start()
        try:
            msgs = [{"role": "user", "content": "What is 6 times 7?"}]
            return await _raw(
                server.port, [_post({"model": "m", "messages": msgs})] * 3 + [_post({"stream": True})]
            )
        finally:
            server.close()

    res = asyncio.run(main())
    assert [s for s, _ in res] == [200, 200, 200, 400]
    body = res[0][1]
    choice = body["choices"][0]
    assert body["policy_version"] == 7 and body["model"] == "m"
    assert body["prompt_token_ids"] == fake_tokenize("user: What is 6 times 7?\n")
    assert len(choice["token_ids"]) == len(choice["logprobs"]["content"]) == 5
    assert "does not stream" in res[3][1]["error"]["message"]


def test_bad_requests_get_openai_errors() -> None:
    async def main() -> list[tuple[int, dict]]:
        server = FakeVLLM()
        await server.start()
        try:
            bad_json = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 3\r\n\r\n{x}"
            unknown = b"GET /v1/embeddings HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
            return await _raw(server.port, [bad_json, unknown, _post({"messages": [], "n": 2})])
        finally:
            server.close()

    (s1, b1), (s2, b2), (s3, b3) = asyncio.run(main())
    assert (s1, s2, s3) == (400, 404, 400)
    assert "not JSON" in b1["error"]["message"]
    assert "/v1/embeddings" in b2["error"]["message"]
    assert "n=1" in b3["error"]["message"]


@pytest.mark.timeout(60)
def test_official_async_client_reads_token_ids_and_logprobs() -> None:
    async def main() -> tuple[object, int]:
        server = FakeVLLM(response_tokens=8)
        url = await server.start()
        try:
            client = openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
            outs = await asyncio.gather(
                *(client.chat.completions.create(model="policy", messages=[{"role": "user", "content": f"q{i}"}])
                  for i in range(20))
            )  # fmt: skip
            await client.close()
            return outs[0], server.calls
        finally:
            server.close()

    out, calls = asyncio.run(main())
    assert calls == 20
    assert out.choices[0].message.content == reply_tokens(8)[0]  # type: ignore[attr-defined]
    assert len(out.choices[0].logprobs.content) == 8  # type: ignore[attr-defined]
    assert out.model_extra["prompt_token_ids"] == fake_tokenize("user: q0\n")  # type: ignore[attr-defined]
