"""The CPU inference server behind its guard (admin and metrics tokens, body bound) over HTTPS.

A real server (uvicorn, the tiny model) is started the way ``streamrl inference`` starts it:
``guard_app`` around the FastAPI app, the development CA's certificate. Every rejection is checked
with a real client: no or a wrong admin token, a wrong metrics token, a body over the bound,
over-long fields, plain HTTP to the HTTPS port, a client that does not trust the CA.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import openai
import pytest

from streamrl.inference.guard import guard_app
from streamrl.inference.protocol import MAX_STOP, MAX_STOP_CHARS
from streamrl.inference.server import InferenceService, ServerOptions, ServerThread
from streamrl.security import Credentials
from streamrl.tls import DevCA, make_dev_ca

ADMIN, METRICS = "admin-secret-token", "metrics-secret-token"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return make_dev_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server(inference_model_dir: Path, ca: DevCA):
    svc = InferenceService(str(inference_model_dir), ServerOptions(served_model_name="policy"))
    svc.start()
    rejected: list[tuple[str, int]] = []
    app = guard_app(
        svc.app(),
        Credentials(admin_token=ADMIN, metrics_token=METRICS),
        max_body_bytes=8192,
        on_reject=lambda path, status: rejected.append((path, status)),
    )
    thread = ServerThread(app, cert_file=str(ca.cert_file), key_file=str(ca.key_file)).start()
    yield thread.url, rejected
    thread.stop()
    svc.stop()


def _trusting(ca: DevCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_file))


def test_the_api_needs_the_admin_token(server, ca: DevCA) -> None:
    url, rejected = server
    assert url.startswith("https://")
    http = httpx.Client(verify=_trusting(ca))
    assert http.get(url + "/health").status_code == 200  # open: probes and load balancers
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {METRICS}"}):
        r = http.get(url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "security.admin_token" in r.json()["error"]["message"]
    assert ("/v1/models", 401) in rejected
    bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0, http_client=http)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(
            model="policy", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    good = openai.OpenAI(base_url=url + "/v1", api_key=ADMIN, max_retries=0, http_client=http)
    out = good.chat.completions.create(
        model="policy", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert out.choices[0].finish_reason in ("length", "stop")


def test_metrics_need_the_metrics_token(server, ca: DevCA) -> None:
    url, _ = server
    http = httpx.Client(verify=_trusting(ca))
    assert http.get(url + "/metrics").status_code == 401
    assert http.get(url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 401
    r = http.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS}"})
    assert r.status_code == 200 and "streamrl_inference_requests_total" in r.text


def test_bodies_and_fields_are_bounded(server, ca: DevCA) -> None:
    url, rejected = server
    http = httpx.Client(verify=_trusting(ca), headers={"Authorization": f"Bearer {ADMIN}"})
    big = {"model": "policy", "messages": [{"role": "user", "content": "x" * 9000}]}
    r = http.post(url + "/v1/chat/completions", json=big)
    assert r.status_code == 413 and "inference.max_body_bytes" in r.json()["error"]["message"]
    assert ("/v1/chat/completions", 413) in rejected

    def chunks():
        yield b'{"model": "policy", "prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = http.post(url + "/v1/completions", content=chunks())  # chunked: counted while read
    assert r.status_code == 413
    many = {"model": "policy", "prompt": "a", "max_tokens": 1, "stop": ["s"] * (MAX_STOP + 1)}
    r = http.post(url + "/v1/completions", json=many)
    assert r.status_code == 400 and f"at most {MAX_STOP} stop strings" in r.json()["error"]["message"]
    long = {"model": "policy", "prompt": "a", "max_tokens": 1, "stop": "z" * (MAX_STOP_CHARS + 1)}
    r = http.post(url + "/v1/completions", json=long)
    assert r.status_code == 400 and "stop" in r.json()["error"]["message"]
    r = http.post(url + "/v1/completions", json={"model": "policy", "prompt": "a", "n": 129})
    assert (
        r.status_code == 400
        and "body.n: Input should be less than or equal to 128" in r.json()["error"]["message"]
    )


def test_plain_http_and_untrusted_clients_are_refused(server) -> None:
    url, _ = server
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the HTTPS port: no HTTP answer
        httpx.get(url.replace("https://", "http://") + "/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/health", timeout=5)  # the system's CAs do not know the development CA
