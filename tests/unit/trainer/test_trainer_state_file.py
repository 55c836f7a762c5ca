"""The trainer state file: safetensors + a JSON header, round-tripping what backends save, no pickle."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrl.errors import CheckpointError
from streamrl.trainer.checkpoint import LEGACY_STATE_FILE, STATE_FILE
from streamrl.trainer.state_file import load_state_file, save_state_file


def test_round_trip_keeps_types_keys_and_tensors(tmp_path: Path) -> None:
    state = {
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}},
            "param_groups": [{"betas": (0.9, 0.99), "params": [0]}],
        },
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "extra": {
            "__tensor__": "a user key that looks reserved",
            "nan": math.nan,
            "none": None,
            "np": np.float32(1.5),
        },
    }
    save_state_file(tmp_path / STATE_FILE, state)
    got = load_state_file(tmp_path / STATE_FILE)
    assert got["optimizer"]["param_groups"] == [{"betas": (0.9, 0.99), "params": [0]}]
    torch.testing.assert_close(
        got["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]
    )
    assert got["optimizer"]["state"][0]["step"].shape == () and got["rng"]["python"] == random.getstate()
    np_state = got["rng"]["numpy"]
    assert isinstance(np_state, tuple) and np_state[1].dtype == np.uint32
    assert np.array_equal(np_state[1], state["rng"]["numpy"][1])
    assert torch.equal(got["rng"]["torch"], state["rng"]["torch"])
    assert got["extra"]["__tensor__"] == "a user key that looks reserved" and math.isnan(got["extra"]["nan"])
    assert got["extra"]["np"] == 1.5 and got["extra"]["none"] is None
    with pytest.raises(CheckpointError, match="has no pickle-free encoding"):
        save_state_file(tmp_path / "x", {"f": object()})


def test_anything_else_is_refused_as_unloadable(tmp_path: Path) -> None:
    for name, data in (("garbage", b"\x80\x04junk"), ("empty", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="cannot load") as err:
            load_state_file(tmp_path / name)
        assert err.value.reason == "load"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "weights"))  # a safetensors file, not a trainer state
    with pytest.raises(CheckpointError, match="format None"):
        load_state_file(tmp_path / "weights")


def test_the_verl_backends_driver_state_round_trips(tmp_path: Path) -> None:
    """The verl backend's own half (RNG, step, extra) with a stand-in for VERL's worker group, which
    only GPU tests can build (tests/integration/trainer/test_trainer_verl_backend.py)."""
    from streamrl.trainer.verl_backend import STATE_DIR, VerlBackend

    class WorkerGroup:
        loaded: str | None = None

        def load_checkpoint(self, local_path: str) -> None:
            self.loaded = local_path

    be = object.__new__(VerlBackend)
    be._global_step, be.wg = 7, WorkerGroup()
    (tmp_path / STATE_DIR).mkdir()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    be.save_state(tmp_path / STATE_FILE, {"version": 2})
    want = (random.random(), float(np.random.rand()), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    be._global_step = 0
    assert be.load(tmp_path) == {"version": 2} and be._global_step == 7
    assert be.wg.loaded == str(tmp_path / STATE_DIR)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == want
    (tmp_path / STATE_FILE).rename(tmp_path / LEGACY_STATE_FILE)
    with pytest.raises(CheckpointError, match="pickle"):
        be.load(tmp_path)
