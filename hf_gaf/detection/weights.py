"""Loading weights from local files only (nothing is downloaded), shared by the model builders."""

from __future__ import annotations

import os

import torch


def load_state_dict_file(path: str, flag: str = "--pretrained_path") -> dict:
    """A state dict from a local ``.safetensors`` or torch file; a missing file is a
    ``FileNotFoundError`` naming it and the ``flag`` it came from. A torch file that wraps the state in
    ``state_dict`` or ``model`` (as training scripts save it) is unwrapped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path!r} does not exist (weights are read only from local files)")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch.load raise their own types for a file cut short
        raise ValueError(f"{flag} {path!r} cannot be read as weights ({str(err).splitlines()[0]}): is the file "
                         "complete?") from None
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
