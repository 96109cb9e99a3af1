"""torchrun / DistributedDataParallel set-up, applied around the model by train.py.

`torchrun --nproc-per-node N -m encdec train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `setup` joins them into one process group (gloo on CPU, NCCL on CUDA). One
optimizer step consumes K = world * accum consecutive batches of the global, seeded epoch
order; rank r takes batches r, r + world, r + 2 world, ... of them (`shard`), so every batch of an
epoch is used exactly once by exactly one rank, and a step sees the same K batches whatever the
split between ranks and accumulation. The loss of a step is normalised by the real target
tokens of all K batches, which every rank can count from the data without communication, so
N ranks with accum A give the same update as one process with accum N*A.
model.py knows nothing of any of this.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch_dist.all_reduce(t)
        return float(t)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank (e.g. rank 0's wall clock says stop)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def from_env() -> Dist:
    """The process group torchrun describes in the environment (a single process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(dist: Dist, device_type: str) -> None:
    if dist.world > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(dist.local_rank)
        torch_dist.init_process_group(backend=backend)


def cleanup(dist: Dist) -> None:
    if dist.world > 1 and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def wrap(model: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """DDP around the model when there are several ranks; the model itself otherwise."""
    if dist.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [dist.local_rank] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=device_ids)


def shard(items: list, dist: Dist) -> list:
    """This rank's share of one step's batches: items rank, rank + world, ..."""
    return items[dist.rank :: dist.world]


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """This very `encdec` command line (`argv` without the program), with --nproc removed, as a
    torchrun launch of `nproc` processes on this machine."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "encdec", *args]
