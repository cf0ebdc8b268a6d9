"""Deterministic, resumable data order: a run resumed at step k sees exactly the batches it would have seen.

The sampler yields `(index, augmentation_seed)` pairs for an endless sequence of epochs, each a
permutation drawn from `(seed, epoch)`; `SeededSamples` reads each sample (random transform included)
under its own seed. Nothing depends on a global RNG state, so resuming only needs the number of samples
already consumed. Sharding for DDP is done here (process r takes every world-th sample), so the
DataLoader is used as is, without accelerate re-wrapping its sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), stable across processes and Python versions."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class ResumableSampler(Sampler[tuple[int, int]]):
    """Endless shuffled `(index, augmentation_seed)` stream, sharded over processes, startable mid-way.

    Args:
        size: dataset length.
        seed: run seed.
        rank: this process's rank.
        world_size: number of processes.
        start: global samples already consumed (all processes together), e.g. step × global batch.
        shuffle: permute each epoch (False: dataset order, e.g. for feature extraction).
    """

    def __init__(
        self, size: int, *, seed: int, rank: int = 0, world_size: int = 1, start: int = 0, shuffle: bool = True
    ) -> None:
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world_size, self.start, self.shuffle = (
            size,
            seed,
            rank,
            world_size,
            start,
            shuffle,
        )

    def _epoch_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(_mix(self.seed, epoch))
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start + self.rank  # global position of this process's next sample
        while True:
            epoch, offset = divmod(position, self.size)
            order = self._epoch_order(epoch)
            while offset < self.size:
                yield order[offset], _mix(self.seed, epoch, offset, 1)
                position += self.world_size
                epoch_now, offset = divmod(position, self.size)
                if epoch_now != epoch:
                    break


class SeededSamples(Dataset):
    """Reads `dataset[index]` under a per-sample seed (from `ResumableSampler`), without touching the global
    RNG: the dataset's own random transform becomes reproducible, independent of workers and resumption.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def resumable_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    accelerator,
    start: int,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """Endless, deterministic batches of this process's share, starting after `start` consumed samples."""
    sampler = ResumableSampler(
        len(dataset), seed=seed, rank=accelerator.process_index, world_size=accelerator.num_processes, start=start
    )
    return DataLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=True,
        persistent_workers=num_workers > 0,
        # An own generator for the workers' base seed: creating the iterator must not draw from the global RNG,
        # which Accelerate restores on resume and dropout/stochastic depth consume.
        generator=torch.Generator().manual_seed(0),
    )
