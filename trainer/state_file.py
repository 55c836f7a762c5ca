"""Trainer state on disk without pickle: tensors in one safetensors file, the rest as JSON in its header.

``torch.save``/``torch.load(weights_only=False)`` unpickle, so a tampered ``trainer_state.pt`` ran
code when the trainer resumed. This format cannot: loading it parses a JSON header and copies raw
tensor bytes (safetensors), nothing is imported or called.

Encoding of the state (a tree of dicts, lists, tuples, tensors, NumPy arrays and JSON scalars):

- ``torch.Tensor`` -> ``{"__tensor__": "<name>"}``, the tensor stored under ``name`` in the file;
- ``numpy.ndarray`` -> ``{"__ndarray__": [...], "dtype": "<numpy dtype>", "shape": [...]}`` (small:
  NumPy's RNG state);
- ``tuple`` -> ``{"__tuple__": [...]}`` (``random.setstate`` and ``np.random.set_state`` need tuples);
- a dict whose keys are not all strings (an optimizer's ``state`` is keyed by parameter index) ->
  ``{"__items__": [[key, value], ...]}``;
- NumPy scalars -> Python scalars; ``NaN``/``Infinity`` as Python's ``json`` writes them.

The JSON is the file's ``__metadata__["streamrl_state"]``; ``__metadata__["format"]`` is
:data:`FORMAT`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from streamrl.errors import CheckpointError
from streamrl.trainer.checkpoint import LEGACY_STATE_FILE, STATE_FILE

__all__ = ["LEGACY_STATE_FILE", "STATE_FILE", "legacy_state_error", "load_state_file", "save_state_file"]

FORMAT = "streamrl-trainer-state/1"
_RESERVED = ("__tensor__", "__ndarray__", "__tuple__", "__items__")


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.ravel().tolist(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _RESERVED for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"trainer state holds a {type(obj).__name__}, which has no pickle-free encoding")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_freeze(_decode(k, tensors)): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _freeze(key: Any) -> Any:
    return tuple(_freeze(k) for k in key) if isinstance(key, list) else key


def save_state_file(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` in the format above (tensors are copied to CPU first).

    Raises:
        CheckpointError: the state holds an object with no encoding, or the write failed.
    """
    tensors: dict[str, torch.Tensor] = {}
    try:
        header = json.dumps(_encode(state, tensors))
        save_file(tensors, str(path), metadata={"format": FORMAT, "streamrl_state": header})
    except (TypeError, ValueError, OSError, SafetensorError) as exc:
        raise CheckpointError(f"writing trainer state {path}: {exc}", "write") from exc


def load_state_file(path: Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state_file` (no unpickling).

    Raises:
        CheckpointError: ``reason="load"``: not a safetensors file, not this format, a broken header, or
        a reference to a tensor the file lacks.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        state = _decode(json.loads(meta["streamrl_state"]), tensors)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(f"trainer state {path}: cannot load: {exc}", "load") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"trainer state {path}: cannot load: the state is not a mapping", "load")
    return state


def legacy_state_error(ckpt_dir: Path) -> CheckpointError:
    """The error for a checkpoint whose trainer state is the old pickle file (``trainer_state.pt``)."""
    return CheckpointError(
        f"{ckpt_dir}: the trainer state is {LEGACY_STATE_FILE} (torch.save, i.e. pickle), which StreamRL no "
        f"longer loads because unpickling a tampered file runs code; move this checkpoint directory away "
        f"to resume from an older one or the base model",
        "load",
    )
