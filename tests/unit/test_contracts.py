"""Each rule that crosses a stage boundary has one home in ``schemas/``, and both sides use it.

These tests put the two sides of a contract next to each other (what one stage writes, the other
reads) and check that no second definition comes back.
"""

from __future__ import annotations

from pathlib import Path

from streamrl.schemas import TrainingBatch
from streamrl.schemas.serde import Serde


def test_a_claim_check_written_by_streams_is_trained_by_the_trainer(tmp_path: Path) -> None:
    from streamrl.streams.convert import batch_record
    from streamrl.streams.groups import Batch
    from streamrl.trainer.batch import prepare_batch

    rows = [
        {
            "rollout_id": f"t/0/{k}",
            "group_id": "t/0",
            "agent_name": None,
            "prompt_ids": [1, 2, 3],
            "response_ids": [4, 5],
            "response_mask": [1, 1],
            "behaviour_logprobs": [-0.5, -1.5],
            "token_rewards": [0.0, float(k)],
            "reward": float(k),
            "policy_version": 4,
            "weight": 1.0,
        }
        for k in range(4)
    ]
    serde = Serde()
    record, data = batch_record(
        Batch("b-x", ["t/0"], rows, ts=1.0, last_event_ts=1.0),
        policy_name="policy",
        serde=serde,
        claim_check_bytes=16,
        blob_dir=str(tmp_path),
    )
    assert record.claim_check is not None and record.rows is None
    on_topic = serde.decode(data, TrainingBatch)  # what the trainer receives from `batches`
    dp = prepare_batch(on_topic, serde=Serde(), trainer_version=4, max_staleness=0, vocab_size=8)
    assert dp.batch["responses"].tolist() == [[4, 5]] * 4
    assert list(dp.non_tensor_batch["rollout_id"]) == [r["rollout_id"] for r in rows]


