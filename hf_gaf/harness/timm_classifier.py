"""A timm image classifier as a Trainer-compatible module: ``forward(pixel_values, labels)`` returns
``{"loss", "logits"}`` (cross-entropy, optional label smoothing).

``cifar_stem=True`` swaps a ResNet's 7x7/2 stem and max-pool for a 3x3/1 conv (the CIFAR setting).
Weights come only from a local file (``pretrained_path``: a ``.safetensors``/``.pth``/``.bin`` state
dict); otherwise the model starts from random init. Nothing is downloaded.

Example:
    >>> model = TimmClassifier("resnet10t", num_classes=10)
    >>> import torch
    >>> out = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([1, 2]))
    >>> out["logits"].shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import os

import timm
import torch
from timm.models import load_state_dict


class TimmClassifier(torch.nn.Module):
    def __init__(self, model_name: str, num_classes: int, pretrained_path: str | None = None,
                 label_smoothing: float = 0.0, cifar_stem: bool = False, **model_kwargs) -> None:
        super().__init__()
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
        except RuntimeError as err:
            raise ValueError(f"--model {model_name!r}: {err}") from None
        if cifar_stem:
            self._use_cifar_stem(model_name)
        if pretrained_path:
            if not os.path.isfile(pretrained_path):
                raise FileNotFoundError(f"--pretrained_path {pretrained_path!r} does not exist (weights are read only "
                                        "from local files)")
            try:
                state = load_state_dict(pretrained_path, use_ema=False)  # timm's: .safetensors, or a torch file
            except Exception as err:  # a file cut short or not weights at all
                raise ValueError(f"--pretrained_path {pretrained_path!r} cannot be read as weights "
                                 f"({str(err).splitlines()[0]})") from None
            own = self.model.state_dict()
            # a checkpoint for another number of classes: keep everything but the mismatched head
            skipped = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
            missing, unexpected = self.model.load_state_dict({k: v for k, v in state.items() if k not in skipped},
                                                             strict=False)
            self.load_report = {"missing": missing, "unexpected": unexpected, "skipped_shape_mismatch": skipped}
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def _use_cifar_stem(self, model_name: str) -> None:
        """The CIFAR ResNet stem of the paper's setting: a 3x3 stride-1 conv and no max-pool, so 32 px
        inputs are not downsampled 4x before the first stage."""
        conv = getattr(self.model, "conv1", None)
        if not isinstance(conv, torch.nn.Conv2d) or not hasattr(self.model, "maxpool"):
            raise ValueError(f"--cifar_stem needs a timm ResNet with a single-conv stem (conv1 + maxpool); "
                             f"{model_name!r} has none (try resnet18, resnet34, resnet50)")
        self.model.conv1 = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=False)
        self.model.maxpool = torch.nn.Identity()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.model(pixel_values)
        return {"loss": self.loss(logits, labels) if labels is not None else None, "logits": logits}
