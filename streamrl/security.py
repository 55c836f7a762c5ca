"""Credentials and TLS of StreamRL's HTTP endpoints: one place for the rules every server applies.

- :class:`Credentials` holds the resolved admin and metrics tokens (from ``security.*_token``, the
  environment or a file) and the CA file clients verify against; its ``repr`` shows no secret.
- :func:`bearer_token` / :func:`token_matches` read a token the way clients send it
  (``Authorization: Bearer <t>``, or Anthropic's ``x-api-key: <t>``) and compare in constant time
  (:func:`hmac.compare_digest`): a dict lookup and one compare per call, cheap on the gateway's
  hot path.
- :func:`server_ssl_context` / :func:`client_ssl_context`: TLS 1.2+ contexts from PEM files.
- :func:`redact_logs` hides every configured secret from this process's log lines;
  :func:`redacted_settings` is what ``streamrl config show`` prints.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from streamrl.errors import ConfigError

if TYPE_CHECKING:
    from streamrl.config import Settings
    from streamrl.config.security import SecuritySettings, ServerTLSSettings

log = logging.getLogger(__name__)

__all__ = [
    "REDACTED",
    "Credentials",
    "bearer_token",
    "client_ssl_context",
    "credentials",
    "is_loopback",
    "redact_logs",
    "redacted_settings",
    "secret_values",
    "server_ssl_context",
    "token_matches",
]

REDACTED = "**********"
#: ``kafka.client_properties`` keys whose values are secrets (librdkafka's ``sasl.password``,
#: ``sasl.oauthbearer.client.secret``, ``ssl.key.pem``, ``sasl.jaas.config`` ...).
SECRET_PROPERTY = re.compile(r"password|secret|token|jaas|credential|\.pem$|private", re.IGNORECASE)
#: Environment variables (``dev.env``, ``dev.stage_env``) whose values are secrets.
SECRET_ENV = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)
#: Anthropic clients send their key in this header (``streamrl.schemas.inference_http`` names it too).
API_KEY_HEADER = "x-api-key"
AUTHORIZATION = "Authorization"


def _read_secret(value: SecretStr | None, path: Path | None, key: str) -> str | None:
    if value is not None:
        secret = value.get_secret_value().strip()
    elif path is not None:
        try:
            secret = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"security.{key}_file={path}: cannot read: {exc.strerror or exc}") from exc
    else:
        return None
    if not secret:
        raise ConfigError(f"security.{key}: empty token (unset it to turn the check off)")
    return secret


@dataclass(frozen=True)
class Credentials:
    """The resolved secrets of one process (never printed: ``repr`` hides them).

    Attributes:
        admin_token: bearer token of control routes and the inference API; None = not required.
        metrics_token: bearer token of ``/metrics`` endpoints; None = open.
        ca_file: CA bundle clients verify StreamRL servers against; None = the system trust store.
    """

    admin_token: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def __repr__(self) -> str:
        shown = {k: (REDACTED if getattr(self, k) else None) for k in ("admin_token", "metrics_token")}
        return f"Credentials(admin_token={shown['admin_token']}, metrics_token={shown['metrics_token']}, ca_file={self.ca_file})"

    def admin_header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <admin>"}``, or ``{}`` without an admin token."""
        return {AUTHORIZATION: f"Bearer {self.admin_token}"} if self.admin_token else {}


def credentials(security: SecuritySettings) -> Credentials:
    """Resolve ``security:`` (token values or files) into :class:`Credentials`.

    Raises:
        ConfigError: a token file cannot be read, or a token is empty.
    """
    return Credentials(
        admin_token=_read_secret(security.admin_token, security.admin_token_file, "admin_token"),
        metrics_token=_read_secret(security.metrics_token, security.metrics_token_file, "metrics_token"),
        ca_file=Path(security.ca_file).expanduser() if security.ca_file is not None else None,
    )


def bearer_token(authorization: str | None, api_key: str | None = None) -> str | None:
    """The token a client sent: ``Authorization: Bearer <t>`` (scheme case-insensitive), else the
    ``x-api-key`` header's value; None when neither is present."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return api_key or None


def token_matches(sent: str | None, expected: str) -> bool:
    """Constant-time comparison of a sent token with the expected one (False when none was sent)."""
    return sent is not None and hmac.compare_digest(sent.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_ssl_context(tls: ServerTLSSettings) -> ssl.SSLContext | None:
    """A TLS 1.2+ server context from ``tls.cert_file``/``key_file``; None when TLS is off.

    Raises:
        ConfigError: a file is missing or is not a matching PEM certificate and key.
    """
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"TLS certificate {tls.cert_file} / key {tls.key_file}: cannot load: {exc}"
        ) from exc
    return ctx


def client_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: the system trust store, plus ``ca_file`` when given.

    Raises:
        ConfigError: ``ca_file`` is missing or not a PEM CA bundle.
    """
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"security.ca_file={ca_file}: cannot load: {exc}") from exc
    return ctx


def http_scheme(tls: ServerTLSSettings) -> str:
    """``https`` when the server has a certificate, else ``http``."""
    return "https" if tls.enabled else "http"


# -- never printing a secret -----------------------------------------------------------------------------


def secret_values(settings: Settings) -> list[str]:
    """Every secret this process knows (SASL/SSL passwords, tokens, secret client properties).

    Token files are read; an unreadable one contributes nothing (the stage that needs it fails with
    the reason).
    """
    k, sec = settings.kafka, settings.security
    out = [v.get_secret_value() for v in (k.sasl_password, k.ssl_key_password) if v is not None]
    out += [v.get_secret_value() for v in k.local.scram_users.values()]
    out += [v for key, v in k.client_properties.items() if SECRET_PROPERTY.search(key)]
    for name in ("admin_token", "metrics_token"):
        try:
            value = _read_secret(getattr(sec, name), getattr(sec, f"{name}_file"), name)
        except ConfigError:
            value = None
        if value:
            out.append(value)
    for env in (settings.dev.env, *settings.dev.stage_env.values()):
        out += [v for key, v in env.items() if SECRET_ENV.search(key)]
    for section in (settings.gateway, settings.worker):
        for v in section.model_dump().values():
            if isinstance(v, SecretStr) and v.get_secret_value():
                out.append(v.get_secret_value())
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


class _RedactFilter(logging.Filter):
    """Replaces each known secret in a log record's message (and its traceback text) with ``*****``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__("streamrl.redact")
        self.secrets = list(secrets)

    def _clean(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


def redact_logs(settings: Settings) -> None:
    """Hide every secret of ``settings`` (:func:`secret_values`) from this process's log output.

    Adds (or updates) a filter on each handler of the root logger, where every module's records
    end up, so no code path can print a password or token by accident.
    """
    secrets = secret_values(settings)
    root = logging.getLogger()
    for handler in root.handlers:
        existing = [f for f in handler.filters if isinstance(f, _RedactFilter)]
        if existing:
            existing[0].secrets = sorted(set(existing[0].secrets) | set(secrets), key=len, reverse=True)
        elif secrets:
            handler.addFilter(_RedactFilter(secrets))


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data with every secret replaced by ``**********``
    (``SecretStr`` fields, ``kafka.local.scram_users`` passwords, and secret-looking
    ``kafka.client_properties``)."""
    data = settings.model_dump(mode="json")  # SecretStr fields dump as "**********"
    props = data["kafka"]["client_properties"]
    for key in props:
        if SECRET_PROPERTY.search(key):
            props[key] = REDACTED
    for env in (data["dev"]["env"], *data["dev"]["stage_env"].values()):
        for key in env:
            if SECRET_ENV.search(key):
                env[key] = REDACTED
    return data
