"""Epoch loops over a fixed set of items as pure functions of the step (exact resume)."""
from __future__ import annotations

import numpy as np

from rhmdiff.data import DataError


class EpochOrder:
    """Epoch ``e`` visits the ``n`` items in the order of a permutation drawn from
    ``(seed, e)``; the last incomplete batch of an epoch is dropped."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cached = (None, None)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.n // batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        if self._cached[0] != epoch:
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._cached[1]

    def indices(self, batch_size: int, step: int, rows=slice(None)) -> np.ndarray:
        """Item indices of rows ``rows`` of the global batch at ``step``."""
        per_epoch = self.steps_per_epoch(batch_size)
        if per_epoch == 0:
            raise DataError(f"train.batch_size = {batch_size} exceeds the {self.n} training items")
        epoch, i = divmod(step, per_epoch)
        return self.permutation(epoch)[i * batch_size:(i + 1) * batch_size][rows]
