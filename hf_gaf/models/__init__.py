"""Model wrappers that make timm and torchvision models Trainer-compatible modules."""
