"""Everything that must be saved for an exact resume besides the task's own state.

Every random number generator (python, numpy, torch CPU, every CUDA device), captured in a form
that ``torch.load(weights_only=True)`` accepts, and a canonical hash of model weights that does
not depend on how the file was written.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """Return the state of every RNG as plain tuples and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set every RNG back to a state from :func:`capture_rng`."""
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_tuplify(v) for v in value)
    return value


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hash names, dtypes, shapes and bytes of a state dict, in key order."""
    sha = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu")
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # Logical order, whatever the layout (channels_last, 0-dim): a fresh contiguous flat copy.
        flat = tensor.clone(memory_format=torch.contiguous_format).reshape(-1)
        sha.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return sha.hexdigest()


def to_cpu(obj: Any, clone: bool = False) -> Any:
    """Copy every tensor in a nested structure to the CPU (cloning CPU ones when asked)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            return t.to("cpu")
        return t.clone() if clone else t
    if isinstance(obj, dict):
        return {k: to_cpu(v, clone) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v, clone) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v, clone) for v in obj)
    return obj


def nbytes(obj: Any) -> int:
    """Return the bytes held by tensors in a nested structure."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0
