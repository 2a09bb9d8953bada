"""Data-parallel training under ``torchrun`` (gloo on CPU, nccl on CUDA).

Every rank sees the same global batches (a pure function of seed and epoch) and trains on its
shard ``batch[rank::world]`` of each, so the effective batch and the data order are those of a
single-process run. DDP averages the gradients; rank 0 alone evaluates, logs to MLflow and
writes outputs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(rank=int(os.environ.get("RANK", "0")), world=world,
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def init(self, device: torch.device) -> torch.device:
        """Join the process group; returns this rank's device."""
        if not self.enabled:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return device

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def shard(self, batch: list[int]) -> list[int]:
        """This rank's part of a global batch."""
        return batch[self.rank::self.world] if self.enabled else batch

    def wrap(self, module, device: torch.device):
        """DDP around the module (its ``forward`` is the training step)."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
