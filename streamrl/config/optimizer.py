"""Config section of ``streamrl optimize``: prompt optimization over the rollout workers.

The optimizer publishes evaluation samples pinned to prompt versions (``resources``), scores them
from ``trajectories`` with the one scoring rule (failed, timed-out and unfinished rollouts score 0)
and reads the recorded calls from ``requests``. The algorithm is a discriminated union on ``type``:
``apo`` (textual-gradient beam search with an optimizer LLM) or ``fewshot`` (demonstrations
bootstrapped from the best rollouts, then a search over which and how many to include).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from streamrl.config.base import Section


class OptimizerLLMSettings(Section):
    """The optimizer LLM of ``apo``: any OpenAI-compatible chat endpoint (a hosted model, vLLM, or
    StreamRL's own inference server)."""

    base_url: str = "https://api.openai.com/v1"
    """Base URL ending in ``/v1``; ``POST <base_url>/chat/completions`` is called."""
    model: str = "gpt-4.1-mini"
    """Model name sent as ``model``."""
    api_key: SecretStr = SecretStr("")
    """Bearer token (``STREAMRL_OPTIMIZE__ALGORITHM__LLM__API_KEY``); empty = no Authorization header."""
    temperature: float = Field(1.0, ge=0)
    """Sampling temperature of critiques and edits (diversity across branches)."""
    max_tokens: int = Field(1024, ge=16)
    """Longest critique or edited prompt, in tokens."""
    timeout_s: float = Field(120.0, gt=0)
    """Time limit of one call, in seconds."""
    max_retries: int = Field(3, ge=0)
    """Retries of a call that failed for a transient reason (connection, timeout, HTTP 408/429/5xx),
    with exponential backoff from 1 s; a call that still fails rejects its candidate with the reason."""
    concurrency: int = Field(4, ge=1)
    """Calls in flight at once."""


class ApoSettings(Section):
    """APO: each round, rollouts of every parent prompt on train tasks, a critique of what went
    wrong from the recorded calls (the textual gradient), an edit that applies it, guards, then all
    candidates evaluated on val at once and the best ``beam_width`` kept."""

    type: Literal["apo"] = "apo"
    beam_width: int = Field(4, ge=1)
    """Prompts kept after each round (the beam); also the parents of the next round."""
    branch_factor: int = Field(4, ge=1)
    """Candidates made from each parent per round."""
    rounds: int = Field(3, ge=1)
    """Beam-search rounds."""
    gradient_batch_size: int = Field(4, ge=1)
    """Train tasks per critique: each (parent, branch) gets its own batch of rollouts."""
    val_batch_size: int | None = Field(16, ge=1)
    """Val tasks each round's candidates are compared on (a new batch every round); None = all val tasks."""
    llm: OptimizerLLMSettings = Field(default_factory=OptimizerLLMSettings)
    """The optimizer LLM (critiques and edits)."""
    critique_prompt: Path | None = None
    """File with the critique prompt (a ``str.format`` template with ``{prompt}`` and ``{experiments}``);
    None = the built-in one (``optimizer/prompts/critique.md``)."""
    edit_prompt: Path | None = None
    """File with the edit prompt (``{prompt}``, ``{critique}``); None = ``optimizer/prompts/edit.md``."""
    max_transcript_tokens: int = Field(1500, ge=64)
    """Token budget of one rollout's conversation in a critique (decoded from the recorded token ids;
    the middle is cut when longer)."""
    max_prompt_chars: int = Field(20_000, ge=1)
    """Longest candidate prompt accepted, in characters (a longer edit is rejected before any rollout)."""


class FewshotSettings(Section):
    """Few-shot bootstrapping: the seed prompt runs on train tasks, the highest-reward rollouts'
    recorded calls become demonstrations, and a seeded search over which and how many to append to
    the prompt is scored on val. Needs no optimizer LLM."""

    type: Literal["fewshot"] = "fewshot"
    bootstrap_tasks: int | None = Field(16, ge=1)
    """Train tasks the seed prompt runs on to collect demonstrations; None = all train tasks."""
    min_reward: float = 1.0
    """A rollout becomes a demonstration only with a reward at least this high."""
    pool_size: int = Field(8, ge=1)
    """Demonstrations kept (highest reward first, one per task, the same text once)."""
    demo_counts: list[int] = Field(default_factory=lambda: [1, 2, 3])
    """How many demonstrations a candidate may include."""
    candidates_per_round: int = Field(6, ge=1)
    """New (count, subset) candidates evaluated per round."""
    rounds: int = Field(2, ge=1)
    """Search rounds."""
    demo_template: str = "{question}\n{response}"
    """How one demonstration is written: ``{response}`` is the recorded answer of the rollout's last
    call, decoded from its token ids; any other placeholder is a field of the task's payload."""
    header: str = "Examples:"
    """Line before the demonstrations; empty = none."""
    separator: str = "\n\n"
    """Between demonstrations, and between the prompt and the demonstrations."""
    position: Literal["after", "before"] = "after"
    """Where the demonstrations go: after the seed prompt, or before it (a template that ends with
    the question, such as a chat transcript ending in the user's turn)."""

    @model_validator(mode="after")
    def _counts(self) -> FewshotSettings:
        if not self.demo_counts or min(self.demo_counts) < 1:
            raise ValueError(f"demo_counts must be a non-empty list of counts >= 1, got {self.demo_counts}")
        if min(self.demo_counts) > self.pool_size:
            raise ValueError(
                f"demo_counts {self.demo_counts} all exceed pool_size={self.pool_size}; lower them or raise pool_size"
            )
        if "{response}" not in self.demo_template:
            raise ValueError("demo_template must contain {response} (the recorded answer)")
        return self


Algorithm = Annotated[ApoSettings | FewshotSettings, Field(discriminator="type")]


class OptimizeSettings(Section):
    """``streamrl optimize``: which prompt, which algorithm, how evaluations run, where results go."""

    algorithm: Algorithm = Field(default_factory=FewshotSettings)
    """The algorithm and its settings, chosen by ``type`` (``apo`` or ``fewshot``; ``--algorithm`` sets it)."""
    run_id: str | None = None
    """The optimization run (key of its events and state). The same id resumes a run; None = the
    ``streamrl optimize`` run id (``dev.run_id`` or a new one)."""
    resource_name: str = "system_prompt"
    """Name of the optimized resource (the agent reads ``llm.resources[resource_name]``)."""
    seed_prompt: str | None = None
    """The starting prompt template (``str.format``: ``{name}`` placeholders, ``{{``/``}}`` braces)."""
    seed_prompt_file: Path | None = None
    """...or a UTF-8 file holding it (exactly one of the two)."""
    agent_name: str | None = None
    """Whose calls critiques and demonstrations read (the agent name calls are recorded under,
    ``@rollout(name=...)``/``llm.for_agent``); None = every call of the rollout."""
    start_pipeline: bool = True
    """Start the local broker (unless ``STREAMRL_BOOTSTRAP_SERVERS`` is set), the inference server and
    ``dev.workers`` rollout workers, as ``streamrl dev`` does (the ``dev`` section applies); False =
    they already run against this config's cluster and topics (``--no-pipeline``)."""
    val_tasks: int | None = Field(None, ge=1)
    """Val tasks used (the first ones by task id); None = every val task on ``tasks``."""
    eval_timeout_s: float = Field(600.0, gt=0)
    """Deadline of an evaluation after its samples are published, in seconds: a rollout still
    running then scores 0."""
    max_infra_retries: int = Field(2, ge=0)
    """Re-issues of a rollout that failed for the infrastructure (inference unreachable, the worker
    stopping: it scores nothing), while its evaluation's deadline is not reached."""
    seed: int = 0
    """Seed of every random choice (task batches, parents, demonstration subsets): a resumed run makes
    the same choices."""
    tokenizer: Path | None = None
    """Directory with the policy's ``tokenizer.json``, to decode recorded token ids; None =
    ``inference.model``, else ``dev.model.path``."""
    output_dir: Path | None = None
    """Where ``best_prompt.txt``, ``history.json``, ``summary.json`` and ``val_score.png`` go; None =
    ``<dev.run_root>/<run id>/optimize``."""
    display: Literal["auto", "live", "plain", "off"] = "auto"
    """Progress: ``live`` (rich panel), ``plain`` (a line per step), ``auto`` (live on a terminal)."""

    @model_validator(mode="after")
    def _seed(self) -> OptimizeSettings:
        if self.seed_prompt is not None and self.seed_prompt_file is not None:
            raise ValueError("set one of optimize.seed_prompt and optimize.seed_prompt_file, not both")
        if self.run_id is not None and (not self.run_id or any(c in self.run_id for c in "/ ")):
            raise ValueError(
                f"optimize.run_id {self.run_id!r} must be a non-empty name without '/' or spaces"
            )
        return self
