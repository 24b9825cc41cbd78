"""ShardSampler: the one sampler of every reader, so all ranks agree on the order and the shards."""
from __future__ import annotations

import mindspore.dataset as ds
import numpy as np


class ShardSampler(ds.Sampler):
    """Seeded per-epoch permutation split between shards; every rank draws the same one.

    shuffle=True: each shard takes ``num_rows // num_shards`` rows of a fresh permutation per
    epoch (seeded by (seed, epoch)), so every rank runs the same number of steps; at most
    num_shards - 1 rows are left out per epoch, different ones each epoch. shuffle=False:
    shard k takes rows k, k + num_shards, ... so the shards are disjoint and cover every row
    (for evaluation). ``num_samples`` caps each shard. Set ``epoch`` to resume a run's order.
    """

    def __init__(self, num_rows: int, shuffle: bool, num_samples: int | None, num_shards: int,
                 shard_id: int, seed: int):
        self.num_rows, self.shuffle, self.cap = num_rows, shuffle, num_samples
        self.num_shards, self.shard_id, self.seed = num_shards, shard_id, seed
        self.epoch = 0
        super().__init__(num_samples=None)  # takes len(self)

    def indices(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)
            per_shard = self.num_rows // self.num_shards
            order = order[self.shard_id * per_shard:(self.shard_id + 1) * per_shard]
        else:
            order = np.arange(self.shard_id, self.num_rows, self.num_shards)
        return order if self.cap is None else order[:self.cap]

    def __iter__(self):
        order = self.indices(self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        return len(self.indices(0))

    def is_shuffled(self) -> bool:
        return self.shuffle

    def is_sharded(self) -> bool:
        return self.num_shards > 1


def check_sharding(num_shards: int | None, shard_id: int | None) -> tuple[int, int]:
    """(num_shards, shard_id) as ints; both None means one shard. Raises on half or out-of-range pairs."""
    if num_shards is None and shard_id is None:
        return 1, 0
    if num_shards is None or shard_id is None:
        raise ValueError(f"num_shards and shard_id go together; got num_shards={num_shards}, "
                         f"shard_id={shard_id}")
    if int(num_shards) < 1 or not 0 <= int(shard_id) < int(num_shards):
        raise ValueError(f"need num_shards >= 1 and 0 <= shard_id < num_shards; got "
                         f"num_shards={num_shards}, shard_id={shard_id}")
    return int(num_shards), int(shard_id)
