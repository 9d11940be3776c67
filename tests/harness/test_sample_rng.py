"""hf_gaf.harness.sample_rng in process: each sample's augmentation draws from (seed, epoch, index) only, and the
global generators come back as they were."""

import random

import numpy as np
import torch

from hf_gaf.harness.sample_rng import SampleRNG


def draw(rng: SampleRNG, index: int) -> tuple:
    with rng.seeded(index):
        return torch.rand(2).tolist(), random.random(), float(np.random.rand())


def test_a_sample_draws_the_same_whatever_came_before_and_differs_by_epoch_and_index():
    rng = SampleRNG(seed=3)
    first = draw(rng, 5)
    torch.rand(100), random.random(), np.random.rand(7)  # other draws in between change nothing
    assert draw(rng, 5) == first
    assert draw(rng, 6) != first and draw(SampleRNG(seed=4), 5) != first
    rng.set_epoch(1)
    assert rng.epoch == 1 and draw(rng, 5) != first


def test_the_global_generators_are_restored():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = torch.rand(1).item(), random.random(), float(np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    draw(SampleRNG(seed=1), 2)
    assert (torch.rand(1).item(), random.random(), float(np.random.rand())) == expected
