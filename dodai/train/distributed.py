"""Data parallelism under ``torchrun``: detect the environment, init the process group, wrap in DDP.

``torchrun --nproc_per_node=N -m dodai pretrain ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; the same
entry point then trains with :class:`torch.nn.parallel.DistributedDataParallel` (Li et al. 2020,
"PyTorch Distributed"): every rank holds a replica, processes its slice of the global batch (see
:mod:`dodai.data.batching`) and DDP averages the gradients with an all-reduce, so the update equals
the single-process one on the whole batch. Backend: nccl on GPU, gloo on CPU. Only rank 0 writes
files and shows progress. :func:`dodai.train.fit.fit` also offers FSDP2 (``parallel="fsdp"``) on the same
process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """The torchrun environment, or a single-process DistInfo when it is absent."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        enabled=int(os.environ["WORLD_SIZE"]) > 1,
    )


def init(device: str) -> tuple[DistInfo, str]:
    """Initialise the process group when running under torchrun; returns (info, device for this rank)."""
    info = from_env()
    if not info.enabled:
        return info, device
    import torch.distributed as dist

    if device.startswith("cuda"):
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info, device


def wrap(model: torch.nn.Module, info: DistInfo, device: str, find_unused_parameters: bool = False) -> torch.nn.Module:
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return x
    import torch.distributed as dist

    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / info.world_size


def any_flag(flag: bool, info: DistInfo, device: str = "cpu") -> bool:
    """True on every rank if ``flag`` is true on any rank (to stop all ranks together)."""
    if not info.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            # every rank reaches this point before any tears the group down: a rank destroying its gloo
            # context while its peer still talks to it can abort the peer ("terminate called without an
            # active exception", seen once in CI on a loaded machine)
            dist.barrier()
            dist.destroy_process_group()
