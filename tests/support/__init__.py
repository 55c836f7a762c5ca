"""Test support, one copy each, importable by tests and benchmarks as ``tests.support.<module>``.

- ``kafka``: a free TCP port, a throwaway local broker, :class:`~tests.support.kafka.TopicReader`
  (read a topic from its beginning and decode it) and :func:`~tests.support.kafka.read_topic`.
- ``fake_inference``: a small, real OpenAI-compatible HTTP server with vLLM's token-id fields.
- ``records``: real-looking example records of every top-level type (deterministic per seed).
- ``processes``: stage processes for tests (a real streams worker, started until it holds its partitions).
- ``toy_policy``: a tokenizer-less random Llama of any vocabulary size, ancestral sampling with
  behaviour logprobs, and inline ``TrainingBatch`` records for the trainer's math and learning tests.

Nothing in the product imports this package (a test double lives in ``tests/``, never in a product
package). ``pyproject.toml`` puts the repository root on ``sys.path`` for pytest
(``pythonpath = ["."]``); benchmarks run from the root (``python -m bench.<name>``).
"""
