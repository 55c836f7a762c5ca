"""Coordination-layer benchmark (issue 10): rollout throughput, gateway overhead, bare-Kafka ceiling, batches.

``python -m bench.coordination`` (or ``make bench``) runs parts A–D against a fresh local broker (or
``$STREAMRL_BOOTSTRAP_SERVERS``), prints one table and writes ``bench/results/<date>.json``.
"""
