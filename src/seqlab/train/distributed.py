"""Multi-process training: DistributedDataParallel under torchrun, one process per GPU (or per CPU worker).

`torchrun --nproc_per_node N -m seqlab train ...` starts N copies of the command, each with WORLD_SIZE, RANK
and LOCAL_RANK in its environment. Each copy builds the same run; the trainer asks this module for its rows
of each batch and for the loss to backpropagate. Without torchrun the world is one process and every helper
here hands back its input unchanged.

N processes train as one process does with the same (global) batch:
- data: every rank makes the global batch of step s, the one a single process trains on, and keeps rows
  rank * b .. rank * b + b - 1 (b = batch_size / N), padding included, so the ranks' rows together are
  exactly that batch;
- loss: `global_mean` weighs each rank's mean loss so that DDP's average of the gradients is the gradient
  of the global batch's mean;
- weights: the seed builds the same model on every rank and DDP broadcasts rank 0's at the start; every
  rank then takes the same optimizer step on the same averaged gradient.
Rank 0 alone writes (metrics, checkpoints, config.json), prints and evaluates; it hands its evaluation to
the other ranks, so all of them make the same early-stopping decision.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from seqlab.core.errors import BadInput


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0  # which GPU of its machine a rank drives

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place among the processes torchrun started (one process without torchrun)."""
    env = os.environ
    if int(env.get("WORLD_SIZE", 1)) <= 1:
        return World()
    return World(int(env["WORLD_SIZE"]), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))


def start(w: World, device: torch.device, batch_size: int) -> torch.device:
    """Join the process group (NCCL between GPUs, gloo on CPU); returns this rank's device. A global batch
    the processes cannot share evenly is bad input, refused before any process writes."""
    if w.size == 1:
        return device
    if batch_size % w.size:
        raise BadInput(f"train.batch_size={batch_size} is the global batch and must be a multiple of the number "
                       f"of processes ({w.size})")
    if device.type not in ("cuda", "cpu"):
        raise BadInput(f"multi-process training runs on CUDA or CPU, not {device.type}")
    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rows(n: int, w: World) -> slice:
    """This rank's rows of a global batch of n."""
    if n % w.size:
        raise BadInput(f"a batch of {n} cannot be split evenly among {w.size} processes")
    b = n // w.size
    return slice(w.rank * b, (w.rank + 1) * b)


def shard(batch, w: World):
    """This rank's rows of a batch (a dataclass whose tensors are batch-first; other fields, such as a
    looped model's `loops`, stay as they are)."""
    if w.size == 1:
        return batch
    tensors = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch) if torch.is_tensor(getattr(batch, f.name))}
    mine = rows(len(next(iter(tensors.values()))), w)
    return dataclasses.replace(batch, **{k: t[mine] for k, t in tensors.items()})


class _Objective(torch.nn.Module):
    """The training loss as a module: DDP synchronises the gradients of what its wrapped module's forward
    computes, and the loss is `model.loss` (or an objective around it), not `model.forward`."""

    def __init__(self, model: torch.nn.Module, loss: Callable[..., torch.Tensor]):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, *args):
        return self.loss(*args)


def wrap(model: torch.nn.Module, loss: Callable[..., torch.Tensor], w: World, device: torch.device):
    """`loss` under DDP (the same callable with one process). The model itself stays unwrapped, so
    checkpoints and evaluation see its own parameter names."""
    if w.size == 1:
        return loss
    # Every seqlab architecture's loss reads all of its parameters (decoder with each mixer and position
    # scheme, encoder, the in-context models, TVP), so DDP need not search the graph for unused ones each
    # step (find_unused_parameters); a model that left one out would stop with DDP's error naming it.
    return DistributedDataParallel(_Objective(model, loss), device_ids=[device.index] if device.type == "cuda" else None)


def global_mean(loss: torch.Tensor, batch, w: World, model=None) -> tuple[torch.Tensor, float]:
    """(the loss to backpropagate, the mean loss over the global batch) for a loss that is the mean over
    this rank's `batch.n_scored` scored terms (target tokens, points), or `model.loss_terms(batch)` where
    the model's loss averages over something else.

    DDP averages gradients over the W ranks, which is the gradient of the global mean only when every rank
    averages over equally many terms; with variable-length answers they do not. With n_r terms on rank r
    and N in all, a single process minimises sum_r n_r * mean_r / N. Scaling rank r's loss by W * n_r / N
    makes DDP's average (1/W) sum_r grad(W * n_r / N * mean_r) exactly the gradient of that. A rank with no
    scored terms adds nothing (its mean is 0/0, scaled by 0); where no rank has any, every rank's loss is
    what one process's would be (0 for a masked mean, NaN for cross-entropy).
    """
    if w.size == 1:
        return loss, loss.item()
    n_scored = model.loss_terms(batch) if hasattr(model, "loss_terms") else batch.n_scored
    stats = torch.tensor([loss.item() * n_scored if n_scored else 0.0, float(n_scored)], dtype=torch.float64,
                         device=loss.device)
    dist.all_reduce(stats)
    total, count = stats.tolist()
    return loss * (w.size * n_scored / count if n_scored else 0.0), total / count if count else loss.item()


def on_main(fn: Callable[[], Any], w: World) -> Any:
    """fn() computed by rank 0 and handed to every rank; the other ranks wait for it."""
    if w.size == 1:
        return fn()
    box = [fn() if w.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
