"""The streams stage: a Faust aggregator that joins ``requests`` with ``trajectories`` by ``rollout_id``,
builds training rows, groups rollouts by ``group_id``, filters them and emits ``batches``.

Pure logic lives in :mod:`streams.rows`, :mod:`streams.join`, :mod:`streams.groups` and
:mod:`streams.validation` (no Faust import); :mod:`streams.app` wires it into Faust; run it with
``streamrl streams -c cfg.yaml`` or ``python -m streams -c cfg.yaml``.
"""
