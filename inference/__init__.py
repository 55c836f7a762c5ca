"""The inference service: an OpenAI-compatible server for the policy (CPU/transformers or vLLM).

Modules: ``model_builder`` (tiny local model), ``engine`` (batched sampling with exact logprobs),
``batcher`` (dynamic batching thread), ``server`` (FastAPI app), ``reload`` (``checkpoints`` consumer),
``vllm_backend`` (``vllm serve`` launcher and proxy). Importing this package loads no torch.
"""
