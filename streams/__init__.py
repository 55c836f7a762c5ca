"""The streams stage: a Faust aggregator that joins ``requests`` with ``trajectories`` by ``rollout_id``,
builds training rows, groups rollouts by ``group_id``, filters them and emits ``batches``.

Pure logic lives in :mod:`streamrl.streams.rows`, :mod:`streamrl.streams.join`, :mod:`streamrl.streams.groups` and
:mod:`streamrl.streams.validation` (no Faust import); :mod:`streamrl.streams.app` wires it into Faust; run it with
``streamrl streams -c cfg.yaml`` or ``python -m streamrl.streams -c cfg.yaml``.
"""
