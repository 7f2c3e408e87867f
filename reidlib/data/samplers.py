"""The PK sampler: batches of P identities x K images (``DATALOADER.NUM_INSTANCE``), as upstream's
``RandomIdentitySampler``: an epoch visits every identity's images in chunks of K."""
from __future__ import annotations

import random
from collections import defaultdict

from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    def __init__(self, samples, batch_size: int, num_instances: int, seed: int = 0):
        self.batch_size, self.num_instances = batch_size, num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.index_by_pid = defaultdict(list)
        for index, (_, pid, _) in enumerate(samples):
            self.index_by_pid[pid].append(index)
        self.pids = sorted(self.index_by_pid)
        self.rng = random.Random(seed)
        self.length = sum(max(len(v), num_instances) // num_instances * num_instances for v in self.index_by_pid.values())

    def _chunks_by_pid(self) -> dict[int, list[list[int]]]:
        chunks = {}
        for pid in self.pids:
            idxs = list(self.index_by_pid[pid])
            if len(idxs) < self.num_instances:
                idxs = self.rng.choices(idxs, k=self.num_instances)
            self.rng.shuffle(idxs)
            chunks[pid] = [idxs[i:i + self.num_instances] for i in range(0, len(idxs) - self.num_instances + 1, self.num_instances)]
        return chunks

    def __iter__(self):
        chunks = self._chunks_by_pid()
        available = [pid for pid in self.pids if chunks[pid]]
        out = []
        while len(available) >= self.num_pids_per_batch:
            for pid in self.rng.sample(available, self.num_pids_per_batch):
                out.extend(chunks[pid].pop(0))
                if not chunks[pid]:
                    available.remove(pid)
        self.length = len(out)
        return iter(out)

    def __len__(self) -> int:
        return self.length
