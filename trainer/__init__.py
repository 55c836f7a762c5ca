"""The trainer stage: consumes ``batches``, updates the policy with VERL's algorithms (``torch`` backend in
one process, or ``verl`` backend on VERL's FSDP engine), writes checkpoints and publishes ``checkpoints``.

Modules: ``batch`` (record -> DataProto), ``algorithms`` (VERL core_algos calls), ``torch_backend``,
``verl_backend``, ``checkpoint`` (atomic dirs), ``service`` (Kafka loop), ``run`` (CLI body).
Importing this package loads nothing heavy.
"""
