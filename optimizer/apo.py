"""APO: textual-gradient beam search (ProTeGi, arXiv:2305.03495; Agent Lightning's APO).

Round ``r`` (``rounds`` of them), each step a phase of the run's state so a restart resumes it:

1. ``gradient``: the parents are the beam (replicated round-robin up to ``beam_width``); for each
   parent and branch (``beam_width x branch_factor``) an evaluation of the parent on its own batch of
   ``gradient_batch_size`` train tasks, all in flight at once, keeping the recorded calls.
2. ``edit``: for each of them the optimizer LLM writes a critique from the rollouts (task, status,
   reward, error, and the conversation decoded from the optimized agent's last recorded call, cut to
   ``max_transcript_tokens``) and then an edited prompt that applies it; the guards
   (:mod:`streamrl.optimizer.guards`) reject a candidate before any rollout is spent on it. Each
   accepted candidate is published to ``resources`` with its parent. A critique or edit the
   optimizer LLM fails is a rejected candidate; when it fails them all, the run stops with an
   :class:`~streamrl.optimizer.engine.OptimizerError` (the LLM is down or misconfigured) and records
   none of them, so resuming the run id asks again.
3. ``val``: the beam and the round's candidates on the round's val batch, all in flight at once; the
   best ``beam_width`` become the beam (ties keep the older prompt).
4. ``leader``: the beam's leader on the whole val set (reused when the batch is the whole set); a
   leader better than the best so far becomes the best.

Round 0 scores the seed prompt on the whole val set (``score_first``). Unlike the original: every
evaluation of a step runs in parallel, a rollout unfinished at the deadline scores 0, candidates
that lose or add a placeholder or repeat a prompt are rejected, and a crash resumes the round.
"""

from __future__ import annotations

import asyncio
import logging
import re
from importlib import resources as package_files
from pathlib import Path

from streamrl.config.optimizer import ApoSettings
from streamrl.optimizer.engine import Engine
from streamrl.optimizer.evaluation import Evaluation
from streamrl.optimizer.guards import check_candidate, normalize
from streamrl.optimizer.llm import OptimizerLLM, OptimizerLLMError
from streamrl.optimizer.rounds import Algorithm, batches
from streamrl.optimizer.transcripts import Decoder, experiment
from streamrl.resources import ResourceError, placeholders

log = logging.getLogger(__name__)

_PROMPT_TAG = re.compile(r"<prompt>\s*(.*?)\s*</prompt>", re.DOTALL)
_FENCE = re.compile(r"^```[a-zA-Z]*\n(.*?)\n```$", re.DOTALL)
LLM_FAILED = "optimizer LLM failed"
"""Start of the reason of an edit whose critique or edit call failed (a rejected candidate's reason)."""


def load_prompt(path: Path | None, default: str, needs: set[str]) -> str:
    """A critique or edit prompt: the user's file or the built-in one, checked for its placeholders.

    Raises:
        ResourceError: the file is unreadable or lacks a placeholder it needs.
    """
    if path is None:
        text = (package_files.files("streamrl.optimizer") / "prompts" / default).read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ResourceError(f"{path}: cannot read the prompt file: {exc}") from exc
    try:
        have = placeholders(text)
    except ResourceError as exc:
        raise ResourceError(f"{path or default}: {exc}") from None
    if not needs <= have or have - needs:
        raise ResourceError(
            f"{path or default}: the prompt must use exactly the placeholders {sorted(needs)} "
            f"(it has {sorted(have)}); write other braces as {{{{ and }}}}"
        )
    return text


def extract_prompt(answer: str) -> str:
    """The new template in an edit answer: inside ``<prompt>...</prompt>``, else inside one code
    fence, else the whole answer (stripped)."""
    m = _PROMPT_TAG.search(answer)
    if m:
        return m.group(1).strip()
    text = answer.strip()
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


