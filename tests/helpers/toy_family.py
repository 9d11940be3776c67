"""A detector family defined outside hf_gaf, for tests/detection/test_families.py: a linear layer saved as its
state dict."""

import os

import torch
from safetensors.torch import load_file, save_file


def save_files(folder, model, info, processor=None):
    save_file(model.state_dict(), os.path.join(folder, "model.safetensors"))


def load_files(folder, info):
    model = torch.nn.Linear(2, 2)
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
    return model, None, None, None
