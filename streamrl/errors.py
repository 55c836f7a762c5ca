"""The StreamRL exception hierarchy.

Every error StreamRL raises on purpose derives from :class:`StreamRLError`. The base lives in
``schemas`` (which imports nothing else of the project) so that ``schemas.SchemaError`` shares it;
this module re-exports it and adds the errors of the glue layer.
"""

from __future__ import annotations

from streamrl.schemas.errors import SchemaError, StreamRLError

__all__ = [
    "BrokerError",
    "ConfigError",
    "DeliveryError",
    "SchemaError",
    "StreamRLError",
]


class ConfigError(StreamRLError):
    """A configuration file or environment override is invalid.

    The message names every offending key path (``sampler.group_size``) with the reason.
    """


class DeliveryError(StreamRLError):
    """One or more produced records were not acknowledged by the broker.

    Attributes:
        failures: ``(topic, key, reason)`` of each failed delivery.
    """

    def __init__(self, failures: list[tuple[str, object, str]]) -> None:
        self.failures = failures
        shown = "; ".join(f"{t} key={k!r}: {r}" for t, k, r in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{len(failures)} record(s) not delivered: {shown}{more}")


class BrokerError(StreamRLError):
    """The local Kafka broker could not be prepared, started, reached or stopped."""
