"""Importing schemas (and its serde) must not load heavy frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "faust", "vllm", "transformers", "verl", "aiokafka", "confluent_kafka")


def test_import_loads_no_heavy_modules():
    code = (
        "import sys, json, schemas, streamrl.schemas.serde, streamrl.schemas.examples; streamrl.schemas.serde.Serde(); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_check_detects_a_heavy_import():
    code = f"import sys, json, schemas, json.decoder as torch; sys.modules['torch'] = torch; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["torch"]
