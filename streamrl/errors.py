"""The StreamRL exception hierarchy.

Every error StreamRL raises on purpose derives from :class:`StreamRLError`; a third-party error is
wrapped in one (``raise ... from exc``). Each class is defined once, where its fact lives:

- ``schemas`` (the records layer, imported by every stage): the base ``StreamRLError``,
  ``SchemaError`` (a record cannot be encoded/decoded), ``CheckpointError`` (a checkpoint cannot be
  written, found, verified or loaded: trainer and inference), ``ClaimCheckError`` (a claim-check
  file: streams and trainer);
- this module (core glue): ``ConfigError`` (and ``FlagError``), ``DeliveryError``, ``BrokerError``
  (and ``streamrl.topics.TopicUnavailable``: a writer's topic is missing or the cluster unreachable);
- each stage, for what only it raises: ``trainer.errors`` (``BadBatchError``, ``NonFiniteLossError``),
  ``inference.errors`` (``RequestError``, ``OverloadedError``, ``ModelBuildError``), the producers'
  ``InvalidRow``/``DatasetError``, the consumers' ``RecordingError``,
  ``GatewayControlError``, ``AgentLoadError``, the dev supervisor's ``ChildFailed``.

This module re-exports the shared ones, so ``from streamrl.errors import ...`` finds every class a
caller may need to catch across stages.
"""

from __future__ import annotations

from streamrl.schemas.claim_check import ClaimCheckError
from streamrl.schemas.errors import CheckpointError, SchemaError, StreamRLError

__all__ = [
    "BrokerError",
    "CheckpointError",
    "ClaimCheckError",
    "ConfigError",
    "DeliveryError",
    "FlagError",
    "SchemaError",
    "StreamRLError",
]


class ConfigError(StreamRLError):
    """A configuration file or environment override is invalid.

    The message names every offending key path (``sampler.group_size``) with the reason.
    """


class FlagError(ConfigError):
    """A command-line flag's value is invalid (the settings loader judged it as its key). The CLI
    prints it as click prints a value its parser rejects (``Invalid value for '--max-steps': ...``)
    and exits 2, as click does for usage errors."""


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
    """The Kafka cluster cannot be reached or used: no metadata, a topic missing or laid out unlike the
    config, a fatal client error, or the local broker could not be prepared, started or stopped."""
