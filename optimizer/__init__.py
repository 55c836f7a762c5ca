"""Prompt optimization over Kafka (``streamrl optimize``): APO and few-shot bootstrapping.

The stage publishes prompt versions to ``resources`` and evaluation samples pinned to them to
``samples``; the rollout workers run them; the stage reads ``trajectories`` (scores, by the one
scoring rule) and ``requests`` (the recorded calls critiques and demonstrations are made from), and
keeps its events on ``optimizer_events`` and its state on ``optimizer_state``, so a killed run
resumes where it was. It imports no other stage.
"""
