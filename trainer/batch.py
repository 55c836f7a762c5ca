"""From a ``TrainingBatch`` record to a ``verl.DataProto``: resolve, validate, filter, pad.

Layout (VERL's convention, see ``verl.trainer.ppo.ray_trainer``): ``B`` rows, prompts left-padded to
``P`` tokens, responses right-padded to ``T`` tokens.

``batch``:
  - ``prompts`` (B, P) int64, ``responses`` (B, T) int64, ``input_ids`` (B, P+T) int64
  - ``attention_mask`` (B, P+T) int64 (1 = real token), ``position_ids`` (B, P+T) int64
  - ``response_mask`` (B, T) float32 (1 = trained token; observation and padding tokens are 0)
  - ``token_level_scores`` = ``token_level_rewards`` (B, T) float32 (no KL-in-reward)
  - ``rollout_log_probs`` (B, T) float32 (behaviour logprobs from the inference engine)
  - ``row_weights`` (B,) float32, ``policy_versions`` (B,) int64
  - ``temperature`` (B,) float32: the row's ``temperature``, the one its behaviour logprobs were taken
    at; the backends divide the logits by it before the log-softmax (verl's actor does the same with
    the rollout temperature, ``verl/workers/actor/dp_actor.py``), so the importance ratio compares
    one distribution
``non_tensor_batch``: ``uid`` (B,) object = group id, ``rollout_id`` (B,) object.
``meta_info``: ``batch_id``, ``num_groups``, ``num_rows_in``, ``num_rollouts`` (distinct rollout ids
among the rows in, the dropped ones included), ``dropped_stale``, ``weighted_stale``,
``dropped_no_tokens``, ``rejected`` (``[(row index, rollout id, reason)]`` of rows this model cannot
train: dropped, the other rows train), ``staleness_mean``/``staleness_max`` (trainer version - row ``policy_version``
over the rows that came in, before the staleness policy).

``row_weights`` is each row's ``weight`` times its staleness weight (:mod:`streamrl.trainer.staleness`):
the backends scale the row's advantage by it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from verl import DataProto

from streamrl.schemas import TrainingBatch, TrainingRow
from streamrl.schemas.claim_check import ClaimCheckError, read_claim_check
from streamrl.schemas.serde import Serde
from streamrl.trainer.errors import BadBatchError
from streamrl.trainer.staleness import StalenessRule


def resolve_rows(batch: TrainingBatch, serde: Serde | None) -> list[TrainingRow]:
    """The rows of a batch, inline or from its claim-check file (:mod:`streamrl.schemas.claim_check`).

    Args:
        batch: the record from ``batches``.
        serde: decodes a claim-check payload (unused for inline rows; None when only inline batches come).

    Raises:
        BadBatchError: the claim-check file is unreadable, does not match its pointer, or no serde was given.
    """
    if batch.rows is not None:
        return list(batch.rows)
    if serde is None:
        raise BadBatchError(batch.batch_id, "claim-check batch but no serde to decode its payload")
    try:
        return read_claim_check(batch, serde)
    except ClaimCheckError as exc:
        raise BadBatchError(batch.batch_id, str(exc)) from exc


def model_limit_error(row: TrainingRow, vocab_size: int | None, max_positions: int | None) -> str | None:
    """Why this model cannot train ``row``, or None.

    A row's own invariants (shapes, 0/1 mask, finite values, logprobs <= 0, a non-empty prompt) are
    ``TrainingRow``'s, checked when the batch was decoded; only what depends on the model is checked
    here: token ids inside ``[0, vocab_size)``, prompt + response within ``max_positions``.
    """
    if vocab_size is not None:
        lo = min(min(row.prompt_ids), min(row.response_ids))
        hi = max(max(row.prompt_ids), max(row.response_ids))
        if lo < 0 or hi >= vocab_size:
            return f"token id range [{lo}, {hi}] outside the vocabulary [0, {vocab_size})"
    n = len(row.prompt_ids) + len(row.response_ids)
    if max_positions is not None and n > max_positions:
        return f"{len(row.prompt_ids)}+{len(row.response_ids)} tokens exceed the model's {max_positions} positions"
    return None


def filter_rows(
    rows: Sequence[TrainingRow], trainer_version: int, staleness: StalenessRule | None
) -> tuple[list[TrainingRow], int, int, int]:
    """Apply the staleness policy and drop rows with no trained token.

    Staleness of a row = ``trainer_version - row.policy_version`` (DESIGN.md). ``staleness.weight``
    (``streamrl.trainer.staleness``) drops a stale row or multiplies its ``weight``; None keeps
    every row as it is.

    Returns:
        ``(kept, dropped_stale, weighted_stale, dropped_no_tokens)``; kept rows carry their final weight.
    """
    kept: list[TrainingRow] = []
    stale = weighted = empty = 0
    for row in rows:
        w = 1.0 if staleness is None else staleness.weight(trainer_version - row.policy_version)
        if w is None:
            stale += 1
        elif not any(row.response_mask):
            empty += 1
        else:
            if w != 1.0:
                weighted += 1
                row = row.model_copy(update={"weight": row.weight * w})
            kept.append(row)
    return kept, stale, weighted, empty


def rows_to_dataproto(
    rows: Sequence[TrainingRow], *, pad_token_id: int = 0, meta: dict[str, object] | None = None
) -> DataProto:
    """Pad validated rows into a ``DataProto`` with the layout of the module docstring.

    Args:
        rows: non-empty, validated rows.
        pad_token_id: id written into padding positions (masked out, never trained).
        meta: copied into ``meta_info``.
    """
    p = max(len(r.prompt_ids) for r in rows)
    t = max(len(r.response_ids) for r in rows)
    # padded Python lists, then one tensor per field (a tensor per row and field cost ~0.1 ms each)
    prompts = torch.tensor(
        [[pad_token_id] * (p - len(r.prompt_ids)) + r.prompt_ids for r in rows], dtype=torch.long
    )
    prompt_attn = torch.tensor([[0] * (p - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows])
    resp_pad = [t - len(r.response_ids) for r in rows]
    responses = torch.tensor(
        [r.response_ids + [pad_token_id] * n for r, n in zip(rows, resp_pad, strict=True)]
    )
    resp_attn = torch.tensor(
        [[1] * len(r.response_ids) + [0] * n for r, n in zip(rows, resp_pad, strict=True)]
    )
    response_mask = torch.tensor(
        [r.response_mask + [0] * n for r, n in zip(rows, resp_pad, strict=True)], dtype=torch.float32
    )
    scores = torch.tensor(
        [r.token_rewards + [0.0] * n for r, n in zip(rows, resp_pad, strict=True)], dtype=torch.float32
    )
    rollout_lp = torch.tensor(
        [r.behaviour_logprobs + [0.0] * n for r, n in zip(rows, resp_pad, strict=True)], dtype=torch.float32
    )
    attention_mask = torch.cat([prompt_attn, resp_attn], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    tensors = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "response_mask": response_mask,
        "token_level_scores": scores,
        "token_level_rewards": scores.clone(),
        "rollout_log_probs": rollout_lp,
        "row_weights": torch.tensor([r.weight for r in rows], dtype=torch.float32),
        "policy_versions": torch.tensor([r.policy_version for r in rows], dtype=torch.long),
        "temperature": torch.tensor([r.temperature for r in rows], dtype=torch.float32),
    }
    non_tensors = {
        "uid": np.array([r.group_id for r in rows], dtype=object),
        "rollout_id": np.array([r.rollout_id for r in rows], dtype=object),
    }
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors, meta_info=dict(meta or {}))


def prepare_batch(
    batch: TrainingBatch,
    *,
    serde: Serde | None,
    trainer_version: int,
    max_staleness: int | None,
    staleness_policy: str = "drop",
    stale_weight_decay: float = 0.5,
    vocab_size: int | None = None,
    max_positions: int | None = None,
    pad_token_id: int = 0,
) -> DataProto:
    """Resolve, validate, filter and pad one batch (the whole input path of a trainer step).

    Args:
        batch: the record from ``batches``.
        serde: decodes a claim-check payload (None: inline batches only).
        trainer_version: current trainer step (for staleness).
        max_staleness: rows staler than this are dropped or weighted by ``staleness_policy``; None
            keeps every row at its weight.
        staleness_policy, stale_weight_decay: ``rl.staleness_policy`` and ``rl.stale_weight_decay``
            (:mod:`streamrl.trainer.staleness`).
        vocab_size, max_positions: model limits checked per row (None skips the check).
        pad_token_id: padding id.

    Returns:
        The ``DataProto`` (layout in the module docstring).

    Raises:
        BadBatchError: the claim-check cannot be read, or no row left after filtering.
    """
    rows = resolve_rows(batch, serde)
    rejected: list[tuple[int, str, str]] = []
    fit: list[TrainingRow] = []
    for i, row in enumerate(rows):
        reason = model_limit_error(row, vocab_size, max_positions)
        if reason is None:
            fit.append(row)
        else:
            rejected.append((i, row.rollout_id, reason))
    rule = (
        None if max_staleness is None else StalenessRule(staleness_policy, max_staleness, stale_weight_decay)
    )
    kept, stale, weighted, empty = filter_rows(fit, trainer_version, rule)
    if not kept:
        beyond = (
            f", {len(rejected)} beyond the model's limits (row {rejected[0][0]} ({rejected[0][1]!r}): "
            f"{rejected[0][2]})"
            if rejected
            else ""
        )
        raise BadBatchError(
            batch.batch_id,
            f"empty after filtering: {len(rows)} rows in, {stale} staler than max_staleness={max_staleness} "
            f"at trainer version {trainer_version} (staleness_policy={staleness_policy}), "
            f"{empty} without trained tokens{beyond}",
        )
    staleness = [trainer_version - r.policy_version for r in rows]
    meta = {
        "staleness_mean": sum(staleness) / len(staleness),
        "staleness_max": max(staleness),
        "batch_id": batch.batch_id,
        "num_groups": batch.num_groups,
        "num_rows_in": len(rows),
        "num_rollouts": len({r.rollout_id for r in rows}),
        "dropped_stale": stale,
        "weighted_stale": weighted,
        "dropped_no_tokens": empty,
        "rejected": rejected,
    }
    return rows_to_dataproto(kept, pad_token_id=pad_token_id, meta=meta)
