"""Build the configured backend and run the trainer service (the body of ``streamrl trainer``)."""

from __future__ import annotations

from streamrl.config import Settings
from streamrl.trainer.service import Backend, TrainerService


def make_backend(settings: Settings) -> Backend:
    """The backend named by ``trainer.backend``, holding the initial model of ``trainer.model_path``."""
    ts = settings.trainer
    if ts.backend == "verl":
        from streamrl.trainer.verl_backend import VerlBackend

        return VerlBackend(ts, rollout_n=settings.rl.group_size, seed=settings.rl.seed)
    from streamrl.trainer.torch_backend import TorchBackend

    return TorchBackend(ts, rollout_n=settings.rl.group_size, seed=settings.rl.seed)


def run_trainer(settings: Settings) -> int:
    """Run until stopped (SIGTERM/SIGINT) or ``trainer.max_steps``; returns the final version."""
    service = TrainerService(settings, make_backend(settings))
    service.install_signal_handlers()
    return service.run()
