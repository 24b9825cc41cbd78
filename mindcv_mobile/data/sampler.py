"""ShardSampler: the one sampler of every reader, so all ranks agree on the order and the shards."""

from __future__ import annotations

import math

import mindspore.dataset as ds
import numpy as np


class ShardSampler(ds.Sampler):
    """Seeded per-epoch permutation split between shards; every rank draws the same one.

    shuffle=True: each shard takes ``num_rows // num_shards`` rows of a fresh permutation per
    epoch (seeded by (seed, epoch)), so every rank runs the same number of steps; at most
    num_shards - 1 rows are left out per epoch, different ones each epoch. shuffle=False:
    shard k takes rows k, k + num_shards, ... so the shards are disjoint and cover every row
    (for evaluation). ``num_samples`` caps each shard. Set ``epoch`` to resume a run's order.

    Repeated augmentation (``aug_repeats`` = r > 1; 0 and 1 are off), mindcv's RepeatAugSampler
    with its ``selected_round=0``: the epoch's order (the seeded permutation, or 0..N-1 when
    shuffle=False) has every row written r times in a row; that list of N * r entries is
    extended cyclically to ``ceil(N * r / num_shards) * num_shards`` entries and shard k takes
    entries k, k + num_shards, ..., so with r <= num_shards the r copies of a row land on r
    different shards, each of which augments its copy independently. Each shard then keeps only
    its first ``ceil(N / num_shards)`` entries, so an epoch still has about N samples in all:
    about N / r distinct rows, r times each (the rows come from a new permutation every epoch).
    With one shard the r copies are consecutive.
    """

    def __init__(
        self,
        num_rows: int,
        shuffle: bool,
        num_samples: int | None,
        num_shards: int,
        shard_id: int,
        seed: int,
        aug_repeats: int = 0,
    ):
        if isinstance(aug_repeats, bool) or not isinstance(aug_repeats, (int, np.integer)) or aug_repeats < 0:
            raise ValueError(f"aug_repeats must be an integer >= 0 (0 or 1 = off); got {aug_repeats!r}")
        self.num_rows, self.shuffle, self.cap = num_rows, shuffle, num_samples
        self.num_shards, self.shard_id, self.seed = num_shards, shard_id, seed
        self.repeats = int(aug_repeats) if aug_repeats > 1 else 1
        self.epoch = 0
        super().__init__(num_samples=None)  # takes len(self)

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
        return np.arange(self.num_rows)

    def _shard_rows(self) -> int:
        """Rows one shard yields per epoch, before the ``num_samples`` cap."""
        if self.repeats > 1:
            return math.ceil(self.num_rows / self.num_shards)
        if self.shuffle:
            return self.num_rows // self.num_shards
        return len(range(self.shard_id, self.num_rows, self.num_shards))

    def indices(self, epoch: int) -> np.ndarray:
        """The rows this shard reads in ``epoch``, in order; a function of (seed, epoch) only."""
        count = self._shard_rows()
        if self.repeats > 1:
            repeated = np.repeat(self._order(epoch), self.repeats)
            per_shard = math.ceil(len(repeated) / self.num_shards)
            padded = np.resize(repeated, per_shard * self.num_shards)  # cyclic, from the start
            order = padded[self.shard_id :: self.num_shards][:count]
        elif self.shuffle:
            order = self._order(epoch)[self.shard_id * count : (self.shard_id + 1) * count]
        else:
            order = np.arange(self.shard_id, self.num_rows, self.num_shards)
        return order if self.cap is None else order[: self.cap]

    def __iter__(self):
        order = self.indices(self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        count = self._shard_rows()
        return count if self.cap is None else min(count, self.cap)

    def is_shuffled(self) -> bool:
        return self.shuffle

    def is_sharded(self) -> bool:
        return self.num_shards > 1


def check_sharding(num_shards: int | None, shard_id: int | None) -> tuple[int, int]:
    """(num_shards, shard_id) as ints; both None means one shard. Raises on half or out-of-range pairs."""
    if num_shards is None and shard_id is None:
        return 1, 0
    if num_shards is None or shard_id is None:
        raise ValueError(f"num_shards and shard_id go together; got num_shards={num_shards}, shard_id={shard_id}")
    if int(num_shards) < 1 or not 0 <= int(shard_id) < int(num_shards):
        raise ValueError(
            f"need num_shards >= 1 and 0 <= shard_id < num_shards; got num_shards={num_shards}, shard_id={shard_id}"
        )
    return int(num_shards), int(shard_id)
