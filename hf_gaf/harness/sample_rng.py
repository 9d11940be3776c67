"""Augmentation randomness as a function of (seed, epoch, sample index).

A data loader that transforms samples with the global random number generators ties each sample's
augmentation to everything drawn before it: the order in which workers run, and the batch that
accelerate's loader reads ahead of the one being trained. A checkpoint taken in the middle of an
epoch then saves an RNG state that already includes the next batch's augmentation, and a resumed
run augments differently from there on. :class:`SampleRNG` draws each sample's augmentation from
generators seeded by (seed, epoch, index) inside :meth:`SampleRNG.seeded`, and restores the global
state afterwards, so augmentations no longer depend on anything else and a resume in the middle of
an epoch continues exactly.

The epoch lives in shared memory, so forked data-loader workers (persistent ones too) see
:meth:`SampleRNG.set_epoch` from the main process.

Example:
    >>> import torch
    >>> from hf_gaf.harness.sample_rng import SampleRNG
    >>> rng = SampleRNG(seed=0)
    >>> with rng.seeded(7):
    ...     a = torch.rand(2)
    >>> with rng.seeded(7):
    ...     b = torch.rand(2)
    >>> bool(torch.equal(a, b))
    True
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random

import numpy as np
import torch


class SampleRNG:
    """Seeds torch's, Python's and NumPy's global generators per sample (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._epoch = multiprocessing.RawValue("q", 0)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def sample_seed(self, index: int) -> int:
        """The 32-bit seed of sample ``index`` in the current epoch."""
        return int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0])

    @contextlib.contextmanager
    def seeded(self, index: int):
        """Inside, torch (CPU), ``random`` and ``numpy.random`` draw from (seed, epoch, ``index``);
        their previous states come back on exit."""
        seed = self.sample_seed(index)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            try:
                yield
            finally:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
