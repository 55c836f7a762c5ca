"""How a worker opens and closes rollout attempts on a gateway: in-process, or a standalone one over HTTP.

Opening an attempt returns its token, which the worker hands the agent as ``llm.api_key``. A standalone
gateway's control routes take the admin token; an ``https`` gateway is verified against
``security.ca_file`` (and the system's CAs).
"""

from __future__ import annotations

from typing import Protocol

import aiohttp
import orjson

from streamrl.consumers.attempts import AttemptResult
from streamrl.consumers.gateway import Gateway
from streamrl.errors import StreamRLError
from streamrl.security import Credentials, client_ssl_context

__all__ = ["GatewayClient", "GatewayControlError", "InProcessGatewayClient", "RemoteGatewayClient"]


class GatewayControlError(StreamRLError):
    """A standalone gateway refused or failed an open/close of an attempt."""


class GatewayClient(Protocol):
    """Open/close attempts; ``url`` is the gateway root agents are pointed at."""

    url: str

    async def open(
        self, rollout_id: str, attempt_id: str, agent_name: str | None, policy_version: int
    ) -> str:
        """Accept calls for this attempt from now on; returns the attempt's token (its API key)."""
        ...

    async def close(self, rollout_id: str, attempt_id: str, timeout_s: float) -> AttemptResult:
        """Reject further calls; wait (≤ ``timeout_s`` s) until the attempt's records are acknowledged."""
        ...

    async def probe(self, timeout_s: float) -> tuple[bool, str]:
        """Whether the inference service behind the gateway serves: ``(healthy, detail)``."""
        ...


class InProcessGatewayClient:
    """The gateway runs on this event loop (the default)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.url = gateway.url

    async def open(
        self, rollout_id: str, attempt_id: str, agent_name: str | None, policy_version: int
    ) -> str:
        return self.gateway.registry.open(rollout_id, attempt_id, agent_name, policy_version).token

    async def close(self, rollout_id: str, attempt_id: str, timeout_s: float) -> AttemptResult:
        state = self.gateway.registry.close(rollout_id, attempt_id)
        if state is None:
            return AttemptResult([], {}, [f"attempt {attempt_id!r} was not open on the gateway"])
        return await state.settle(timeout_s)

    async def probe(self, timeout_s: float) -> tuple[bool, str]:
        return await self.gateway.probe_upstream(timeout_s)


class RemoteGatewayClient:
    """A standalone gateway (``streamrl gateway``) reached over its control routes.

    Args:
        url: the gateway root, e.g. ``https://10.0.0.5:8100``.
        credentials: the admin token sent to the control routes, and the CA an ``https`` gateway is
            verified against.

    Raises:
        ConfigError: ``security.ca_file`` cannot be loaded.
    """

    def __init__(self, url: str, credentials: Credentials | None = None) -> None:
        self.url = url.rstrip("/")
        creds = credentials or Credentials()
        self._headers = creds.admin_header()
        self._ssl = client_ssl_context(creds.ca_file) if self.url.startswith("https:") else None
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                headers=self._headers,
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
            )
        return self._session

    async def _post(self, path: str, body: dict[str, object], timeout_s: float) -> dict[str, object]:
        try:
            async with self._s().post(
                f"{self.url}{path}", data=orjson.dumps(body), timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as r:
                raw = await r.read()
                if r.status >= 300:
                    raise GatewayControlError(f"gateway {self.url}{path}: HTTP {r.status}: {raw[:300]!r}")
                return orjson.loads(raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayControlError(f"gateway {self.url}{path} unreachable: {exc!r}") from exc

    async def open(
        self, rollout_id: str, attempt_id: str, agent_name: str | None, policy_version: int
    ) -> str:
        body = {
            "rollout_id": rollout_id,
            "attempt_id": attempt_id,
            "agent_name": agent_name,
            "policy_version": policy_version,
        }
        out = await self._post("/control/attempts", body, 30.0)
        token = out.get("token")
        if not isinstance(token, str) or not token:
            raise GatewayControlError(f"gateway {self.url}/control/attempts answered no attempt token")
        return token

    async def close(self, rollout_id: str, attempt_id: str, timeout_s: float) -> AttemptResult:
        body = {"rollout_id": rollout_id, "attempt_id": attempt_id, "timeout_s": timeout_s}
        try:
            out = await self._post("/control/attempts/close", body, timeout_s + 30.0)
        except GatewayControlError as exc:
            return AttemptResult([], {}, [str(exc)])
        unrecovered = out.get("unrecovered")
        return AttemptResult(
            list(out["request_ids"]),  # type: ignore[call-overload]
            {str(k): float(v) for k, v in dict(out["completed_at"]).items()},  # type: ignore[call-overload]
            list(out["errors"]),  # type: ignore[call-overload]
            calls_ok=int(out.get("calls_ok", 0)),  # type: ignore[call-overload]
            infra_failures=int(out.get("infra_failures", 0)),  # type: ignore[call-overload]
            unrecovered=(str(unrecovered[0]), str(unrecovered[1])) if unrecovered else None,  # type: ignore[index]
            in_progress=int(out.get("in_progress", 0)),  # type: ignore[call-overload]
            in_progress_error=out.get("in_progress_error"),  # type: ignore[arg-type]
        )

    async def probe(self, timeout_s: float) -> tuple[bool, str]:
        """``GET /healthz/upstream`` on the gateway; an unreachable gateway counts as unhealthy."""
        try:
            async with self._s().get(
                f"{self.url}/healthz/upstream", timeout=aiohttp.ClientTimeout(total=timeout_s + 1.0)
            ) as r:
                raw = await r.read()
                detail = str(orjson.loads(raw).get("detail", "")) if raw else ""
                return r.status == 200, detail or f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, AttributeError) as exc:
            return False, f"gateway {self.url} unreachable: {exc!r}"

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
