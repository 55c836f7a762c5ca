"""Batched sampling from a transformers causal LM with the exact token ids and logprobs training needs.

A batch is a list of :class:`Sequence` (one per choice; a request with ``n`` choices has ``n``).
Distinct prompts are left-padded into one ``(U, L)`` tensor and prefilled once (sequences with the
same prompt, e.g. a GRPO group's rollouts, share one prefill and get copies of its KV-cache row), then
every sequence is decoded one token per step with the KV cache (``DynamicCache``), so a 200-token
answer costs linear, not quadratic, time; rows that finish are dropped from the batch and the cache.

Logprobs (what each generated token's ``logprob`` means), per ``logprobs_mode``:

- ``scaled`` (default): ``log_softmax(logits / T)[token]``, T = the request temperature. This is the
  distribution the token was sampled from when ``top_p = 1`` and ``top_k = 0`` (the RL default), and
  what the trainer recomputes: verl's actor divides the logits by the rollout temperature before the
  log-softmax (``verl/workers/actor/dp_actor.py``), and importance ratios need the behaviour policy
  under the same temperature. With top-p/top-k < full, tokens are drawn from the truncated,
  renormalised distribution but the logprob reported is still that of the untruncated
  ``softmax(logits / T)`` (the policy the trainer optimises). vLLM's ``processed_logprobs`` are
  taken after its top-k/top-p masking, so the two backends agree exactly only without truncation.
- ``raw``: ``log_softmax(logits)[token]``, the policy at temperature 1 (vLLM's default).

Greedy requests (``temperature == 0``) report ``log_softmax(logits)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

LogprobsMode = Literal["scaled", "raw"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options of one request (OpenAI names, vLLM semantics).

    Attributes:
        max_tokens: most tokens to generate (>= 1).
        temperature: softmax temperature; 0 = greedy.
        top_p: nucleus mass in (0, 1]; 1 = off.
        top_k: keep the k most likely tokens; 0 = off.
        stop: strings that end generation; the returned text stops before the match.
        stop_token_ids: token ids that end generation (besides the model's EOS).
        ignore_eos: keep generating past EOS.
        seed: per-request seed; choice i uses ``seed + i``. None = random.
        top_logprobs: alternatives reported per position (0..20).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    top_logprobs: int = 0


@dataclass
class Policy:
    """A loaded model and the policy version it is.

    Attributes:
        model: a transformers causal LM in eval mode.
        version: policy version (the trainer step that produced it; ``initial_version`` at start).
        source: the directory it was loaded from.
    """

    model: Any
    version: int
    source: str


@dataclass
class Sequence:
    """One choice being generated.

    Attributes:
        prompt_ids: prompt token ids.
        params: sampling options.
        index: choice index within its request.
        emit: called from the engine thread with ``(kind, seq, payload)`` events: ``("start", seq,
            version)``, ``("token", seq, position)``, ``("finish", seq, finish_reason)``.
        token_ids, logprobs, top: generated tokens, their logprobs, and per position the
            ``top_logprobs`` alternatives as ``(token_id, logprob)`` pairs.
        finish_reason: ``stop`` (EOS, stop token or stop string), ``length``, or ``abort``.
        stop_at: character offset of the matched stop string in the decoded text, or None.
        stop_reason: what stopped it, as vLLM reports it: the matched stop string, the stop token id
            from ``stop_token_ids``, or None (end of sequence, length, abort).
        version: policy version that generated it (set when its batch starts).
        cancelled: set by the server when the client went away; the engine drops the row.
    """

    prompt_ids: list[int]
    params: SamplingParams
    index: int = 0
    emit: Callable[[str, Sequence, Any], None] | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str | None = None
    stop_at: int | None = None
    stop_reason: str | int | None = None
    version: int = -1
    cancelled: bool = False
    enqueued_at: float = field(default_factory=time.monotonic)

    def _emit(self, kind: str, payload: Any) -> None:
        if self.emit is not None:
            self.emit(kind, self, payload)


def visible_text(tokenizer: Any, seq: Sequence) -> str:
    """The text a client sees for ``seq``: decoded without special tokens, cut at the stop string.

    Token ids are never cut: they include every sampled token (also the EOS and the tokens of a
    matched stop string), as vLLM returns them, because training needs what was sampled.
    """
    text = tokenizer.decode(seq.token_ids, skip_special_tokens=True)
    return text if seq.stop_at is None else text[: seq.stop_at]


def streamed_text(tokenizer: Any, seq: Sequence, upto: int) -> str:
    """The text of the first ``upto`` tokens that a streaming client may already see.

    The same stop-string rule as :func:`visible_text`, applied to a prefix: cut before a stop string
    matched in it, else hold back the last ``len(longest stop) - 1`` characters (they may begin one)
    and an incomplete UTF-8 character. So the streamed text is always a prefix of the final text.
    """
    text = tokenizer.decode(seq.token_ids[:upto], skip_special_tokens=True)
    stops = seq.params.stop
    hit = _find_stop(text, stops)
    if hit is not None:
        return text[: hit[0]]
    hold = max((len(x) for x in stops), default=1) - 1
    return text[: max(len(text) - hold, 0)].rstrip("\ufffd")


def _find_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """``(offset, stop string)`` of the earliest stop string in ``text``, or None."""
    hits = [(i, s) for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


class Engine:
    """Runs batches of sequences on the current :class:`Policy`; swaps policies between batches.

    Thread safety: :meth:`run_batch` is called from one thread (the batcher's); :meth:`stage` may be
    called from any thread and takes effect at the next :meth:`swap_if_staged`.

    Args:
        tokenizer: the tokenizer of the served model (fixed for the server's life).
        policy: the policy served at start.
        eos_token_ids: ids that end a sequence unless ``ignore_eos``.
        logprobs_mode: ``scaled`` or ``raw`` (see module docstring).
    """

    def __init__(
        self, tokenizer: Any, policy: Policy, eos_token_ids: list[int], logprobs_mode: LogprobsMode = "scaled"
    ) -> None:
        self.tokenizer = tokenizer
        self.policy = policy
        self.eos_token_ids = set(eos_token_ids)
        self.logprobs_mode = logprobs_mode
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_ids[0]
        self._staged: Policy | None = None
        self._lock = threading.Lock()

    # -- weight swap -------------------------------------------------------------------------------
    def stage(self, policy: Policy) -> None:
        """Make ``policy`` the next one served; replaces an earlier staged policy not yet swapped in."""
        with self._lock:
            if self._staged is None or policy.version >= self._staged.version:
                self._staged = policy

    def swap_if_staged(self) -> Policy | None:
        """Swap in the staged policy, if any (call between batches). Returns the old policy or None."""
        with self._lock:
            staged, self._staged = self._staged, None
        if staged is None:
            return None
        old, self.policy = self.policy, staged
        return old

    @property
    def staged_version(self) -> int | None:
        """Version of the policy waiting to be swapped in, or None."""
        staged = self._staged
        return None if staged is None else staged.version

    @property
    def version(self) -> int:
        """Version of the policy serving the next batch (the staged one is not counted)."""
        return self.policy.version

    # -- generation --------------------------------------------------------------------------------
    @torch.inference_mode()
    def run_batch(self, seqs: list[Sequence]) -> int:
        """Generate every sequence of ``seqs`` to completion on the current policy.

        Emits ``start`` for each sequence, ``token`` after each sampled token, ``finish`` at the end.

        Args:
            seqs: sequences with non-empty prompts whose length + ``max_tokens`` fits the context.

        Returns:
            The number of tokens generated.
        """
        policy = self.policy
        model = policy.model
        device = next(model.parameters()).device
        for s in seqs:
            s.version = policy.version
            s._emit("start", policy.version)
        for s in seqs:
            if s.cancelled:
                s.finish_reason = "abort"
                s._emit("finish", "abort")
        seqs = [s for s in seqs if not s.cancelled]
        if not seqs:
            return 0
        gens = [self._generator(s) for s in seqs]
        # Identical prompts (the n choices of a request, the rollouts of a GRPO group sent as separate
        # requests) are prefilled once; their rows of the KV cache are then copied.
        unique: dict[tuple[int, ...], int] = {}
        row_of = [unique.setdefault(tuple(s.prompt_ids), len(unique)) for s in seqs]  # seq -> prefill row
        prompts = list(unique)
        B, U, L = len(seqs), len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((U, L), self.pad_id, dtype=torch.long)  # (U, L) left-padded
        attn = torch.zeros((U, L), dtype=torch.long)  # (U, L) 1 = real token
        for i, p in enumerate(prompts):
            input_ids[i, L - len(p) :] = torch.tensor(p, dtype=torch.long)
            attn[i, L - len(p) :] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (U, L) positions ignore the padding
        temps = torch.tensor([s.params.temperature for s in seqs], dtype=torch.float32)  # (B,)
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        out = model(
            input_ids=input_ids.to(device),
            attention_mask=attn.to(device),
            position_ids=pos.to(device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :].float().cpu()  # (U, V)
        if U < B:  # one row per sequence: (U, ...) -> (B, ...)
            expand = torch.tensor(row_of, dtype=torch.long)
            cache.batch_select_indices(expand.to(device))
            logits, attn, pos = logits[expand], attn[expand], pos[expand]
        active = list(range(B))  # row -> index into seqs
        generated = 0
        while True:
            sampled = self._sample(
                logits, [seqs[i] for i in active], [gens[i] for i in active], temps[active]
            )
            generated += len(active)
            keep: list[int] = []
            for row, idx in enumerate(active):
                s = seqs[idx]
                self._append(s, sampled[row])
                if s.finish_reason is None:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(sel.to(device))
                attn, pos = attn[sel], pos[sel]
                active = [active[r] for r in keep]
            attn = torch.cat([attn, torch.ones((len(active), 1), dtype=torch.long)], dim=1)  # (B', T+1)
            pos = pos[:, -1:] + 1  # (B', 1)
            step_ids = torch.tensor([[sampled[r][0]] for r in keep], dtype=torch.long)  # (B', 1)
            out = model(
                input_ids=step_ids.to(device),
                attention_mask=attn.to(device),
                position_ids=pos.to(device),
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :].float().cpu()
        return generated

    def _generator(self, s: Sequence) -> torch.Generator:
        g = torch.Generator()
        if s.params.seed is not None:
            g.manual_seed(s.params.seed + s.index)
        else:
            g.seed()
        return g

    def _sample(
        self, logits: torch.Tensor, seqs: list[Sequence], gens: list[torch.Generator], temps: torch.Tensor
    ) -> list[tuple[int, float, list[tuple[int, float]]]]:
        """Sample one token per row. logits (B, V); temps (B,). Returns (token, logprob, top) per row."""
        greedy = temps <= 0
        scaled = logits / torch.where(greedy, torch.ones_like(temps), temps).unsqueeze(1)  # (B, V)
        logp_scaled = torch.log_softmax(scaled, dim=-1)  # (B, V)
        need_raw = self.logprobs_mode == "raw" or bool(greedy.any())
        logp_raw = torch.log_softmax(logits, dim=-1) if need_raw else logp_scaled
        results = []
        for i, s in enumerate(seqs):
            p = s.params
            if greedy[i]:
                tok = int(torch.argmax(logits[i]))
                report = logp_raw[i]
            else:
                lp = logp_scaled[i]
                if p.top_k > 0 or p.top_p < 1.0:
                    lp = _truncate(lp, p.top_k, p.top_p)
                tok = int(torch.multinomial(lp.exp(), 1, generator=gens[i]))
                report = logp_raw[i] if self.logprobs_mode == "raw" else logp_scaled[i]
            top: list[tuple[int, float]] = []
            if p.top_logprobs > 0:
                vals, ids = torch.topk(report, p.top_logprobs)
                top = [(int(t), float(v)) for t, v in zip(ids.tolist(), vals.tolist(), strict=True)]
            results.append((tok, float(report[tok]), top))
        return results

    def _append(self, s: Sequence, sampled: tuple[int, float, list[tuple[int, float]]]) -> None:
        tok, lp, top = sampled
        s.token_ids.append(tok)
        s.logprobs.append(lp)
        s.top.append(top)
        p = s.params
        if s.cancelled:
            s.finish_reason = "abort"
        elif tok in p.stop_token_ids:
            s.finish_reason, s.stop_reason = "stop", tok
        elif tok in self.eos_token_ids and not p.ignore_eos:
            s.finish_reason = "stop"
        elif p.stop:
            text = self.tokenizer.decode(s.token_ids, skip_special_tokens=True)
            hit = _find_stop(text, p.stop)
            if hit is not None:
                (s.stop_at, s.stop_reason), s.finish_reason = hit, "stop"
        if s.finish_reason is None and len(s.token_ids) >= p.max_tokens:
            s.finish_reason = "length"
        s._emit("token", len(s.token_ids) - 1)
        if s.finish_reason is not None:
            s._emit("finish", s.finish_reason)


def _truncate(logp: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then top-p (nucleus) truncation of one row of log-probs (V,), renormalised.

    Nucleus: keep the smallest set of most likely tokens whose mass reaches ``top_p`` (Holtzman et al.
    2019, "The Curious Case of Neural Text Degeneration"); the most likely token is always kept.
    """
    sorted_lp, order = torch.sort(logp, descending=True)
    keep = torch.ones_like(sorted_lp, dtype=torch.bool)
    if top_k > 0:
        keep[top_k:] = False
    if top_p < 1.0:
        mass_before = torch.cumsum(sorted_lp.exp(), dim=0) - sorted_lp.exp()
        keep &= mass_before < top_p
    keep[0] = True
    masked = torch.full_like(logp, float("-inf"))
    masked[order[keep]] = sorted_lp[keep]
    return torch.log_softmax(masked, dim=-1)
