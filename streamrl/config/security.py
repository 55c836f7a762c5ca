"""Config of StreamRL's own endpoints' security: tokens, the CA clients trust, server certificates.

Kafka's security settings are in ``kafka:`` (:mod:`streamrl.config.kafka`); this section covers the
HTTP endpoints StreamRL serves itself (gateway, inference server, streams web page, metrics). What
each setting protects, and the threat model, are in ``docs/SECURITY.md``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, model_validator

from streamrl.config.base import Section


class ServerTLSSettings(Section):
    """A server's certificate: HTTPS instead of HTTP when both files are set.

    ``streamrl tls dev-ca --out DIR`` makes a development CA and a certificate for localhost.
    """

    cert_file: Path | None = None
    """PEM certificate chain of the server (leaf first); None = plain HTTP."""
    key_file: Path | None = None
    """PEM private key of ``cert_file`` (unencrypted)."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> ServerTLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together (or neither, for plain HTTP)")
        return self

    @property
    def enabled(self) -> bool:
        """True when the server serves HTTPS."""
        return self.cert_file is not None


class SecuritySettings(Section):
    """Credentials of StreamRL's HTTP endpoints and the CA its HTTP clients trust.

    Secrets are never printed: ``streamrl config show`` and the logs show ``**********``. Give a
    secret as ``STREAMRL_SECURITY__ADMIN_TOKEN`` or in a file (``admin_token_file``, e.g. a mounted
    Kubernetes Secret) rather than in the YAML file.
    """

    admin_token: SecretStr | None = None
    """Bearer token of the control routes (a standalone gateway's ``/control/*``) and of the inference
    server's API; the gateway sends it upstream. None (and no file) = those endpoints take no token."""
    admin_token_file: Path | None = None
    """File holding the admin token (surrounding whitespace ignored); instead of ``admin_token``."""
    metrics_token: SecretStr | None = None
    """Bearer token every ``/metrics`` endpoint (and the streams web page) requires; None = open."""
    metrics_token_file: Path | None = None
    """File holding the metrics token; instead of ``metrics_token``."""
    ca_file: Path | None = None
    """PEM CA bundle StreamRL's HTTP clients verify StreamRL's HTTPS servers against (gateway ->
    inference, worker -> standalone gateway, ``streamrl dev`` -> inference); None = the system's."""

    @model_validator(mode="after")
    def _one_source_per_secret(self) -> SecuritySettings:
        for name in ("admin_token", "metrics_token"):
            if getattr(self, name) is not None and getattr(self, f"{name}_file") is not None:
                raise ValueError(f"set {name} or {name}_file, not both")
        return self
