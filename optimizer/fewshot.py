"""Few-shot bootstrapping: demonstrations from the best rollouts, then a search over which and how many.

Like DSPy's ``BootstrapFewShotWithRandomSearch``, over the rollout workers and without an optimizer
LLM (it runs wholly on CPU):

- round 0, ``bootstrap``: the seed prompt runs on ``bootstrap_tasks`` train tasks (keeping the
  recorded calls) and on the whole val set (``score_first``), both in flight at once. Every rollout
  whose reward is at least ``min_reward`` gives a demonstration: ``demo_template`` filled with the
  task's payload fields and ``{response}``, the answer of the rollout's last recorded call decoded
  from its token ids. The ``pool_size`` best (highest reward, one per task, none twice) are kept, in order.
- rounds 1..``rounds``, ``search``: ``candidates_per_round`` new candidates, each the seed prompt
  followed (or, ``position: before``, preceded) by ``header`` and a seeded choice of ``k`` pool demonstrations (``k`` from
  ``demo_counts``; never a subset tried before), evaluated on the whole val set all at once; the
  best one so far is the best prompt. Demonstrations are inserted with their braces doubled, so the
  template's placeholders are the seed's (the guards check it anyway).
"""

from __future__ import annotations

import logging
from typing import Any

from streamrl.config.optimizer import FewshotSettings
from streamrl.optimizer.engine import Engine
from streamrl.optimizer.guards import check_candidate, normalize
from streamrl.optimizer.rounds import Algorithm, batches
from streamrl.optimizer.transcripts import Decoder, answer

log = logging.getLogger(__name__)

MAX_TRIES = 50
"""Draws per candidate before the search gives up finding a subset not tried yet."""


