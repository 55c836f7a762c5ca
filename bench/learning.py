"""The demo's GRPO in one process: what the pipeline's learning curve would be without Kafka.

    .venv/bin/python -m bench.learning [--seeds 0,1,2] [--versions 200] [--lr 5e-4] [--groups 16] \
        [--group-size 8] [--lag 1] [--temperature 1] [--filter-zero-variance] [--stop-at-target] \
        [--set trainer.KEY=VALUE ...]

The same model (``streamrl model build --preset tiny --tokenizer char``, built once per seed into a
temporary directory), the same prompts (the model's chat template around the task's ``prompt``), the
same sampling code (:class:`streamrl.inference.engine.Engine`, temperature 1, one token), the same
rewards (``examples.max_digit.agent.score``), the same trainer step (``TrainingBatch`` ->
:func:`streamrl.trainer.batch.prepare_batch` -> :meth:`TorchBackend.train_step` with the
``trainer`` settings of ``configs/demo.yaml``, overridden by ``--lr`` and ``--set``) and the same validation (greedy, strict, the 104 held-out prompts every
``--val-every`` versions). What is missing is the pipeline: no broker, no HTTP, no processes.

``--lag L`` makes the rollouts of version ``v``'s batch come from the policy of version ``v - L``
(the pipeline with ``rl.max_staleness: 1`` samples one version behind while the trainer steps:
L = 1; L = 0 is strictly on-policy). ``--filter-zero-variance`` drops groups whose rewards are all
equal and samples more groups until the batch is full, as ``streams.filter_zero_variance`` with the
sampler's admission does. Prints per seed the val curve with distinct greedy answers and the mean
train reward of the version before, the first version at which val reaches ``--target`` and the
train rollouts sampled until then (the pipeline's CPU is per rollout), how many val prompts of each
answer the last validation got wrong, and the CPU ms of one version (sampling + step). Asserts
nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "max_digit" / "data"


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _coerce(value: str) -> object:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)


def demo_trainer_settings() -> dict:
    """The ``trainer`` section of ``configs/demo.yaml`` less its service keys: the demo's algorithm
    and optimisation settings (lr, epochs, mini-batches, entropy bonus, ...), the defaults here."""
    import yaml

    trainer = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text()).get("trainer") or {}
    service = {"save_every", "keep_last", "max_steps", "torch_threads", "micro_batch_size", "checkpoint_dir"}
    return {k: v for k, v in trainer.items() if k not in service}


def run_seed(args: argparse.Namespace, seed: int, workdir: Path) -> dict:
    """Train one seed; returns ``{"val": {version: acc}, "distinct": {...}, "reached": v|None, ...}``."""
    import torch

    from examples.max_digit.agent import score
    from streamrl.config.dev import ModelSpec
    from streamrl.config.trainer import TrainerSettings
    from streamrl.inference.engine import Engine, Policy, SamplingParams, Sequence
    from streamrl.inference.model_builder import build_model
    from streamrl.schemas import TrainingBatch, TrainingRow
    from streamrl.trainer.batch import prepare_batch
    from streamrl.trainer.torch_backend import TorchBackend

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = workdir / f"model-{seed}"
    spec = ModelSpec()  # the demo's model: dev.model's defaults (tiny, char, 200,000 characters of text)
    build_model(
        model_dir, preset=args.preset, tokenizer="char", max_chars=spec.max_chars, seed=args.model_seed
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    train, val = _load(DATA / "train.jsonl"), _load(DATA / "val.jsonl")

    def prompt_ids(text: str) -> list[int]:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    cache = {row["prompt"]: prompt_ids(row["prompt"]) for row in train + val}
    trainer_keys = {
        **demo_trainer_settings(),
        **({"lr": args.lr} if args.lr is not None else {}),
        "micro_batch_size": 1024,
        "torch_threads": 1,
        "max_steps": args.versions,
        "model_path": str(model_dir),
        **dict(args.set),
    }
    ts = TrainerSettings(**trainer_keys)
    backend = TorchBackend(ts, rollout_n=args.group_size, seed=seed)
    eos = [tok.eos_token_id]

    def snapshot(version: int) -> Policy:
        return Policy(copy.deepcopy(backend.model).eval(), version, "sim")

    engine = Engine(tok, snapshot(0), eos)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    history: dict[int, Policy] = {0: engine.policy}
    out: dict = {"seed": seed, "val": {}, "distinct": {}, "train_reward": {}, "reached": None}

    def validate(version: int) -> None:
        engine.policy = history[version]
        seqs = [Sequence(cache[r["prompt"]], SamplingParams(max_tokens=1, temperature=0.0)) for r in val]
        engine.run_batch(seqs)
        answers = [tok.decode(s.token_ids, skip_special_tokens=True) for s in seqs]
        acc = sum(score(a, r["answer"], strict=True) for a, r in zip(answers, val, strict=True)) / len(val)
        out["val"][version] = round(acc, 3)
        out["distinct"][version] = len(set(answers))
        out["wrong_by_answer"] = {  # at the last validation: expected answer -> how many were wrong
            e: sum(1 for a, r in zip(answers, val, strict=True) if r["answer"] == e and a.strip() != e)
            for e in sorted({r["answer"] for r in val})
        }
        if out["reached"] is None and acc >= args.target:
            out["reached"] = version
            out["rollouts_to_target"] = rollouts

    cpu_sample = cpu_step = 0.0
    rollouts = 0
    validate(0)
    for version in range(args.versions):
        behaviour = history[max(0, version - args.lag)]
        engine.policy = behaviour
        c0 = time.process_time()
        rows: list = []
        kept = 0
        while kept < args.groups:  # with --filter-zero-variance, sample until the batch is full (as streams)
            tasks = rng.sample(train, args.groups - kept)
            seqs, meta = [], []
            for g, task in enumerate(tasks):
                for k in range(args.group_size):
                    params = SamplingParams(max_tokens=1, temperature=args.temperature)
                    seqs.append(Sequence(cache[task["prompt"]], params))
                    meta.append((g, k, task))
            engine.run_batch(seqs)
            rollouts += len(seqs)
            groups: dict[int, list] = {}
            for s, (g, k, task) in zip(seqs, meta, strict=True):
                text = tok.decode(s.token_ids, skip_special_tokens=True)
                r = score(text, task["answer"], strict=False)
                n = len(s.token_ids)
                groups.setdefault(g, []).append(
                    TrainingRow(
                        rollout_id=f"{task['id']}/{version}/{k}",
                        group_id=f"{task['id']}/{version}/{rollouts}",
                        prompt_ids=s.prompt_ids,
                        response_ids=s.token_ids,
                        response_mask=[1] * n,
                        behaviour_logprobs=s.logprobs,
                        token_rewards=[0.0] * (n - 1) + [r],
                        reward=r,
                        policy_version=behaviour.version,
                    )
                )
            for members in groups.values():
                rewards = [r.reward for r in members]
                if args.filter_zero_variance and max(rewards) - min(rewards) <= 1e-6:
                    continue
                rows.extend(members)
                kept += 1
            if not args.filter_zero_variance:
                break
            if rollouts > 50 * args.groups * args.group_size * (version + 1):
                break  # nothing to learn from at all: train on what there is
        if not rows:
            out["train_reward"][version] = 0.0
            history[version + 1] = snapshot(version + 1)
            history.pop(version + 1 - args.lag - 1, None)
            continue
        c1 = time.process_time()
        batch = TrainingBatch(
            batch_id=f"sim-{version}",
            policy_name="policy",
            num_groups=kept,
            rows=rows,
            min_policy_version=behaviour.version,
            max_policy_version=behaviour.version,
        )
        data = prepare_batch(batch, serde=None, trainer_version=version, max_staleness=None)
        backend.train_step(data)
        c2 = time.process_time()
        cpu_sample += c1 - c0
        cpu_step += c2 - c1
        out["train_reward"][version] = round(sum(r.reward for r in rows) / len(rows), 3)
        history[version + 1] = snapshot(version + 1)
        history.pop(version + 1 - args.lag - 1, None)
        if (version + 1) % args.val_every == 0:
            validate(version + 1)
            if args.stop_at_target and out["reached"] is not None:
                break
    n = len(out["train_reward"])
    out["rollouts"] = rollouts
    out["cpu_ms_per_version"] = {
        "sampling": round(1000 * cpu_sample / n, 1),
        "trainer_step": round(1000 * cpu_step / n, 1),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--versions", type=int, default=200)
    ap.add_argument("--lr", type=float, default=None, help="trainer.lr (default: the demo's)")
    ap.add_argument("--groups", type=int, default=16, help="prompts per batch (rl.train_batch_size)")
    ap.add_argument("--group-size", type=int, default=8, help="rollouts per prompt (rl.group_size)")
    ap.add_argument("--lag", type=int, default=1, help="versions between the sampling and the trained policy")
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--stop-at-target", action="store_true")
    ap.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="worker.sampling.temperature (the trainer scores at 1; the rollout IS weights correct for it)",
    )
    ap.add_argument(
        "--filter-zero-variance",
        action="store_true",
        help="drop groups whose rewards are all equal and sample more until the batch is full (streams)",
    )
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model-seed", type=int, default=0, help="dev.model.seed (the demo builds with 0)")
    ap.add_argument("--set", action="append", default=[], type=lambda kv: tuple(kv.split("=", 1)))
    args = ap.parse_args()
    args.set = [(k.removeprefix("trainer."), _coerce(v)) for k, v in args.set]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.monotonic()
            res = run_seed(args, seed, Path(tmp))
            res["wall_s"] = round(time.monotonic() - t0, 1)
            results.append(res)
            tr = res["train_reward"]
            curve = " ".join(
                f"{v}:{a:.2f}/{res['distinct'][v]}/{tr.get(v - 1, 0.0):.2f}" for v, a in res["val"].items()
            )
            print(
                f"seed {seed}: reached {args.target} at {res['reached']} "
                f"({res.get('rollouts_to_target')} train rollouts of {res['rollouts']}); cpu ms/version "
                f"{res['cpu_ms_per_version']}; {res['wall_s']} s\n  val/distinct/train reward {curve}\n"
                f"  wrong at the last val, by answer: {res['wrong_by_answer']}",
                flush=True,
            )
    reached = [r["reached"] for r in results]
    to_target = [r.get("rollouts_to_target") for r in results]
    print(json.dumps({"args": vars(args), "reached": reached, "rollouts_to_target": to_target}))


if __name__ == "__main__":
    main()