class Apo(Algorithm):
    """The APO algorithm over an :class:`Engine` (see the module docstring)."""

    def __init__(self, engine: Engine, cfg: ApoSettings, decoder: Decoder, llm: OptimizerLLM) -> None:
        super().__init__(engine)
        self.cfg = cfg
        self.decoder = decoder
        self.llm = llm
        self.critique_prompt = load_prompt(cfg.critique_prompt, "critique.md", {"prompt", "experiments"})
        self.edit_prompt = load_prompt(cfg.edit_prompt, "edit.md", {"prompt", "critique"})

    @property
    def rounds(self) -> int:
        return self.cfg.rounds

    async def step(self) -> None:
        st = self.st
        if st.phase == "start":
            await self.baseline()
            st.round, st.phase = 1, "gradient"
            self.engine.save()
        elif st.phase == "gradient":
            await self.engine.run_evals(self.gradient_evals())
            st.phase = "edit"
            self.engine.save()
        elif st.phase == "edit":
            await self.edits()
            st.phase = "val"
            self.engine.save()
        elif st.phase == "val":
            await self.select()
            st.phase = "leader"
            self.engine.save()
        elif st.phase == "leader":
            await self.leader()
            self.end_round()
            st.round += 1
            st.phase = "gradient"
            self.engine.save()
        else:
            raise ValueError(f"unknown apo phase {st.phase!r}")

    # ------------------------------------------------------------------ 1. gradient
    def parents(self) -> list[str]:
        beam = self.st.beam or [self.st.seed_version]
        return [beam[i % len(beam)] for i in range(self.cfg.beam_width)]

    def gradient_evals(self) -> list[Evaluation]:
        st, eng = self.st, self.engine
        if not eng.train_ids:
            raise self.error("apo needs train tasks for its critiques (publish some with split train)")
        n = self.cfg.beam_width * self.cfg.branch_factor
        task_batches = batches(eng.train_ids, self.cfg.gradient_batch_size, n, self.rng("gradient"))
        evals = []
        for i, (parent, tasks) in enumerate(
            zip([p for p in self.parents() for _ in range(self.cfg.branch_factor)], task_batches, strict=True)
        ):
            evals.append(
                eng.evaluation(f"{st.run_id}.r{st.round}.g{i}", parent, "train", tasks, keep_calls=True)
            )
        return evals

    # ------------------------------------------------------------------ 2. edit
    async def edits(self) -> None:
        st = self.st
        done = st.algo.setdefault("edits", {})
        todo = [ev for ev in self.gradient_evals() if ev.eval_id not in done]
        jobs = [asyncio.ensure_future(self.propose(ev)) for ev in todo]
        llm_failed: list[tuple[Evaluation, str | None, str | None, str | None]] = []
        try:
            for job in asyncio.as_completed(jobs):
                ev, critique, text, error = await job
                if error is not None and error.startswith(LLM_FAILED):
                    llm_failed.append((ev, critique, text, error))  # recorded below, unless all failed
                    continue
                self.admit(ev, critique, text, error)
                self.engine.save()
        finally:
            for job in jobs:
                job.cancel()
        if todo and len(llm_failed) == len(todo):
            # nothing recorded: the optimizer LLM is down or misconfigured, not the prompt's fault;
            # the same run id resumes this round and asks again
            raise self.error(
                f"apo round {st.round}: the optimizer LLM failed for all {len(todo)} critiques "
                f"({llm_failed[0][3]}); check optimize.algorithm.llm (base_url "
                f"{self.cfg.llm.base_url}, model, api key), then resume with the same run id"
            )
        for failed in llm_failed:
            self.admit(*failed)
            self.engine.save()

    async def propose(self, ev: Evaluation) -> tuple[Evaluation, str | None, str | None, str | None]:
        """Critique and edit for one gradient evaluation: ``(ev, critique, new template, error)``."""
        eng = self.engine
        try:
            parent = await eng.text_of(ev.version)
            parts = [
                experiment(
                    i + 1,
                    attempt,
                    call,
                    self.decoder,
                    self.cfg.max_transcript_tokens,
                    eng.tasks[attempt.task_id].payload,
                )
                for i, (attempt, call) in enumerate(eng.last_calls(ev))
            ]
            if not parts:
                return ev, None, None, "no rollout of the parent finished; nothing to critique"
            critique = await self.llm.complete(
                self.critique_prompt.format(prompt=parent, experiments="\n\n".join(parts))
            )
            answer = await self.llm.complete(self.edit_prompt.format(prompt=parent, critique=critique))
            return ev, critique, extract_prompt(answer), None
        except (OptimizerLLMError, ResourceError) as exc:
            return ev, None, None, f"{LLM_FAILED}: {exc}"

    def admit(self, ev: Evaluation, critique: str | None, text: str | None, error: str | None) -> None:
        """Guard a proposal and publish it when it passes (recorded either way)."""
        st, eng = self.st, self.engine
        reason = error
        version = None
        if text is not None:
            verdict = check_candidate(
                text, frozenset(st.seed_placeholders), st.seen, max_chars=self.cfg.max_prompt_chars
            )
            reason = verdict.reason
            if verdict.ok:
                version = eng.publish_prompt(
                    text, parents=[ev.version], source=f"edit of {ev.eval_id}"
                ).version
                st.seen[normalize(text)] = version
        st.algo["edits"][ev.eval_id] = {"version": version, "reason": reason}
        self.record_candidate(version, [ev.version], reason, text, critique)

    # ------------------------------------------------------------------ 3. val
    def val_batch(self) -> list[str]:
        size = self.cfg.val_batch_size
        ids = self.engine.val_ids
        if size is None or size >= len(ids):
            return list(ids)
        return sorted(self.rng("val").sample(ids, size))

    def contenders(self) -> list[str]:
        """The beam, then the round's accepted candidates (order of the edits), without repeats."""
        st = self.st
        made = [e["version"] for e in st.algo.get("edits", {}).values() if e.get("version")]
        mine = [v for v in made if st.candidates.get(v, {}).get("round") == st.round]
        out: list[str] = []
        for v in [*(st.beam or [st.seed_version]), *mine]:
            if v not in out:
                out.append(v)
        return out

    async def select(self) -> None:
        st = self.st
        tasks = self.val_batch()
        evals = [self.eval_on(v, tasks, "val", f"v-{v}") for v in self.contenders()]
        await self.engine.run_evals(evals)
        scores = {ev.version: ev.result.score for ev in evals if ev.result is not None}
        order = sorted(self.contenders(), key=lambda v: -scores[v])  # stable: older prompts win ties
        st.beam = order[: self.cfg.beam_width]
        st.algo.setdefault("val_scores", {})[str(st.round)] = scores

    # ------------------------------------------------------------------ 4. leader
    async def leader(self) -> None:
        leader = self.st.beam[0]
        ev = self.eval_on(leader, list(self.engine.val_ids), "val", f"full-{leader}")
        await self.engine.run_evals([ev])
        assert ev.result is not None
        self.st.algo.setdefault("leader", {})[str(self.st.round)] = [leader, ev.result.score]
        self.consider_best(leader, ev.result.score)

    def end_round(self) -> None:
        st = self.st
        leader, score = st.algo["leader"][str(st.round)]
        self.record_round(
            leader,
            score,
            evaluated=st.algo.get("val_scores", {}).get(str(st.round), {}),
            accepted=sum(1 for v in self.contenders() if st.candidates.get(v, {}).get("round") == st.round),
            rejected=sum(1 for r in st.rejected if r["round"] == st.round),
        )
        st.algo["edits"] = {}  # this round's; the candidates and the history keep what matters
