"""The staleness policy of training rows: one owner (the trainer), pure functions registered by name.

Staleness of a row = trainer version - the row's ``policy_version`` (the oldest version that served
any of its calls; DESIGN.md "Versions everywhere"). Only the trainer knows the true version, so only
the trainer decides what a stale row becomes; streams batches rows as they are, and the sampler's
admission bound (how far ahead of the trainer it admits samples) is a different thing.

A policy is ``fn(staleness, max_staleness, decay) -> weight | None``: None drops the row, a float
multiplies its weight (its advantage is scaled by it: every VERL policy loss is linear in the
advantage). Policies (``rl.staleness_policy``):

- ``drop``: a row staler than ``max_staleness`` is dropped; the others keep weight 1.
- ``weight``: a row staler than ``max_staleness`` is kept with weight
  ``decay ** (staleness - max_staleness)`` (``rl.stale_weight_decay``), so one version past the
  bound halves it at the default 0.5; fresh rows keep weight 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamrl.errors import ConfigError

StalenessFn = Callable[[int, int, float], "float | None"]
"""``(staleness, max_staleness, decay) -> weight multiplier | None (drop)``."""

STALENESS_POLICIES: dict[str, StalenessFn] = {}
"""Every staleness policy by name (the names ``rl.staleness_policy`` accepts)."""


def register_staleness_policy(name: str) -> Callable[[StalenessFn], StalenessFn]:
    """Decorator: register ``fn`` as the staleness policy ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def register(fn: StalenessFn) -> StalenessFn:
        if name in STALENESS_POLICIES:
            raise ValueError(f"staleness policy {name!r} is already registered")
        STALENESS_POLICIES[name] = fn
        return fn

    return register


@register_staleness_policy("drop")
def drop_stale(staleness: int, max_staleness: int, decay: float) -> float | None:
    """Drop a row staler than ``max_staleness`` versions; keep the others at weight 1."""
    return None if staleness > max_staleness else 1.0


@register_staleness_policy("weight")
def weight_stale(staleness: int, max_staleness: int, decay: float) -> float | None:
    """Keep every row; one staler than ``max_staleness`` gets ``decay ** (staleness - max_staleness)``."""
    return decay ** (staleness - max_staleness) if staleness > max_staleness else 1.0


def get_staleness_fn(name: str) -> StalenessFn:
    """The registered policy ``name``.

    Raises:
        ConfigError: unknown name, listing the registered ones.
    """
    try:
        return STALENESS_POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"rl.staleness_policy={name!r} is not a registered staleness policy (known: {sorted(STALENESS_POLICIES)})"
        ) from None


@dataclass(frozen=True)
class StalenessRule:
    """The configured policy with its parameters (``rl.staleness_policy``, ``rl.max_staleness``,
    ``rl.stale_weight_decay``).

    Raises:
        ConfigError: unknown policy name (at construction).
    """

    policy: str = "drop"
    max_staleness: int = 1
    decay: float = 0.5

    def __post_init__(self) -> None:
        get_staleness_fn(self.policy)

    def weight(self, staleness: int) -> float | None:
        """The weight multiplier of a row ``staleness`` versions old, or None to drop it."""
        return get_staleness_fn(self.policy)(staleness, self.max_staleness, self.decay)
