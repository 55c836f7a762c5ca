"""The worker and gateway against the real StreamRL CPU inference server (tiny local model)."""

from __future__ import annotations

import pytest
import torch
from consumers_testkit import WorkerThread, make_sample, produce_samples, requests_of

from streamrl.schemas import LLMRequest, RolloutStatus, Trajectory
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # builds a tiny model (~15 CPU-s)
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory):
    from streamrl.inference.model_builder import build_model
    from streamrl.inference.server import InferenceService, ServerOptions, ServerThread, load_model

    out = tmp_path_factory.mktemp("consumers-model") / "tiny"
    build_model(out, preset="tiny", tokenizer="char", max_chars=20_000, seed=0)
    svc = InferenceService(
        str(out),
        ServerOptions(served_model_name="policy", initial_version=4, max_model_len=256, max_batch_wait_ms=5),
    )
    svc.start()
    thread = ServerThread(svc.app()).start()
    yield thread.url + "/v1", load_model(str(out))
    thread.stop()
    svc.stop()


def test_records_match_the_cpu_servers_tokens_and_logprobs(settings_factory, cpu_server) -> None:
    url, model = cpu_server
    s = settings_factory(
        worker={"concurrency": 2, "sampling": {"max_tokens": 12, "temperature": 0.7}},
        gateway={"upstream_url": url},
    )
    produce_samples(
        s, [make_sample(f"cpu{i}", 0, {"question": f"Which is larger, {i} or 7?"}) for i in range(2)]
    )
    trajs, reqs = TopicReader(s, "trajectories", Trajectory), TopicReader(s, "requests", LLMRequest)
    with WorkerThread(s, "consumers_test_agents:chat_twice"):
        got = trajs.read_until(lambda r: len(r) >= 2, timeout_s=120)
        records = reqs.read_until(lambda r: len(r) >= 4, timeout_s=30)
    assert len(got) == 2
    for t in got:
        assert t.status == RolloutStatus.succeeded, t.error
        calls = requests_of(records, t)
        assert len(calls) == 2 and calls[1].ttft_ms is not None
        assert calls[0].prompt_token_ids == calls[1].prompt_token_ids  # same messages, same tokens
        for c in calls:
            assert c.policy_version == 4 and c.agent_name == "policy-agent" and c.attempt_id == t.attempt_id
            assert 0 < len(c.response_token_ids) <= 12 and c.temperature == 0.7
            # the recorded logprobs are the model's own for the recorded tokens (token in, token out), of
            # the distribution they were sampled from, softmax(logits / T) (inference.logprobs_mode scaled)
            ids = torch.tensor([c.prompt_token_ids + c.response_token_ids])
            with torch.no_grad():
                logits = model(ids).logits[0].float()
            lp = torch.log_softmax(logits[len(c.prompt_token_ids) - 1 : -1] / 0.7, dim=-1)
            expect = lp.gather(-1, torch.tensor(c.response_token_ids)[:, None])[:, 0]
            assert torch.allclose(torch.tensor(c.response_logprobs), expect, atol=2e-3), (
                c.response_logprobs,
                expect,
            )
