"""``streamrl dev`` / ``streamrl demo``: the whole pipeline on one machine.

Modules: :mod:`~streamrl.dev.runner` (the run), :mod:`~streamrl.dev.supervisor` (child processes),
:mod:`~streamrl.dev.monitor` (reads the run's topics), :mod:`~streamrl.dev.stats` (aggregates),
:mod:`~streamrl.dev.display` (progress), :mod:`~streamrl.dev.report` (summary and plot),
:mod:`~streamrl.dev.rundir` (run directory, effective config), :mod:`~streamrl.dev.demo` (the demo's defaults),
:mod:`~streamrl.dev.reaper` (the stop of a killed ``dev``, done by a process that outlives it).
"""
