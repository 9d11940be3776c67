"""hf_gaf.harness.timm_classifier in process: the loss, the CIFAR stem, a checkpoint of another head."""

import pytest
import torch

from hf_gaf.harness.timm_classifier import TimmClassifier


def test_loss_and_logits_and_the_cifar_stem_keeps_32px_resolution():
    torch.manual_seed(0)
    model = TimmClassifier("resnet10t", num_classes=3)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    out = model(x, y)
    assert out["logits"].shape == (2, 3)
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(out["logits"], y))
    assert model(x)["loss"] is None
    with pytest.raises(ValueError, match="--cifar_stem needs a timm ResNet with a single-conv stem"):
        TimmClassifier("resnet10t", num_classes=3, cifar_stem=True)  # resnet10t has a deep stem
    cifar = TimmClassifier("resnet18", num_classes=3, cifar_stem=True)
    assert cifar.model.conv1.stride == (1, 1) and isinstance(cifar.model.maxpool, torch.nn.Identity)


def test_a_checkpoint_for_another_number_of_classes_keeps_all_but_the_head(tmp_path):
    from safetensors.torch import save_file

    source = TimmClassifier("resnet10t", num_classes=5)
    path = tmp_path / "w.safetensors"
    save_file(source.model.state_dict(), str(path))
    target = TimmClassifier("resnet10t", num_classes=3, pretrained_path=str(path))
    assert target.load_report["skipped_shape_mismatch"] == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(target.model.conv1[0].weight, source.model.conv1[0].weight)
    with pytest.raises(FileNotFoundError, match="--pretrained_path"):
        TimmClassifier("resnet10t", num_classes=3, pretrained_path=str(tmp_path / "missing.pt"))
