"""Batching: dynamic-padding collate, deterministic length-bucketed batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lad.data.features import Features

DEFAULT_BUCKET_FACTOR = 50


def _lengths_of(data: Features | Sequence[int] | np.ndarray) -> np.ndarray:
    if isinstance(data, Features):
        return data.lengths
    return np.asarray(data, dtype=np.int64)


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler, deterministic given (seed, epoch).

    Bucketed: shuffle all indices with ``default_rng(seed + epoch)``, split them into chunks of
    ``batch_size * bucket_factor``, sort each chunk by length, cut it into batches and shuffle the
    batch order. Not bucketed: plain shuffled batches. ``skip_batches`` drops the first batches
    of the epoch (resuming mid-epoch).
    """

    def __init__(
        self,
        lengths: Features | Sequence[int] | np.ndarray,
        batch_size: int,
        seed: int = 0,
        bucket: bool = True,
        bucket_factor: int = DEFAULT_BUCKET_FACTOR,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if bucket_factor < 1:
            raise ValueError(f"bucket_factor must be >= 1, got {bucket_factor}")
        self.lengths = _lengths_of(lengths)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.bucket = bool(bucket)
        self.bucket_factor = int(bucket_factor)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch whose batches ``__iter__`` yields, skipping the first ``skip_batches``."""
        self.epoch = int(epoch)
        self.skip_batches = int(skip_batches)

    def num_batches(self) -> int:
        """Batches in a full epoch."""
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (lists of example indices)."""
        rng = np.random.default_rng(self.seed + int(epoch))
        order = rng.permutation(len(self.lengths))
        bs = self.batch_size
        if not self.bucket:
            out = [order[i:i + bs].tolist() for i in range(0, len(order), bs)]
            return [b for b in out if len(b) == bs] if self.drop_last else out
        out = []
        chunk = bs * self.bucket_factor
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            out.extend(part[i:i + bs].tolist() for i in range(0, len(part), bs))
        if self.drop_last:
            out = [b for b in out if len(b) == bs]
        return [out[i] for i in rng.permutation(len(out))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(self.epoch)[self.skip_batches:])

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.skip_batches)


def make_train_batches(
    features: Features | Sequence[int] | np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    bucket: bool,
    bucket_factor: int = DEFAULT_BUCKET_FACTOR,
    drop_last: bool = False,
) -> list[list[int]]:
    """Training batches of one epoch (see :class:`LengthBucketSampler`)."""
    sampler = LengthBucketSampler(features, batch_size, seed, bucket, bucket_factor, drop_last)
    return sampler.batches(epoch)


def make_eval_batches(
    features: Features | Sequence[int] | np.ndarray, batch_size: int, sort_by_length: bool = False
) -> list[list[int]]:
    """Sequential evaluation batches; optionally longest-first (each batch's ``index`` says where its rows belong)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = _lengths_of(features)
    order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(lengths))
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class FeaturesDataset(Dataset):
    """Map-style view of :class:`Features` yielding dicts for :func:`collate`."""

    def __init__(self, features: Features) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.features
        return {"input_ids": f.input_ids[i], "token_type_ids": f.token_type_ids[i],
                "label": f.labels[i], "index": int(i)}


def collate(features_batch: Sequence[dict[str, Any]], pad_id: int = 0,
            pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Pad a list of :class:`FeaturesDataset` items to the batch's longest sequence, or to ``pad_to``."""
    if not features_batch:
        raise ValueError("cannot collate an empty batch")
    width = max(len(item["input_ids"]) for item in features_batch)
    if pad_to is not None:
        if width > pad_to:
            raise ValueError(f"an example has {width} tokens, more than pad_to={pad_to}")
        width = int(pad_to)
    size = len(features_batch)
    input_ids = torch.full((size, width), int(pad_id), dtype=torch.long)
    token_types = torch.zeros((size, width), dtype=torch.long)
    mask = torch.zeros((size, width), dtype=torch.long)
    for row, item in enumerate(features_batch):
        n = len(item["input_ids"])
        input_ids[row, :n] = torch.from_numpy(np.asarray(item["input_ids"], dtype=np.int64))
        token_types[row, :n] = torch.from_numpy(np.asarray(item["token_type_ids"], dtype=np.int64))
        mask[row, :n] = 1
    raw = np.asarray([item["label"] for item in features_batch])
    labels = (torch.tensor(raw, dtype=torch.float32) if raw.dtype.kind == "f"
              else torch.tensor(raw, dtype=torch.long))
    index = torch.tensor([int(item["index"]) for item in features_batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types,
            "labels": labels, "index": index}
