"""Fixtures of the schemas unit tests: serdes in both wire formats sharing one in-memory registry."""

from __future__ import annotations

import pytest

from streamrl.schemas.serde import Serde


@pytest.fixture
def registry():
    """confluent-kafka's in-memory Schema Registry client (one store per client instance)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient.new_client({"url": "mock://schemas-tests"})


@pytest.fixture(scope="session")
def soe_serde() -> Serde:
    """Single-object encoding serde (no registry)."""
    return Serde()


@pytest.fixture
def registry_serde(registry) -> Serde:
    """Confluent-framing serde on the shared in-memory registry."""
    return Serde(registry_client=registry)


@pytest.fixture(params=["single-object", "confluent", "full-validation"])
def serde(request, soe_serde, registry_serde) -> Serde:
    """Both wire formats, and the full-pydantic-validation decode path."""
    if request.param == "full-validation":
        return Serde(full_validation=True)
    return soe_serde if request.param == "single-object" else registry_serde
