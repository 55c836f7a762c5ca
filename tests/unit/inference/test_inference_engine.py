"""The batched engine: logprobs equal a plain forward pass, seeds, stops, swaps between batches."""

from __future__ import annotations

import pytest
import torch

from streamrl.inference.engine import Engine, Policy, SamplingParams, Sequence, streamed_text, visible_text


def _prompts(tokenizer, n: int) -> list[list[int]]:
    out = []
    for k in range(n):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is " + "1+" * (k * 3) + "1?"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


def _forward_logprobs(model, seq: Sequence, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of the generated tokens, from one unpadded forward pass."""
    ids = torch.tensor([seq.prompt_ids + seq.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()  # (T, V)
    p = len(seq.prompt_ids)
    lp = torch.log_softmax(logits[p - 1 : -1] / temperature, dim=-1)  # (R, V)
    return lp.gather(-1, torch.tensor(seq.token_ids)[:, None])[:, 0]


@pytest.fixture
def engine(tokenizer, model) -> Engine:
    return Engine(tokenizer, Policy(model, 0, "m"), [tokenizer.eos_token_id], "scaled")


@pytest.mark.parametrize("mode,temperature", [("scaled", 0.7), ("scaled", 1.0), ("raw", 0.7)])
def test_logprobs_match_forward_pass_with_left_padding(
    tokenizer, model, mode: str, temperature: float
) -> None:
    eng = Engine(tokenizer, Policy(model, 0, "m"), [tokenizer.eos_token_id], mode)  # type: ignore[arg-type]
    seqs = [
        Sequence(p, SamplingParams(max_tokens=12 + i, temperature=temperature, seed=i))
        for i, p in enumerate(_prompts(tokenizer, 4))
    ]
    assert len({len(s.prompt_ids) for s in seqs}) == 4  # different lengths: left padding is exercised
    generated = eng.run_batch(seqs)
    assert generated == sum(len(s.token_ids) for s in seqs)
    for s in seqs:
        assert len(s.logprobs) == len(s.token_ids) >= 1
        expected = _forward_logprobs(model, s, temperature if mode == "scaled" else 1.0)
        torch.testing.assert_close(torch.tensor(s.logprobs), expected, atol=2e-4, rtol=0)


def test_identical_prompts_share_one_prefill_and_keep_exact_logprobs(tokenizer, model) -> None:
    eng = Engine(tokenizer, Policy(model, 0, "m"), [tokenizer.eos_token_id], "scaled")
    a, b = _prompts(tokenizer, 2)
    seqs = [
        Sequence(p, SamplingParams(max_tokens=10, seed=i, ignore_eos=True))
        for i, p in enumerate([a, b, a, a, b])
    ]
    calls = []
    hook = model.register_forward_pre_hook(
        lambda _m, args, kw: calls.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        eng.run_batch(seqs)
    finally:
        hook.remove()
    assert calls[0] == (2, max(len(a), len(b)))  # one prefill row per distinct prompt
    assert all(c[0] == 5 and c[1] == 1 for c in calls[1:])  # then every sequence decodes
    for s in seqs:
        torch.testing.assert_close(
            torch.tensor(s.logprobs), _forward_logprobs(model, s, 1.0), atol=2e-4, rtol=0
        )
    alone = Sequence(a, SamplingParams(max_tokens=10, seed=2, ignore_eos=True))
    eng.run_batch([alone])
    assert alone.token_ids == seqs[2].token_ids  # same seed, same tokens, shared prefill or not


def test_greedy_is_argmax_and_reports_raw_logprobs(tokenizer, model, engine: Engine) -> None:
    s = Sequence(_prompts(tokenizer, 1)[0], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    engine.run_batch([s])
    ids = torch.tensor([s.prompt_ids + s.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]
    p = len(s.prompt_ids)
    assert s.token_ids == logits[p - 1 : -1].argmax(-1).tolist()
    torch.testing.assert_close(torch.tensor(s.logprobs), _forward_logprobs(model, s, 1.0), atol=2e-4, rtol=0)


def test_seeded_sampling_does_not_depend_on_batch_composition(tokenizer, engine: Engine) -> None:
    prompts = _prompts(tokenizer, 3)
    alone = Sequence(prompts[1], SamplingParams(max_tokens=10, seed=7, ignore_eos=True))
    engine.run_batch([alone])
    batch = [
        Sequence(p, SamplingParams(max_tokens=10, seed=s, ignore_eos=True))
        for s, p in zip((1, 7, 3), prompts, strict=True)
    ]
    engine.run_batch(batch)
    assert batch[1].token_ids == alone.token_ids
    assert batch[0].token_ids != alone.token_ids


def test_top_k_one_equals_greedy_and_top_logprobs_are_sorted(tokenizer, engine: Engine) -> None:
    p = _prompts(tokenizer, 1)[0]
    greedy = Sequence(p, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    topk = Sequence(
        p, SamplingParams(max_tokens=6, temperature=1.0, top_k=1, ignore_eos=True, top_logprobs=3)
    )
    engine.run_batch([greedy, topk])
    assert topk.token_ids == greedy.token_ids
    for tok, lp, top in zip(topk.token_ids, topk.logprobs, topk.top, strict=True):
        assert len(top) == 3 and top[0][0] == tok and top[0][1] == pytest.approx(lp)
        assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)


def test_finish_reasons_length_stop_token_and_stop_string(tokenizer, engine: Engine) -> None:
    p = _prompts(tokenizer, 1)[0]
    length = Sequence(p, SamplingParams(max_tokens=5, ignore_eos=True))
    engine.run_batch([length])
    assert length.finish_reason == "length" and len(length.token_ids) == 5
    # Stop on whatever the greedy continuation's 3rd token is: as a stop token id, and as a stop string.
    greedy = Sequence(p, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    engine.run_batch([greedy])
    third = greedy.token_ids[2]
    by_id = Sequence(
        p, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, stop_token_ids=(third,))
    )
    engine.run_batch([by_id])
    assert (
        by_id.finish_reason == "stop"
        and by_id.token_ids == greedy.token_ids[: greedy.token_ids.index(third) + 1]
    )
    stop_text = tokenizer.decode([third])
    by_str = Sequence(p, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, stop=(stop_text,)))
    engine.run_batch([by_str])
    full = tokenizer.decode(by_str.token_ids, skip_special_tokens=True)
    assert by_str.finish_reason == "stop"
    assert visible_text(tokenizer, by_str) == full[: full.find(stop_text)]
    assert stop_text not in visible_text(tokenizer, by_str)


def test_streamed_text_never_shows_a_stop_string(tokenizer, engine: Engine) -> None:
    """Streaming and non-streaming share one stop-string rule: at every token, the text a stream may
    have sent is a prefix of the final visible text (which ends before the stop string)."""
    p = _prompts(tokenizer, 1)[0]
    greedy = Sequence(p, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    engine.run_batch([greedy])
    text = tokenizer.decode(greedy.token_ids, skip_special_tokens=True)
    for a, b in [(2, 4), (3, 5), (1, 2)]:  # two-character stop strings taken from the continuation
        stop = text[a:b]
        s = Sequence(p, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, stop=(stop,)))
        engine.run_batch([s])
        final = visible_text(tokenizer, s)
        assert stop not in final and s.finish_reason == "stop"
        for upto in range(1, len(s.token_ids) + 1):
            shown = streamed_text(tokenizer, s, upto)
            assert final.startswith(shown), (stop, upto, shown, final)


def test_policy_staged_during_a_batch_is_used_from_the_next_batch(tokenizer, model) -> None:
    import copy

    new_model = copy.deepcopy(model)
    with torch.no_grad():
        for param in new_model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    eng = Engine(tokenizer, Policy(model, 0, "old"), [tokenizer.eos_token_id])
    events: list[tuple[str, int]] = []

    def emit(kind: str, seq: Sequence, payload: object) -> None:
        events.append((kind, seq.version))
        if kind == "token" and payload == 2:  # mid-batch: a checkpoint arrives
            eng.stage(Policy(new_model, 1, "new"))

    first = Sequence(
        _prompts(tokenizer, 1)[0], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True), emit=emit
    )
    eng.run_batch([first])
    assert first.version == 0 and eng.version == 0 and eng.staged_version == 1
    assert all(v == 0 for _, v in events)
    # The first batch's logprobs are the old model's all the way through.
    torch.testing.assert_close(
        torch.tensor(first.logprobs), _forward_logprobs(model, first, 1.0), atol=2e-4, rtol=0
    )
    old = eng.swap_if_staged()
    assert old is not None and old.version == 0 and eng.version == 1 and eng.staged_version is None
    second = Sequence(first.prompt_ids, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    eng.run_batch([second])
    assert second.version == 1
    torch.testing.assert_close(
        torch.tensor(second.logprobs), _forward_logprobs(new_model, second, 1.0), atol=2e-4, rtol=0
    )


def test_older_staged_policy_does_not_replace_newer(tokenizer, model) -> None:
    eng = Engine(tokenizer, Policy(model, 0, "m"), [tokenizer.eos_token_id])
    eng.stage(Policy(model, 3, "v3"))
    eng.stage(Policy(model, 2, "v2"))
    assert eng.staged_version == 3


def test_cancelled_sequence_is_aborted(tokenizer, engine: Engine) -> None:
    p = _prompts(tokenizer, 1)[0]
    s = Sequence(p, SamplingParams(max_tokens=50, ignore_eos=True))

    def emit(kind: str, seq: Sequence, payload: object) -> None:
        if kind == "token" and payload == 3:
            seq.cancelled = True

    s.emit = emit
    other = Sequence(p, SamplingParams(max_tokens=10, ignore_eos=True))
    engine.run_batch([s, other])
    assert s.finish_reason == "abort" and len(s.token_ids) == 5
    assert other.finish_reason == "length" and len(other.token_ids) == 10
