"""The bad-input catalogue: every kind of bad or tricky input StreamRL is tested against, by stage.

Each stage has one parametrized test over its kinds (``tests/integration/<stage>/test_*_bad_input.py``,
``tests/unit/cli/test_cli_bad_input.py`` for configs and flags), feeding them through the real path
(a real broker, the real stage, real HTTP servers) and checking the outcome written here: a clear
error naming what and where, a dead letter with the reason where a record is refused, nothing trained
from it, nothing lost beside it, the stage still healthy. The README's "Bad input" table is this list
(``tests/unit/test_bad_input_catalogue.py`` checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

from streamrl.schemas.records import Record
from streamrl.schemas.serde import Serde

__all__ = ["CATALOGUE", "Kind", "encode_unchecked", "kinds"]


@dataclass(frozen=True)
class Kind:
    """One kind of bad input.

    Attributes:
        id: the test id (``<stage>-<what>``).
        stage: where it enters (``publish``, ``config``, ``sampler``, ``worker``, ``inference``,
            ``streams``, ``trainer``).
        input: what the input is.
        outcome: what StreamRL does with it (what the test checks).
    """

    id: str
    stage: str
    input: str
    outcome: str


def _k(id: str, input: str, outcome: str) -> Kind:
    return Kind(id, id.split("-", 1)[0], input, outcome)


CATALOGUE: tuple[Kind, ...] = (
    # --- publish (dataset files -> tasks) ----------------------------------------------------------
    _k(
        "publish-malformed-jsonl",
        "a JSONL line that is not JSON",
        "reported at its line (`line 2: malformed JSON ...`), skipped; the other rows published",
    ),
    _k(
        "publish-not-an-object",
        "a JSONL row that is an array",
        "reported at its line (`not a JSON object`), skipped",
    ),
    _k(
        "publish-missing-id",
        "a row without the `--id-field` field",
        "reported at its line (`missing id field`), skipped",
    ),
    _k(
        "publish-id-only",
        "a row with its `--id-field` field and nothing else (no task for the agent)",
        "reported at its line (`no task fields: the row has only its id field`), skipped",
    ),
    _k(
        "publish-oversized-row",
        "a row over `publish.max_task_bytes`",
        "reported with its size and the limit, skipped",
    ),
    _k(
        "publish-deep-nesting",
        "a row nested 200,000 levels deep",
        "reported at its line (`nested too deeply`), no traceback; later rows published",
    ),
    _k(
        "publish-huge-integer",
        "a row with a 5,000-digit integer",
        "reported at its line (`Exceeds the limit ... digits`), no traceback; later rows published",
    ),
    _k(
        "publish-not-utf8",
        "a JSONL line with a byte that is not UTF-8",
        "reported at its line (`not UTF-8`), skipped",
    ),
    _k("publish-nan", "a row holding NaN", "reported at its line (`not JSON-serializable`), skipped"),
    _k(
        "publish-duplicate-id",
        "two rows with the same `--id-field`",
        "the second is skipped as a duplicate naming the first's line",
    ),
    _k(
        "publish-json-array-bad-element",
        "a JSON array with one malformed element",
        "that element is reported at its line, reading goes on, the rest published",
    ),
    _k(
        "publish-latin1-csv",
        "a Latin-1 CSV (a byte that is not UTF-8 on line 3)",
        "line 3 reported (`not UTF-8 (byte 0xe9)`), the other lines published",
    ),
    _k("publish-empty-file", "an empty file", "`streamrl publish` warns that the file has no rows"),
    _k(
        "publish-broker-refuses-row",
        "a row the topic's `max.message.bytes` refuses",
        "that row reported with its size and the topic's own `max.message.bytes` (read from the broker), the rows after it published, exit 1",
    ),
    _k(
        "publish-config-over-topic-limit",
        "`publish.max_task_bytes` above `topics.max_message_bytes`",
        "the config is refused before reading, naming both keys and sizes",
    ),
    # --- config and flags ----------------------------------------------------------------------------
    _k(
        "config-unknown-key",
        "a misspelled key (`rl.group_sise`)",
        "one line: `streamrl.yaml: rl.group_sise: unknown key`, exit 1 (several errors: a header and one line each)",
    ),
    _k(
        "config-bad-value",
        "a value of the wrong type",
        "one line naming the key, the reason and the value, exit 1",
    ),
    _k(
        "config-not-utf8",
        "a config file with a byte that is not UTF-8",
        "one line naming the file, line and byte, exit 1 (no traceback)",
    ),
    _k(
        "config-not-yaml",
        "a config file that is not YAML",
        "one line: `streamrl.yaml:4:4: not valid YAML: bad indentation (...)`, the file, line, column and what is wrong, exit 1",
    ),
    _k(
        "config-unknown-estimator",
        "`trainer.adv_estimator: grpoo`",
        "`unknown estimator 'grpoo' (did you mean 'grpo'?); known: [...]`, exit 1",
    ),
    _k(
        "config-bad-seed-prompt",
        "`optimize.seed_prompt` that does not parse as a template (`Answer {question`)",
        "`the seed prompt: not a valid template (...)`, exit 1, before a broker or a child starts",
    ),
    _k(
        "config-bad-flag",
        "a flag with a bad value (`--max-steps 0`)",
        "one line naming the flag and its key (`Invalid value for '--max-steps': trainer.max_steps: ...`), exit 2",
    ),
    # --- sampler (tasks, trajectories, group_outcomes, checkpoints -> samples) ----------------------
    _k(
        "sampler-garbage-task",
        "bytes that are no Task on `tasks`",
        "dead-lettered (`tasks[p]@o: ...`), counted; tasks after it are fanned out",
    ),
    _k(
        "sampler-task-tombstone",
        "a tombstone (null value) on `tasks`",
        "the task is deleted, nothing dead-lettered",
    ),
    _k(
        "sampler-garbage-trajectory",
        "bytes that are no Trajectory on `trajectories`",
        "dead-lettered with the reason; the sampler goes on",
    ),
    _k(
        "sampler-succeeded-without-reward",
        "a succeeded Trajectory whose reward is null",
        "dead-lettered (`status succeeded needs a reward`): never counted as a success",
    ),
    _k(
        "sampler-trajectory-tombstone",
        "a tombstone (null value) on `trajectories`",
        "dead-lettered (`empty value (None or 0 bytes)`); the sampler goes on",
    ),
    _k("sampler-garbage-outcome", "bytes on `group_outcomes`", "dead-lettered; admission unchanged"),
    _k(
        "sampler-garbage-checkpoint",
        "bytes on `checkpoints`",
        "dead-lettered; the policy version does not move",
    ),
    _k(
        "sampler-checkpoint-missing-dir",
        "a CheckpointEvent naming a directory that does not exist",
        "not adopted: dead-lettered (`... is not a directory here`), version and admission unchanged; a verifying checkpoint after it is adopted",
    ),
    _k(
        "sampler-checkpoint-wrong-digest",
        "a CheckpointEvent whose digest does not match its directory",
        "not adopted: dead-lettered (`digest of ... is ..., the event says ...`), version unchanged",
    ),
    _k(
        "sampler-request-failure",
        "a rollout failed by a deterministic 4xx (failure kind `request`)",
        "dead-lettered at once (`request failure: ... not retried`), never re-issued",
    ),
    _k(
        "sampler-second-sampler",
        "a second sampler started on the same topic prefix",
        "it exits with one line naming the sampler that holds the prefix's fence; the first goes on",
    ),
    # --- worker and gateway (samples -> agent -> trajectories, requests) ----------------------------
    _k(
        "worker-garbage-sample",
        "bytes that are no Sample on `samples`",
        "dead-lettered (`samples[p]@o: cannot decode Sample`); the partition's committed offset moves past it",
    ),
    _k("worker-truncated-sample", "a Sample cut short", "dead-lettered; the committed offset moves past it"),
    _k(
        "worker-tombstone-sample",
        "a tombstone on `samples`",
        "dead-lettered (`tombstone`); the committed offset moves past it",
    ),
    _k(
        "worker-agent-raises",
        "an agent that raises",
        "a failed trajectory (kind `agent`) with the exception and the agent's frames",
    ),
    _k("worker-nan-reward", "an agent that returns NaN", "failed: `reward must be finite, got nan`"),
    _k(
        "worker-str-reward",
        "an agent that returns a string",
        "failed: `reward must be a finite float, got str ...`",
    ),
    _k(
        "worker-huge-reward",
        "an agent that returns 10**400",
        "failed: `reward must be finite, got int beyond float range` (no OverflowError)",
    ),
    _k(
        "worker-no-reward",
        "an agent that returns None and emits no reward",
        "failed: `no reward`; never trained as 0",
    ),
    _k(
        "worker-sync-agent-hangs",
        "a sync agent that never returns",
        "a `timeout` trajectory; its thread is written off and replaced, healthy samples keep running, SIGTERM stops the worker within `shutdown_timeout_s`",
    ),
    _k(
        "worker-inference-400",
        "the inference service answers 400 (prompt longer than the context)",
        "the agent gets the 400; failed with failure kind `request` (the sampler does not retry it)",
    ),
    _k(
        "worker-inference-500",
        "the inference service answers 500",
        "failed with failure kind `infrastructure` (spends no retry)",
    ),
    _k(
        "worker-inference-timeout",
        "the inference service does not answer within `gateway.upstream_timeout_s`",
        "the agent gets a 504; failed with failure kind `infrastructure` naming the timeout",
    ),
    _k(
        "worker-stream-dies",
        "the inference service dies mid-stream",
        "the agent's stream ends with an error event (the openai client raises), nothing recorded, failed as `infrastructure`",
    ),
    _k(
        "worker-stream-without-done",
        "a stream that ends without `data: [DONE]`",
        "the agent gets an error event; the call is not recorded as complete",
    ),
    _k(
        "worker-fewer-ids-than-usage",
        "a response with fewer token ids than its `usage.completion_tokens`",
        "the call is not recorded (`usage.completion_tokens=N but the response carries M token ids`); the rollout fails",
    ),
    _k(
        "worker-positive-logprob",
        "a response with a logprob of 0.5",
        "not recorded (`response_logprobs[0] = 0.5 > 0: not a log-probability`); the rollout fails, nothing reaches streams or the trainer",
    ),
    _k(
        "worker-nonfinite-logprob",
        "a response whose JSON holds `-Infinity` as a logprob",
        "not recorded; the reason names the token (`response_logprobs[1] must be finite`), not `not JSON`",
    ),
    _k(
        "worker-no-token-ids",
        "a server without `return_token_ids` (no token ids)",
        "not recorded: `has no token_ids; the inference server must support return_token_ids`",
    ),
    _k(
        "worker-big-integer-payload",
        "a task payload with a 30-digit integer",
        "the agent gets the exact integer (not a float)",
    ),
    # --- inference server (checkpoints -> weights; HTTP) ---------------------------------------------
    _k(
        "inference-stream-stop-string",
        "a stop string, streamed (chat and completions)",
        "the streamed text equals the non-streamed text, cut before the stop string",
    ),
    _k(
        "inference-checkpoint-missing-dir",
        "a CheckpointEvent naming a missing directory",
        "refused (dead letter, reload error metric `missing`); the old version keeps serving, a verifying checkpoint after it is loaded",
    ),
    _k(
        "inference-checkpoint-wrong-digest",
        "a CheckpointEvent whose digest does not match",
        "refused (`digest`); the old version keeps serving",
    ),
    _k(
        "inference-checkpoint-unloadable",
        "a checkpoint that verifies but holds no loadable weights",
        "refused (`load`); the old version keeps serving",
    ),
    _k("inference-garbage-checkpoint", "bytes on `checkpoints`", "dead-lettered; serving goes on"),
    _k("inference-prompt-too-long", "a prompt longer than the context", "HTTP 400 with vLLM's message"),
    _k(
        "inference-logit-bias", "`logit_bias` (or a penalty)", "HTTP 400: it would bias the policy's logprobs"
    ),
    # --- streams (requests + trajectories -> batches) ------------------------------------------------
    _k(
        "streams-garbage-request",
        "bytes that are no LLMRequest on `requests`",
        "dead-lettered (`requests[p]@o: undecodable or invalid record`); the other rollouts batch",
    ),
    _k(
        "streams-garbage-trajectory",
        "bytes that are no Trajectory on `trajectories`",
        "dead-lettered; the other rollouts batch",
    ),
    _k(
        "streams-tombstone-request",
        "a tombstone (null value) on `requests`",
        "dead-lettered (`empty value (None or 0 bytes)`); the other rollouts batch",
    ),
    _k(
        "streams-positive-logprob-request",
        "an LLMRequest with a positive logprob",
        "dead-lettered at the join; its rollout never brings that call (its join times out: `incomplete_join`), nothing trains from it",
    ),
    _k(
        "streams-succeeded-without-reward",
        "a succeeded Trajectory whose reward is null",
        "dead-lettered; nothing is trained as reward 0",
    ),
    _k(
        "streams-key-mismatch",
        "a record whose key is not its rollout id",
        "dead-lettered (`record key ... != rollout_id`)",
    ),
    _k(
        "streams-bytes-on-ticks",
        "bytes on the internal ticks topic",
        "dead-lettered (`bad tick`); the join agent keeps running (no restarts)",
    ),
    _k(
        "streams-tick-from-the-future",
        "a tick far ahead of the clock on the ticks topic",
        "dead-lettered (`... ahead of the clock`); nothing expires early",
    ),
    _k(
        "streams-bytes-on-groups",
        "bytes on the internal groups topic",
        "dead-lettered (`bad group event`); batching goes on",
    ),
    _k(
        "streams-bad-row-on-groups",
        "a train event on the groups topic whose row breaks the row rules",
        "its row dead-lettered; the rollout's group outcome is `dropped: invalid_rows`, its group still batches",
    ),
    _k(
        "streams-bytes-on-validation",
        "bytes on the internal validation topic",
        "dead-lettered (`bad validation event`)",
    ),
    # --- trainer (batches -> checkpoints) -------------------------------------------------------------
    _k(
        "trainer-garbage-batch",
        "bytes that are no TrainingBatch on `batches`",
        "dead-lettered (`batches[p]@o: ...`); the next batch trains",
    ),
    _k(
        "trainer-tombstone-batch",
        "a tombstone (null value) on `batches`",
        "dead-lettered (`empty value (None or 0 bytes)`); the next batch trains",
    ),
    _k("trainer-wrong-policy", "a batch for another policy", "dead-lettered naming both policies"),
    _k(
        "trainer-claim-check-missing",
        "a claim-check batch whose file is gone",
        "dead-lettered naming the file",
    ),
    _k(
        "trainer-claim-check-digest",
        "a claim-check file whose digest differs",
        "dead-lettered (`digest ... != declared ...`)",
    ),
    _k(
        "trainer-row-beyond-vocab",
        "a batch with one row whose token ids are outside the model's vocabulary",
        "that row alone dead-lettered (keyed by its rollout id); the batch's other rows train",
    ),
    _k(
        "trainer-positive-logprob-row",
        "a batch whose row has a positive logprob",
        "the batch is undecodable (`... > 0: not a log-probability`) and dead-lettered; nothing trains from it",
    ),
    _k(
        "trainer-all-stale",
        "a batch staler than `max_staleness` with `staleness_policy: drop`",
        "dead-lettered (`empty after filtering ... staler than max_staleness`)",
    ),
)
"""Every kind, in pipeline order."""


def kinds(stage: str) -> list[Kind]:
    """The kinds of one stage (for ``pytest.mark.parametrize(..., ids=lambda k: k.id)``)."""
    return [k for k in CATALOGUE if k.stage == stage]


def _record_classes(cls: type = Record) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_record_classes(sub))
    return out


def encode_unchecked(serde: Serde, record: Record) -> bytes:
    """The bytes another producer could write: valid Avro of ``record`` whose StreamRL invariants
    are broken (a null reward on a succeeded trajectory, a positive logprob). Build ``record`` with
    ``model_construct``."""
    patches = [
        mock.patch.object(c, "check_invariants", lambda self, scan=True: None) for c in _record_classes()
    ]
    for p in patches:
        p.start()
    try:
        return serde.encode(record)  # type: ignore[arg-type]
    finally:
        for p in patches:
            p.stop()


def readme_table() -> str:
    """The README's "Bad input" table (``python -m tests.support.bad_input`` prints it)."""
    lines = ["| kind | input | what StreamRL does |", "|---|---|---|"]
    lines += [f"| `{k.id}` | {k.input} | {k.outcome} |" for k in CATALOGUE]
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table())