def escape(text: str) -> str:
    """``text`` as literal template text (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


class Fewshot(Algorithm):
    """The few-shot algorithm over an :class:`Engine` (see the module docstring)."""

    def __init__(self, engine: Engine, cfg: FewshotSettings, decoder: Decoder) -> None:
        super().__init__(engine)
        self.cfg = cfg
        self.decoder = decoder

    @property
    def rounds(self) -> int:
        return self.cfg.rounds

    async def step(self) -> None:
        st = self.st
        if st.phase == "start":
            await self.bootstrap()
            st.round, st.phase = 1, "search"
            if not st.algo["pool"]:
                st.phase = "done"
                st.outcome = (
                    f"no bootstrap rollout reached min_reward {self.cfg.min_reward}: no demonstration to add"
                )
            self.engine.save()
        elif st.phase == "search":
            await self.search()
            st.round += 1
            self.engine.save()
        else:
            raise ValueError(f"unknown fewshot phase {st.phase!r}")

    # ------------------------------------------------------------------ round 0
    async def bootstrap(self) -> None:
        st, eng = self.st, self.engine
        if not eng.train_ids:
            raise self.error(
                "fewshot bootstraps demonstrations from train tasks; publish some with split train"
            )
        n = self.cfg.bootstrap_tasks or len(eng.train_ids)
        (tasks,) = batches(eng.train_ids, n, 1, self.rng("bootstrap"))
        boot = eng.evaluation(f"{st.run_id}.r0.boot", st.seed_version, "train", tasks, keep_calls=True)
        base = self.eval_on(st.seed_version, list(eng.val_ids), "val", f"full-{st.seed_version}")
        await eng.run_evals([boot, base])
        st.algo["pool"] = self.pool(boot)
        st.algo["bootstrap_score"] = boot.result.score if boot.result else None
        await self.baseline()  # the val evaluation is finished: this only records it

    def pool(self, boot: Any) -> list[dict[str, Any]]:
        """The demonstrations of the bootstrap evaluation, best first (``{task_id, reward, text}``)."""
        eng = self.engine
        found = []
        for attempt, call in eng.last_calls(boot):
            if (
                attempt.status != "succeeded"
                or attempt.reward is None
                or attempt.reward < self.cfg.min_reward
            ):
                continue
            if call is None:
                log.warning(
                    "task %s: succeeded but no recorded call was read; not a demonstration", attempt.task_id
                )
                continue
            fields = {k: v for k, v in eng.payload(attempt.task_id).items() if k != "response"}
            try:
                text = self.cfg.demo_template.format(**fields, response=answer(call, self.decoder))
            except (KeyError, IndexError, ValueError) as exc:
                log.warning("task %s: demo_template cannot be filled (%r); skipped", attempt.task_id, exc)
                continue
            found.append({"task_id": attempt.task_id, "reward": float(attempt.reward), "text": text})
        found.sort(key=lambda d: -d["reward"])  # stable: task order among equals
        unique: dict[str, dict[str, Any]] = {}
        for demo in found:  # two tasks with the same request and answer are one demonstration
            unique.setdefault(normalize(demo["text"]), demo)
        return list(unique.values())[: self.cfg.pool_size]

    # ------------------------------------------------------------------ rounds 1..
    def template(self, seed: str, demos: list[str]) -> str:
        """The seed with ``demos`` (``header`` first, unless empty) after it, or before it with
        ``position: before``; the demonstrations' braces doubled."""
        sep = self.cfg.separator
        body = sep.join(escape(d) for d in demos)
        if self.cfg.header:
            body = f"{escape(self.cfg.header)}\n{body}"
        return f"{body}{sep}{seed}" if self.cfg.position == "before" else f"{seed}{sep}{body}"

    def draw(self, tried: set[str]) -> list[int] | None:
        """A new subset of pool indices (in pool order), or None when none is left to find."""
        pool = self.st.algo["pool"]
        counts = [k for k in self.cfg.demo_counts if k <= len(pool)]
        rng = self.rng(f"draw-{len(tried)}")
        for _ in range(MAX_TRIES):
            k = rng.choice(counts)
            pick = sorted(rng.sample(range(len(pool)), k))
            if ",".join(map(str, pick)) not in tried:
                return pick
        return None

    async def search(self) -> None:
        st, eng = self.st, self.engine
        seed = await eng.text_of(st.seed_version)
        pool = st.algo["pool"]
        tried = set(st.algo.setdefault("tried", []))
        made = st.algo.setdefault("made", {})  # round -> versions (a resumed round reuses them)
        versions = made.get(str(st.round))
        if versions is None:
            versions = []
            for _ in range(self.cfg.candidates_per_round):
                pick = self.draw(tried)
                if pick is None:
                    break
                key = ",".join(map(str, pick))
                tried.add(key)
                st.algo["tried"].append(key)
                text = self.template(seed, [pool[i]["text"] for i in pick])
                verdict = check_candidate(text, frozenset(st.seed_placeholders), st.seen, max_chars=10**9)
                note = "demonstrations from tasks " + ", ".join(pool[i]["task_id"] for i in pick)
                if not verdict.ok:
                    self.record_candidate(None, [st.seed_version], verdict.reason, text, note)
                    continue
                version = eng.publish_prompt(text, parents=[st.seed_version], source=note).version
                st.seen[normalize(text)] = version
                versions.append(version)
                self.record_candidate(version, [st.seed_version], None, text, note)
            made[str(st.round)] = versions
            eng.save()
        evals = [self.eval_on(v, list(eng.val_ids), "val", f"v-{v}") for v in versions]
        await eng.run_evals(evals)
        scores = {ev.version: ev.result.score for ev in evals if ev.result is not None}
        leader = max(versions, key=lambda v: scores[v]) if versions else st.best["version"]  # type: ignore[index]
        leader_score = scores.get(leader, st.best["score"])  # type: ignore[index]
        self.consider_best(leader, leader_score)
        self.record_round(
            leader,
            leader_score,
            scores,
            len(versions),
            sum(1 for r in st.rejected if r["round"] == st.round),
        )
