"""Secrets (sources, redaction in ``config show`` and in logs), metrics tokens, the development CA."""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from streamrl.config import load_settings
from streamrl.errors import ConfigError
from streamrl.metrics import serve_metrics
from streamrl.security import (
    Credentials,
    bearer_token,
    credentials,
    redact_logs,
    redacted_settings,
    secret_values,
    token_matches,
)
from streamrl.tls import make_dev_ca
from tests.support.kafka import free_port

ROOT = Path(__file__).resolve().parents[3]


def test_tokens_come_from_the_config_the_environment_or_a_file(tmp_path: Path, monkeypatch) -> None:
    assert credentials(load_settings(None).security) == Credentials()
    s = load_settings(None, security={"admin_token": " tok-1 "})
    assert credentials(s.security).admin_token == "tok-1"
    monkeypatch.setenv("STREAMRL_SECURITY__METRICS_TOKEN", "from-env")
    assert credentials(load_settings(None).security).metrics_token == "from-env"
    monkeypatch.delenv("STREAMRL_SECURITY__METRICS_TOKEN")
    f = tmp_path / "admin"
    f.write_text("from-file\n")
    creds = credentials(load_settings(None, security={"admin_token_file": str(f)}).security)
    assert creds.admin_token == "from-file" and "from-file" not in repr(creds)
    with pytest.raises(ConfigError, match=r"admin_token_file=.*cannot read"):
        credentials(load_settings(None, security={"admin_token_file": str(tmp_path / "nope")}).security)
    f.write_text("  \n")
    with pytest.raises(ConfigError, match="empty token"):
        credentials(load_settings(None, security={"admin_token_file": str(f)}).security)
    with pytest.raises(ConfigError, match="set admin_token or admin_token_file, not both"):
        load_settings(None, security={"admin_token": "a", "admin_token_file": str(f)})
    with pytest.raises(ConfigError, match="cert_file and key_file must be set together"):
        load_settings(None, gateway={"tls": {"cert_file": "c.pem"}})


def test_bearer_tokens_are_read_as_clients_send_them() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer abc ") == "abc"
    assert bearer_token(None, "k") == "k" and bearer_token("Basic xyz") is None
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches(None, "abc")


SECRETS = {
    "STREAMRL_KAFKA__SASL_PASSWORD": "sasl-pass-9f3",
    "STREAMRL_KAFKA__SSL_KEY_PASSWORD": "key-pass-77a",
    "STREAMRL_SECURITY__ADMIN_TOKEN": "admin-tok-0c1",
    "STREAMRL_SECURITY__METRICS_TOKEN": "metrics-tok-5d2",
    "STREAMRL_GATEWAY__UPSTREAM_API_KEY": "upstream-key-e4b",
}


def test_config_show_prints_no_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "kafka:\n"
        "  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n  sasl_username: alice\n"
        "  client_properties: {sasl.oauthbearer.client.secret: oauth-secret-31, linger.ms: '7'}\n"
        "  local: {listener_security: SASL_SSL, scram_users: {admin: scram-pass-88}}\n"
        "dev: {stage_env: {worker: {STREAMRL_KAFKA__SASL_PASSWORD: worker-pass-61, OMP_NUM_THREADS: '1'}}}\n"
    )
    env = {**os.environ, **SECRETS}
    out = subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "config", "show", "-c", str(cfg)],
        capture_output=True, text=True, env=env, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    for secret in [*SECRETS.values(), "oauth-secret-31", "scram-pass-88", "worker-pass-61"]:
        assert secret not in out
    assert (
        out.count("'**********'") >= 8
        and "linger.ms: '7'" in out
        and "OMP_NUM_THREADS: '1'" in out
        and "sasl_username: alice" in out
    )


def test_log_lines_never_show_a_secret(monkeypatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    settings = load_settings(None, kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"})
    assert set(SECRETS.values()) <= set(secret_values(settings))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redact_logs(settings)
        log = logging.getLogger("some.module")
        log.warning("connecting with %s and %s", SECRETS["STREAMRL_KAFKA__SASL_PASSWORD"], "x")
        try:
            raise RuntimeError(f"bad token {SECRETS['STREAMRL_SECURITY__ADMIN_TOKEN']}")
        except RuntimeError:
            log.exception("failed")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert "connecting with ********** and x" in text and "bad token **********" in text
    assert not any(s in text for s in SECRETS.values())
    data = redacted_settings(settings)
    assert data["kafka"]["sasl_password"] == data["security"]["admin_token"] == "**********"


def test_metrics_endpoints_can_require_a_token() -> None:
    port = free_port()
    assert serve_metrics(port, "127.0.0.1", token="scrape-token")
    url = f"http://127.0.0.1:{port}/metrics"
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=5)
    assert exc.value.code == 401 and exc.value.headers["WWW-Authenticate"] == "Bearer"
    req = urllib.request.Request(url, headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=5)
    req = urllib.request.Request(url, headers={"Authorization": "Bearer scrape-token"})
    body = urllib.request.urlopen(req, timeout=5).read().decode()
    assert "streamrl_dlq_records_total" in body or "python_info" in body


def test_dev_ca_makes_a_verifiable_chain_with_private_keys(tmp_path: Path) -> None:
    import ssl

    made = make_dev_ca(tmp_path / "ca", ("localhost", "127.0.0.1", "node-1.example"), common_name="node")
    for key in (made.ca_key_file, made.key_file, made.keystore_file, made.keystore_password_file):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "node-1.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.subject.rfc4514_string() == "CN=node,O=StreamRL development"
    ssl.create_default_context(cafile=str(made.ca_file)).load_cert_chain(made.cert_file, made.key_file)
    from cryptography.hazmat.primitives.serialization import pkcs12

    key, leaf, extra = pkcs12.load_key_and_certificates(
        made.keystore_file.read_bytes(), made.keystore_password.encode()
    )
    assert leaf == cert and key is not None and len(extra) == 1
    out = subprocess.run(
        [sys.executable, "-m", "streamrl.cli", "tls", "dev-ca", "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    assert "ca.pem" in out and (tmp_path / "cli" / "server.key").is_file()
    ca = (tmp_path / "cli" / "ca.pem").read_bytes()
    again = [sys.executable, "-m", "streamrl.cli", "tls", "dev-ca", "--out", str(tmp_path / "cli")]
    refused = subprocess.run(again, capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    assert (tmp_path / "cli" / "ca.pem").read_bytes() == ca  # kept
    (tmp_path / "cli" / "ca.pem").unlink()  # the key alone is a CA too
    assert subprocess.run(again, capture_output=True, text=True, cwd=ROOT).returncode == 2
    subprocess.run([*again, "--force"], capture_output=True, cwd=ROOT, check=True)
    assert (tmp_path / "cli" / "ca.pem").read_bytes() != ca
