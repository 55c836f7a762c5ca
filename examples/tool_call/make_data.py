"""Generate the tool-call tasks (``data/train.jsonl``, ``data/val.jsonl``): ``python -m examples.tool_call.make_data``.

Each row: ``id``, ``question`` (a user request), ``tool`` (the tool it needs) and ``arguments`` (the
exact call). Requests come from templates filled with cities, currencies, amounts and durations;
the val set uses cities, currency pairs and numbers that never appear in train, and no row uses the
values of the agent's example exchanges. Deterministic (seeded).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CITIES = [
    "Paris", "Tokyo", "Madrid", "Berlin", "Cairo", "Lima", "Toronto", "Sydney", "Mumbai", "Rome",
    "Nairobi", "Seoul", "Dublin", "Lisbon", "Vienna", "Prague", "Chicago", "Boston", "Denver", "Athens",
    "Havana", "Quito", "Manila", "Hanoi", "Dakar", "Accra", "Zurich", "Munich", "Warsaw", "Helsinki",
]  # fmt: skip
CURRENCIES = ["USD", "EUR", "CHF", "CAD", "AUD", "INR", "CNY", "SEK", "MXN", "BRL"]
WEATHER = [
    "What's the weather in {city} in {unit}?",
    "How warm is it in {city}? Answer in {unit}.",
    "Tell me the temperature in {city} in {unit}.",
    "Weather for {city} please, in {unit}.",
]
CURRENCY = [
    "Convert {amount} {src} to {dst}.",
    "How much is {amount} {src} in {dst}?",
    "What is {amount} {src} worth in {dst}?",
]
TIMER = [
    "Set a timer for {minutes} minutes.",
    "Start a {minutes} minute timer.",
    "Remind me in {minutes} minutes.",
]


def make_rows(
    rng: random.Random, n: int, cities: list[str], pairs: list[tuple[str, str]], numbers: list[int]
) -> list[dict]:
    """``n`` tasks, a third per tool, from the given value pools."""
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            city, unit = rng.choice(cities), rng.choice(["celsius", "fahrenheit"])
            q = rng.choice(WEATHER).format(city=city, unit=unit)
            rows.append({"question": q, "tool": "get_weather", "arguments": {"city": city, "unit": unit}})
        elif kind == 1:
            (src, dst), amount = rng.choice(pairs), rng.choice(numbers)
            q = rng.choice(CURRENCY).format(amount=amount, src=src, dst=dst)
            args = {"amount": amount, "from_currency": src, "to_currency": dst}
            rows.append({"question": q, "tool": "convert_currency", "arguments": args})
        else:
            minutes = rng.choice([m for m in numbers if m <= 120])
            q = rng.choice(TIMER).format(minutes=minutes)
            rows.append({"question": q, "tool": "set_timer", "arguments": {"minutes": minutes}})
    return rows


def main(out_dir: Path = Path(__file__).parent / "data") -> None:
    """Write 600 train and 60 val tasks (disjoint value pools) into ``out_dir``."""
    rng = random.Random(0)
    pairs = [(a, b) for a in CURRENCIES for b in CURRENCIES if a != b]
    rng.shuffle(pairs)
    numbers = [n for n in range(2, 100) if n != 3 and n != 40]  # 3 and 40 are the agent's examples
    rng.shuffle(numbers)
    cities = list(CITIES)
    rng.shuffle(cities)
    train = make_rows(rng, 600, cities[:24], pairs[:70], numbers[:75])
    val = make_rows(rng, 60, cities[24:], pairs[70:], numbers[75:])
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("val", val)):
        with (out_dir / f"{split}.jsonl").open("w") as f:
            for i, row in enumerate(rows):
                row = {"id": f"{split}-{i:04d}", **row, **({"eval": True} if split == "val" else {})}
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
