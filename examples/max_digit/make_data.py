"""Generate the learnable demo task: answer with the largest digit of a short digit string.

A prompt is ``n_digits`` digits (``"5037"``); the answer is the largest of them (``"7"``), one
character, so a one-token response of a character-level model can be right or wrong and the reward
is verifiable. Val is *held out* (no val prompt appears in train) and *balanced*: the same number of
prompts for every possible answer, so a policy that always gives one answer scores at most
1 / (number of answers) and is seen for what it is. Train is balanced too (``train_per_answer``
rows per answer; an answer with fewer distinct prompts repeats them, each copy its own task id),
so "always 9" is not a shortcut and no answer is drawn less often than the others.

Run from the repository root (regenerates the committed files, deterministically)::

    python examples/max_digit/make_data.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_splits(
    n_digits: int = 4,
    val_per_answer: int = 13,
    train_per_answer: int = 150,
    min_answer: int = 2,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Build (train, val) rows ``{"id", "prompt", "answer"}``; val rows also carry ``"eval": true``.

    Args:
        n_digits: digits per prompt.
        val_per_answer: held-out val prompts per answer value.
        train_per_answer: train rows per answer value (distinct prompts repeated when there are
            not that many).
        min_answer: smallest answer used (small maxima have few prompts: with 4 digits only 15
            strings have max 1, and a balanced val set needs 13 of each).
        seed: shuffling seed.

    Returns:
        ``(train, val)``; every prompt appears in at most one of them.

    Raises:
        ValueError: some answer has too few prompts for ``val_per_answer`` plus one train prompt.
    """
    rng = random.Random(seed)
    by_answer: dict[int, list[str]] = defaultdict(list)
    for digits in itertools.product("0123456789", repeat=n_digits):
        s = "".join(digits)
        by_answer[int(max(s))].append(s)
    train, val, repeats = [], [], []
    for answer in range(min_answer, 10):
        prompts = sorted(by_answer[answer])
        if len(prompts) <= val_per_answer:
            raise ValueError(
                f"answer {answer} has {len(prompts)} prompts: too few for {val_per_answer} val + train"
            )
        rng.shuffle(prompts)
        val += [
            {"id": f"val-{p}", "prompt": p, "answer": str(answer), "eval": True}
            for p in prompts[:val_per_answer]
        ]
        rest = prompts[val_per_answer : val_per_answer + train_per_answer]
        train += [{"id": f"train-{p}", "prompt": p, "answer": str(answer)} for p in rest]
        # an answer with fewer prompts (max 2: 52 left after val) repeats them up to
        # train_per_answer, each copy its own task id, so every answer is drawn equally often
        repeats += [
            {"id": f"train-{p}-{i // len(rest)}", "prompt": p, "answer": str(answer)}
            for i, p in enumerate(rest * (train_per_answer // len(rest)), start=len(rest))
        ][: train_per_answer - len(rest)]
    rng.shuffle(train)
    rng.shuffle(val)
    spread = random.Random(seed + 1)  # the copies go in at random places; the rest stays as it was
    for row in repeats:
        train.insert(spread.randrange(len(train) + 1), row)
    return train, val


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def main() -> None:
    """Write ``data/train.jsonl`` and ``data/val.jsonl`` next to this file (or to ``--out``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "data")
    ap.add_argument("--n-digits", type=int, default=4)
    ap.add_argument("--val-per-answer", type=int, default=13)
    ap.add_argument("--train-per-answer", type=int, default=150)
    ap.add_argument("--min-answer", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    train, val = make_splits(a.n_digits, a.val_per_answer, a.train_per_answer, a.min_answer, a.seed)
    write_jsonl(a.out / "train.jsonl", train)
    write_jsonl(a.out / "val.jsonl", val)
    print(f"wrote {len(train)} train and {len(val)} val prompts to {a.out}")


if __name__ == "__main__":
    main()
