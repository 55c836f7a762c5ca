"""Serde micro-benchmark: encode/decode records/s and bytes/record, Avro (fastavro codec) vs JSON.

Record: one LLMRequest with 4,096 response tokens + 4,096 float32 logprobs and 512 prompt tokens
(tests.support.records.llm_request), plus a 64-row TrainingBatch (128 prompt + 256 response tokens per row).

Run: ``.venv/bin/python -m bench.serde [--seconds 1.0]``. Single process, single thread; rates are records
per CPU-second of this process (wall-clock rates on an idle core are about the same). Not a test.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from streamrl.schemas import LLMRequest, TrainingBatch
from streamrl.schemas.serde import Serde
from tests.support import records as ex


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per CPU-second of `fn` (process CPU time, so other load on a shared machine matters less),
    measured for about `seconds` of CPU time after a short warm-up."""
    for _ in range(3):
        fn()
    n, start = 0, time.process_time()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.process_time()
        if now >= deadline:
            return n / (now - start)


def bench_record(record, record_type, seconds: float) -> list[tuple[str, float, float, int]]:
    """(format, encode rec/s, decode rec/s, bytes/record) rows for one record."""
    soe, full = Serde(), Serde(full_validation=True)
    confluent = Serde(registry_url="mock://bench")
    rows = []
    serdes = (("avro single-object", soe), ("avro confluent framing", confluent))
    for name, serde in serdes:
        data = serde.encode(record)
        rows.append(
            (
                name,
                rate(lambda s=serde: s.encode(record), seconds),
                rate(lambda s=serde, d=data: s.decode(d, record_type), seconds),
                len(data),
            )
        )
    data = soe.encode(record)
    rows.append(
        (
            "avro, full pydantic validation on decode",
            rows[0][1],
            rate(lambda: full.decode(data, record_type), seconds),
            len(data),
        )
    )
    text = record.model_dump_json().encode()
    rows.append(
        (
            "json (pydantic model_dump_json / model_validate_json)",
            rate(lambda: record.model_dump_json().encode(), seconds),
            rate(lambda: record_type.model_validate_json(text), seconds),
            len(text),
        )
    )
    return rows


def bench_old_version(seconds: float) -> float:
    """Decode rate of v1-written LLMRequest bytes through schema resolution into v2."""
    import io

    from fastavro import schemaless_writer  # bench only: builds v1 bytes like an old producer would

    from streamrl.schemas.avro import catalog

    v1 = catalog().history["LLMRequest"][0]
    record = ex.llm_request()
    buf = io.BytesIO(v1.soe_header)
    buf.seek(len(v1.soe_header))
    schemaless_writer(buf, v1.parsed, record.model_dump(exclude={"ttft_ms"}) | {"schema_version": 1})
    data, serde = buf.getvalue(), Serde()
    return rate(lambda: serde.decode(data, LLMRequest), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure, s")
    args = parser.parse_args()
    cases = [
        ("LLMRequest, 4,096 response tokens + logprobs, 512 prompt tokens", ex.llm_request(), LLMRequest),
        (
            "TrainingBatch, 64 rows x (128 prompt + 256 response tokens)",
            ex.training_batch(num_rows=64),
            TrainingBatch,
        ),
    ]
    for title, record, record_type in cases:
        print(f"\n{title}")
        print(
            f"  {'format (rates per CPU-second)':<56} {'encode rec/s':>12} {'decode rec/s':>12} {'bytes/rec':>10}"
        )
        for name, enc, dec, size in bench_record(record, record_type, args.seconds):
            print(f"  {name:<56} {enc:>12,.0f} {dec:>12,.0f} {size:>10,}")
    print(
        f"\nLLMRequest v1 bytes -> v2 reader (schema resolution): {bench_old_version(args.seconds):,.0f} rec/s"
    )


if __name__ == "__main__":
    main()
