"""A tiny regression model and data set for Trainer tests, plus a Trainer with a fixed batch order."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, SequentialSampler

from hf_gaf.trainer import GAFTrainer, GAFTrainingArguments


class TinyRegressor(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Linear(4, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x, labels=None):
        out = self.head(torch.tanh(self.norm(self.body(x)))).squeeze(-1) * 3.0
        loss = torch.nn.functional.mse_loss(out, labels) if labels is not None else None
        return {"loss": loss, "logits": out}


class TinyData(Dataset):
    def __init__(self, n: int = 64, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])).sin() + 0.1 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class SequentialGAFTrainer(GAFTrainer):
    """Batches in data-set order, so a hand-written loop can see the same batches."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def tiny_args(out_dir, args_cls=GAFTrainingArguments, **overrides) -> GAFTrainingArguments:
    settings = dict(
        output_dir=str(out_dir), per_device_train_batch_size=8, learning_rate=0.05, num_train_epochs=1,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01, optim="sgd", optim_args="momentum=0.9",
        logging_steps=1000, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        dataloader_num_workers=0, gaf="atan", gaf_alpha=0.1, gaf_beta=20.0,
    )
    settings.update(overrides)
    return args_cls(**settings)


def params_of(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def hand_written_run(make_optimizer, treat_gradients, n: int = 64, batch: int = 8) -> dict[str, torch.Tensor]:
    """TinyRegressor trained by hand on ``TinyData(n)`` in data-set order (the batches SequentialGAFTrainer
    sees), ``treat_gradients(parameters)`` between backward and step: the reference a Trainer run must equal."""
    model = TinyRegressor()
    optimizer = make_optimizer(model.parameters())
    data = TinyData(n)
    for start in range(0, n, batch):
        optimizer.zero_grad()
        chunk = data[start : start + batch]
        model(chunk["x"], chunk["labels"])["loss"].backward()
        treat_gradients(model.parameters())
        optimizer.step()
    return params_of(model)
