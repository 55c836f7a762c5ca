"""One optimization run, from its seed prompt (or its saved state) to its result files.

:func:`optimize` publishes the seed prompt (a new run) or reads the run's state back (a run with
this ``run_id`` already started: it resumes its round and re-attaches to the evaluations in flight),
runs the algorithm with a live display, and writes the results (:mod:`streamrl.optimizer.report`).
Stopping it (``stop`` set: Ctrl-C, SIGTERM) leaves the saved state as it is; running it again with
the same run id resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from streamrl.config import Settings
from streamrl.optimizer.apo import Apo
from streamrl.optimizer.display import Progress
from streamrl.optimizer.engine import Engine, OptimizerError
from streamrl.optimizer.fewshot import Fewshot
from streamrl.optimizer.guards import normalize
from streamrl.optimizer.llm import OptimizerLLM
from streamrl.optimizer.report import write_results
from streamrl.optimizer.rounds import Algorithm
from streamrl.optimizer.state import RunState
from streamrl.optimizer.transcripts import Decoder
from streamrl.resources import ResourceError, placeholders
from streamrl.schemas import resource_version

log = logging.getLogger(__name__)

__all__ = ["OptimizeResult", "optimize", "seed_text", "tokenizer_dir"]


@dataclass
class OptimizeResult:
    """How a run ended: ``interrupted`` (state saved, resumable) or not, its summary and output dir."""

    interrupted: bool
    summary: dict[str, Any]
    output_dir: Path


def seed_text(settings: Settings) -> str:
    """The seed prompt (``optimize.seed_prompt`` or the file ``optimize.seed_prompt_file``).

    Raises:
        OptimizerError: neither is set, the file cannot be read, or the template does not parse.
    """
    cfg = settings.optimize
    if cfg.seed_prompt is not None:
        text = cfg.seed_prompt
    elif cfg.seed_prompt_file is not None:
        try:
            text = Path(cfg.seed_prompt_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OptimizerError(
                f"optimize.seed_prompt_file: cannot read {cfg.seed_prompt_file}: {exc}"
            ) from exc
    else:
        raise OptimizerError(
            "optimize.seed_prompt or optimize.seed_prompt_file: the prompt to optimize is not set"
        )
    try:
        placeholders(text)
    except ResourceError as exc:
        raise OptimizerError(f"the seed prompt: {exc}") from None
    return text


def tokenizer_dir(settings: Settings) -> Path:
    """Where the policy's ``tokenizer.json`` is: ``optimize.tokenizer``, else ``inference.model``, else
    ``dev.model.path``."""
    if settings.optimize.tokenizer is not None:
        return Path(settings.optimize.tokenizer)
    if settings.inference.model is not None:
        return Path(settings.inference.model)
    return Path(settings.dev.model.path)


def _algorithm(settings: Settings, engine: Engine, decoder: Decoder) -> tuple[Algorithm, OptimizerLLM | None]:
    algo = settings.optimize.algorithm
    if algo.type == "apo":
        llm = OptimizerLLM(algo.llm)
        return Apo(engine, algo, decoder, llm), llm
    return Fewshot(engine, algo, decoder), None


def _new_state(engine: Engine, settings: Settings, run_id: str, seed: str) -> RunState:
    cfg = settings.optimize
    st = RunState(
        run_id=run_id,
        algorithm=cfg.algorithm.type,
        resource_name=cfg.resource_name,
        seed_version=resource_version("prompt_template", seed),
        seed_placeholders=sorted(placeholders(seed)),
        start_offsets=engine.start_offsets(),
    )
    engine.state = st
    engine.publish_prompt(seed, parents=[], source="seed")
    st.seen[normalize(seed)] = st.seed_version
    engine.emit("started", resource_name=st.resource_name, resource_version=st.seed_version, text=seed[:4000])
    engine.save()
    return st


def _check_resume(st: RunState, settings: Settings, seed: str) -> None:
    cfg = settings.optimize
    if st.algorithm != cfg.algorithm.type:
        raise OptimizerError(
            f"run {st.run_id} was started with --algorithm {st.algorithm}, not {cfg.algorithm.type}; "
            "use another run id for a new run"
        )
    if st.resource_name != cfg.resource_name or st.seed_version != resource_version("prompt_template", seed):
        raise OptimizerError(
            f"run {st.run_id} optimizes {st.resource_name}/{st.seed_version}; this config's seed prompt "
            f"({cfg.resource_name}) differs: use another run id for a new run"
        )


async def optimize(
    settings: Settings,
    run_id: str,
    output_dir: Path,
    *,
    console: Console | None = None,
    stop: asyncio.Event | None = None,
) -> OptimizeResult:
    """Run (or resume) the optimization ``run_id`` to its end, or until ``stop`` is set.

    Raises:
        OptimizerError: no seed prompt, no val task, a state of another run's config, the results
            feed stopped.  BrokerError: the cluster or a topic is missing.  ResourceError: a bad
            critique/edit prompt file.  StreamRLError: the tokenizer cannot be loaded.
    """
    console = console or Console()
    seed = seed_text(settings)
    decoder = Decoder(tokenizer_dir(settings))
    engine = Engine(settings, run_id)
    llm = None
    try:
        engine.load_tasks()
        st = engine.load_state()
        if st is None:
            st = _new_state(engine, settings, run_id, seed)
            console.print(
                f"run {run_id}: new; seed prompt {st.resource_name}/{st.seed_version}",
                highlight=False,
                soft_wrap=True,
            )
        else:
            _check_resume(st, settings, seed)
            engine.texts[st.seed_version] = seed
            console.print(
                f"run {run_id}: finished earlier ({st.outcome}); nothing to run, its results are "
                "written again (another run id starts a new run)"
                if st.finished
                else f"run {run_id}: resuming round {st.round}, phase {st.phase} "
                f"({sum(1 for e in st.evals.values() if e.finished)} evaluations finished, "
                f"{sum(1 for e in st.evals.values() if e.published and not e.finished)} in flight)",
                highlight=False,
                soft_wrap=True,
            )
        await engine.start(st)
        algorithm, llm = _algorithm(settings, engine, decoder)
        mode = settings.optimize.display
        if mode == "auto":
            mode = "live" if console.is_terminal else "plain"
        progress = Progress(engine, algorithm.rounds, console, mode)
        interrupted = False
        if not st.finished:
            interrupted = await _run(algorithm, progress, console, mode, stop)
        if not interrupted and not st.finished:
            st.finished_at = time.time()
            best = st.best or {}
            st.outcome = st.outcome or (
                f"completed {min(st.round - 1, algorithm.rounds)} round(s): val score "
                f"{st.history[0]['leader_score']:.3f} -> {best.get('score', 0.0):.3f} (best {best.get('version')})"
            )
            engine.emit("finished", text=st.outcome)
            engine.save()
        best_text = await engine.text_of(st.best["version"]) if st.best else None
        data = write_results(output_dir, st, best_text, len(engine.val_ids), engine.feed_bad_records)
        if interrupted:
            data["outcome"] = "interrupted (state saved: run again with the same run id to resume)"
        return OptimizeResult(interrupted, data, output_dir)
    finally:
        if llm is not None:
            await llm.aclose()
        await engine.close()


async def _run(
    algorithm: Algorithm, progress: Progress, console: Console, mode: str, stop: asyncio.Event | None
) -> bool:
    """Run the algorithm with the display; True if ``stop`` ended it first."""
    task = asyncio.ensure_future(algorithm.run())
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    live = None
    if mode == "live":
        from rich.live import Live

        live = Live(progress.render(), console=console, refresh_per_second=2, transient=False)
        live.start()
    try:
        while not task.done():
            waiters = [task, *([stopper] if stopper is not None else [])]
            await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if live is not None:
                live.update(progress.render())
            if stopper is not None and stopper.done() and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return True
        task.result()  # re-raise the algorithm's error
        return False
    finally:
        if live is not None:
            live.update(progress.render())
            live.stop()
        if stopper is not None:
            stopper.cancel()
        if not task.done():
            task.cancel()
