"""Whose failure a rollout attempt was: the task's, a refused request, or the infrastructure's.

A pure function of what the agent returned (:class:`~streamrl.consumers.runner.Outcome`) and what
its calls did at the gateway (:class:`~streamrl.consumers.attempts.AttemptResult`). The kind goes
into ``Trajectory.failure_kind`` and decides the sampler's path: the task's own failures spend the
sample's retries, infrastructure failures do not (``FailureKind``, ``docs/CONTRACTS.md``).

Rules, first match wins:

1. the worker interrupted the attempt (it stopped before the rollout finished, or could not start
   it: the broker did not answer, say): ``infrastructure``; a pinned resource version the worker
   cannot find within ``worker.resource_timeout_s`` is the sample's own failure (rule 7);
2. a record of the attempt could not be made or delivered (the Trajectory would name calls streams
   cannot find): ``infrastructure``, and a succeeded attempt becomes ``failed``;
3. the inference service failed the attempt's last failing call for infrastructure reasons
   (unreachable, 5xx, 408/429, a timeout, a broken stream) and no call succeeded after it:
   ``infrastructure``, even when the agent returned a reward (it caught the error; the reward says
   nothing about the task);
4. the agent succeeded: no failure (unless it returned while calls were still running: ``agent``);
5. the service refused the last failing call (another 4xx) and nothing succeeded after it:
   ``request`` (the agent did not recover from it);
6. the rollout hit its time limit with calls still waiting on a service that then failed its health
   probe (``healthy`` False): ``infrastructure``;
7. anything else (an exception, no or a bad reward, the time limit, a pinned resource version not
   found): ``agent``.

A transient error the agent's client retried past (openai retries 5xx twice) is no failure at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamrl.consumers.attempts import INFRASTRUCTURE, REQUEST, AttemptResult
from streamrl.consumers.runner import MAX_ERROR_CHARS, Outcome
from streamrl.schemas import FailureKind

__all__ = ["Classified", "classify"]


@dataclass(frozen=True)
class Classified:
    """The attempt as the Trajectory reports it.

    Attributes:
        status: ``succeeded``, ``failed`` or ``timeout``.
        failure_kind: None when it succeeded.
        error: the reason (the agent's error, with what the service did first), None on success.
    """

    status: str
    failure_kind: FailureKind | None
    error: str | None


def _join(first: str, agent_error: str | None) -> str:
    text = first if not agent_error else f"{first}\nthe agent: {agent_error}"
    return text[:MAX_ERROR_CHARS]


def classify(
    outcome: Outcome, result: AttemptResult, *, interrupted: bool = False, healthy: bool | None = None
) -> Classified:
    """Classify one attempt (rules in the module docstring).

    Args:
        outcome: what the agent returned (status ``succeeded``/``failed``/``timeout``).
        result: what the attempt's calls did, from the gateway.
        interrupted: the worker stopped the attempt (shutdown) or could not start it.
        healthy: the inference service's health probe after a timeout with calls in progress
            (None = not probed).
    """
    if interrupted:
        return Classified(outcome.status, FailureKind.infrastructure, outcome.error)
    failed = "failed" if outcome.status == "succeeded" else outcome.status
    if result.errors:
        return Classified(failed, FailureKind.infrastructure, _join("; ".join(result.errors), outcome.error))
    if result.unrecovered is not None and result.unrecovered[0] == INFRASTRUCTURE:
        detail = f"the inference service failed the attempt's last call: {result.unrecovered[1]}"
        return Classified(failed, FailureKind.infrastructure, _join(detail, outcome.error))
    if outcome.status == "succeeded":
        if result.in_progress_error:
            return Classified("failed", FailureKind.agent, result.in_progress_error)
        return Classified("succeeded", None, None)
    if result.unrecovered is not None and result.unrecovered[0] == REQUEST:
        detail = f"the inference service refused the attempt's last call: {result.unrecovered[1]}"
        return Classified(outcome.status, FailureKind.request, _join(detail, outcome.error))
    if outcome.status == "timeout" and result.in_progress and healthy is False:
        detail = (
            f"{result.in_progress} call(s) waited on an inference service that then failed its health probe"
        )
        return Classified(outcome.status, FailureKind.infrastructure, _join(detail, outcome.error))
    return Classified(outcome.status, FailureKind.agent, outcome.error)
