"""Batches whose rows share no key, for in-batch negatives without false negatives.

MultipleNegativesRankingLoss treats every other row's positive and negative as a negative of a
row's anchor. sentence-transformers' ``NoDuplicatesBatchSampler`` keeps texts unique in a batch,
which is not enough here: two different texts with the same intent label, or a document relevant
to two queries, would still be pushed apart. Each row carries keys (its labels, or its query and
every document relevant to it) and a batch takes a row only if it shares no key with the rows
already in it; the rows it skips open the next batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

__all__ = ["DisjointKeysBatchSampler", "disjoint_keys_sampler"]


class DisjointKeysBatchSampler(DefaultBatchSampler):
    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        keys: Sequence[frozenset[str]],
    ) -> None:
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        if len(keys) != len(dataset):
            raise ValueError(f"{len(keys)} key sets for {len(dataset)} rows")
        self.keys = list(keys)

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        remaining = torch.randperm(len(self.keys), generator=self.generator).tolist()
        while remaining:
            batch: list[int] = []
            used: set[str] = set()
            deferred: list[int] = []
            for index in remaining:
                if len(batch) < self.batch_size and used.isdisjoint(self.keys[index]):
                    batch.append(index)
                    used |= self.keys[index]
                else:
                    deferred.append(index)
            remaining = deferred
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        # An estimate: batches can come out smaller when keys collide, never more numerous
        # than one per row.
        full, rest = divmod(len(self.keys), self.batch_size)
        return full if self.drop_last else full + (1 if rest else 0)


class disjoint_keys_sampler:
    """The ``batch_sampler`` argument of the training arguments for these row keys (a class, not a
    closure, because the trainer pickles its arguments with each checkpoint)."""

    def __init__(self, keys: Sequence[frozenset[str]]) -> None:
        self.keys = list(keys)

    def __call__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> DisjointKeysBatchSampler:
        return DisjointKeysBatchSampler(
            dataset, batch_size, drop_last, valid_label_columns, generator, seed, keys=self.keys
        )