def test_no_stage_reads_or_writes_claim_check_files_itself() -> None:
    """The claim-check file is read and written only by ``schemas/claim_check.py``."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("streams", "trainer", "producers", "consumers", "inference", "streamrl", "dev", "cli"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "claim_check" in text and (
                "hashlib" in text or "read_bytes()" in text or "digest_bytes" in text
            ):
                offenders.append(str(path.relative_to(root)))
    assert not offenders, f"claim-check file handling outside schemas/claim_check.py: {offenders}"


# -- the inference <-> gateway HTTP contract ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_FOLDERS = (
    "schemas",
    "streamrl",
    "producers",
    "consumers",
    "inference",
    "streams",
    "trainer",
    "optimizer",
    "cli",
    "dev",
    "bench",
    "examples",
)


class _CharTokenizer:
    """Enough of a tokenizer for :class:`streamrl.inference.protocol.TokenTable`: token i is ``chr(97 + i)``."""

    all_special_ids = ()

    def convert_ids_to_tokens(self, i: int) -> str:
        return chr(97 + i)


def _seq(prompt: list[int], tokens: list[int], logprobs: list[float], index: int = 0):
    from streamrl.inference.engine import SamplingParams, Sequence

    s = Sequence(prompt, SamplingParams(max_tokens=8), index=index)
    s.token_ids, s.logprobs, s.top, s.finish_reason = tokens, logprobs, [[] for _ in tokens], "stop"
    return s


def test_the_gateway_reads_what_the_inference_servers_write() -> None:
    """The CPU server's bodies, and the vLLM front's version tagging of a vLLM stream, parsed by the gateway."""
    import orjson

    from streamrl.consumers.recording import parse_response, parse_sse
    from streamrl.inference.protocol import TokenTable, chat_response, completion_response
    from streamrl.inference.vllm_backend import tag_sse_line

    table = TokenTable(_CharTokenizer())
    seqs = [_seq([1, 2, 3], [4, 5], [-0.5, -0.25]), _seq([1, 2, 3], [6], [-1.0], index=1)]
    body = chat_response(model="p", seqs=seqs, texts=["ef", "g"], table=table, with_tools=False, version=7)
    parsed = parse_response(orjson.dumps(body))
    assert parsed.policy_version == 7
    got = [(c.index, c.prompt_token_ids, c.response_token_ids, c.response_logprobs) for c in parsed.choices]
    assert got == [(0, [1, 2, 3], [4, 5], [-0.5, -0.25]), (1, [1, 2, 3], [6], [-1.0])]
    body = completion_response(model="p", seqs=seqs[:1], texts=["ef"], table=table, version=2)
    [c] = parse_response(body).choices
    assert (c.prompt_token_ids, c.response_token_ids, c.response_logprobs) == (
        [1, 2, 3],
        [4, 5],
        [-0.5, -0.25],
    )
    # a vLLM chat stream (vLLM's own field names), tagged by the vLLM front with the version
    vllm_stream = [
        'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}], "prompt_token_ids": [9, 8]}',
        'data: {"choices": [{"index": 0, "delta": {"content": "x"}, "token_ids": [3],'
        ' "logprobs": {"content": [{"token": "x", "logprob": -0.1}]}}]}',
        'data: {"choices": [{"index": 0, "delta": {}, "token_ids": [], "finish_reason": "stop"}]}',
        "data: [DONE]",
    ]
    raw = "\n\n".join(tag_sse_line(line, 5) for line in vllm_stream).encode()
    parsed = parse_sse(raw)
    assert parsed.policy_version == 5
    [c] = parsed.choices
    assert (c.prompt_token_ids, c.response_token_ids, c.response_logprobs, c.finish_reason) == (
        [9, 8],
        [3],
        [-0.1],
        "stop",
    )


def test_the_gateway_and_the_vllm_front_force_the_same_fields_and_pass_the_version_header() -> None:
    from streamrl.inference.vllm_backend import prepare_body
    from streamrl.schemas.inference_http import (
        PASSED_RESPONSE_HEADERS,
        force_training_fields,
        version_headers,
    )

    for chat, body in (
        (True, {"messages": []}),
        (False, {"prompt": "a"}),
        (False, {"prompt": "a", "logprobs": 3}),
    ):
        front = prepare_body(dict(body), chat=chat, model="m")
        assert front == {**force_training_fields(dict(body), chat=chat), "model": "m"}
    assert set(version_headers(3)) <= set(PASSED_RESPONSE_HEADERS)  # the gateway hands the server's header on


def _string_constants(tree) -> list[tuple[int, str]]:
    """``(line, text)`` of every str/bytes constant that is not a docstring."""
    import ast

    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (str, bytes))
            and id(node) not in docstrings
        ):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            out.append((node.lineno, text))
    return out


def test_no_second_definition_of_the_http_contract() -> None:
    """Header and field names of the HTTP contract appear as literals only in ``schemas/inference_http.py``."""
    import ast

    headers = ("x-policy-version", "x-streamrl-agent")
    fields = ("return_token_ids", "prompt_token_ids", "token_ids", "token_logprobs")
    home = ROOT / "schemas" / "inference_http.py"
    records = ROOT / "schemas" / "records.py"  # LLMRequest.prompt_token_ids: a record field, not the HTTP one
    offenders = []
    for folder in PRODUCT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in (home, records):
                continue
            for line, text in _string_constants(ast.parse(path.read_text(encoding="utf-8"))):
                low = text.lower()
                hit = [h for h in headers if h in low]
                hit += [f for f in fields if text == f or f'"{f}"' in text]
                if hit:
                    offenders.append(f"{path.relative_to(ROOT)}:{line}: {hit}")
    assert not offenders, "use the names of streamrl.schemas.inference_http instead:\n" + "\n".join(offenders)


# -- one error hierarchy ------------------------------------------------------------------------------


def _exception_classes() -> dict[str, list[tuple[str, list[str]]]]:
    """Exception classes defined in product code: name -> [(file, base names)] (AST, nothing imported)."""
    import ast
    import builtins

    classes: dict[str, list[tuple[str, list[str]]]] = {}
    for folder in PRODUCT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [
                        b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases
                    ]
                    classes.setdefault(node.name, []).append((str(path.relative_to(ROOT)), bases))

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, BaseException):
            return True
        if name in seen or name not in classes:
            return False
        return any(is_exception(b, seen | {name}) for _, bases in classes[name] for b in bases)

    return {name: defs for name, defs in classes.items() if is_exception(name)}


def test_every_error_derives_from_streamrl_error_and_is_defined_once() -> None:
    classes = _exception_classes()
    twice = {name: [f for f, _ in defs] for name, defs in classes.items() if len(defs) > 1}
    assert not twice, f"an error class defined more than once (define a shared one in schemas/): {twice}"

    def reaches_base(name: str) -> bool:
        return name == "StreamRLError" or any(
            reaches_base(b) for b in classes.get(name, [("", [])])[0][1] if b in classes
        )

    outside = sorted(f"{defs[0][0]}: {name}" for name, defs in classes.items() if not reaches_base(name))
    assert not outside, f"errors that do not derive from StreamRLError: {outside}"
    assert {"CheckpointError", "SchemaError", "ClaimCheckError"} <= set(classes)
    assert classes["CheckpointError"][0][0] == "schemas/errors.py"


def test_the_stages_raise_the_one_checkpoint_error() -> None:
    from streamrl.errors import CheckpointError
    from streamrl.inference import reload
    from streamrl.trainer import checkpoint

    assert reload.CheckpointError is CheckpointError and checkpoint.CheckpointError is CheckpointError
    assert CheckpointError("x", "digest").reason == "digest"


# -- one definition of the validation reward ----------------------------------------------------------


def test_dev_shows_the_validation_reward_streams_publishes() -> None:
    """Val trajectories (a failure, a timeout, a failure re-issued and then succeeded) go through the
    streams computation; dev's display and summary read the published record, failures as 0."""
    from streamrl.dev.stats import RunStats
    from streamrl.schemas import Split, Task
    from streamrl.streams.validation import add_outcome, result

    stats = RunStats()
    for i in range(4):
        stats.on_task(Task(task_id=f"v{i}", split=Split.val, payload="{}"))
    entry = None
    for rid, status, reward in [
        ("val/5/v0/0", "succeeded", 1.0),
        ("val/5/v1/0", "failed", None),
        ("val/5/v2/0", "timeout", None),
        ("val/5/v3/0", "failed", None),
        ("val/5/v3/0", "succeeded", 1.0),  # the re-issued attempt
    ]:
        entry = add_outcome(entry, rid, status, reward, 1.0) or entry
        stats.on_validation(result("policy", 5, entry))
    assert stats.val_complete(5) and stats.val_means() == {5: 0.5}
    assert stats.summary(1.0)["reward_last"] == 0.5


def test_only_streams_computes_the_validation_reward() -> None:
    """``ValidationResult`` is built by the one scoring rule (``schemas/scoring.py``), which streams
    calls; everyone else reads the record (the optimizer scores its evaluations with the same rule)."""
    import ast

    from streamrl.schemas import scoring
    from streamrl.streams import validation

    assert validation.add_outcome is scoring.add_outcome
    home = ROOT / "schemas" / "scoring.py"
    builders = []
    for folder in PRODUCT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == home:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", "")) == "ValidationResult"
                ):
                    builders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not builders, f"the validation reward is computed only by schemas/scoring.py: {builders}"
