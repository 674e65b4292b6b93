"""Data parallelism over ``torch.distributed``: which share of the work is this process's, and the collectives.

A run started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous) joins a process group in :func:`process_group`; everything else here reads the
group that is initialised, and without one (a plain ``funad fit``, or the group already left)
acts as the one process of a world of size 1: every share is the whole, every gather returns
its input. So the training code has one path, and a single-process run computes what it
always did.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# What torchrun sets in each process it starts.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _group() -> ModuleType | None:
    """``torch.distributed`` while a process group is initialised, else None.

    torch is imported only by the code that joins a group, so a command that never imports it
    (``funad predict`` of an exported ONNX model) is a world of one without paying for it.
    """
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_initialized() else None


def _dist() -> ModuleType:
    import torch.distributed

    return torch.distributed


def rank() -> int:
    group = _group()
    return group.get_rank() if group else 0


def world_size() -> int:
    group = _group()
    return group.get_world_size() if group else 1


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints and the model, and logs progress."""
    return rank() == 0


def block(count: int, index: int | None = None, parts: int | None = None) -> range:
    """Part ``index`` (default: this rank) of ``range(count)`` cut into ``parts`` (default: the world
    size) contiguous blocks whose sizes differ by at most one, the larger ones first."""
    index = rank() if index is None else index
    parts = world_size() if parts is None else parts
    base, extra = divmod(count, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


def block_sizes(count: int) -> list[int]:
    return [len(block(count, index)) for index in range(world_size())]


def _wire_device() -> torch.device:
    """Where tensors travel from: NCCL moves CUDA tensors only, gloo CPU tensors."""
    import torch

    if _dist().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(local: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order (rank ``r`` holds ``sizes[r]`` rows).

    This rank's rows are ``local`` itself, so they keep their autograd history; the other
    ranks' rows arrive as constants. A loss of the gathered tensor therefore has, on each rank,
    the gradient through that rank's rows only: the ranks' gradients sum to the gradient of the
    single-process loss (see :func:`sum_gradients`).
    """
    if world_size() == 1:
        return local
    import torch

    wire = _wire_device()
    width = max(sizes)
    padded = local.detach().to(wire)
    if len(local) < width:  # all_gather moves equal shapes
        padded = torch.cat([padded, padded.new_zeros((width - len(local), *local.shape[1:]))])
    received = [torch.empty_like(padded) for _ in sizes]
    _dist().all_gather(received, padded.contiguous())
    pieces = [part[:size].to(local.device) for part, size in zip(received, sizes)]
    pieces[rank()] = local
    return torch.cat(pieces)


def sum_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Sum the parameters' gradients over the ranks, in place (one message for all of them)."""
    if world_size() == 1:
        return
    import torch

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_wire_device())
    _dist().all_reduce(flat, op=_dist().ReduceOp.SUM)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        parameter.grad = flat[offset:offset + grad.numel()].view_as(grad).to(grad.device)
        offset += grad.numel()


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (small, picklable), in rank order."""
    if world_size() == 1:
        return [value]
    received: list[Any] = [None] * world_size()
    _dist().all_gather_object(received, value)
    return received


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def use_every_core() -> None:
    """On rank 0 once the other ranks have finished: the stages it runs alone take the machine's cores."""
    import torch

    torch.set_num_threads(available_cores())


def available_cores() -> int:
    """The cores this process may run on (a Slurm allocation's, not the whole machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_process() -> int:
    """This machine's cores divided among the processes torchrun started on it."""
    return max(1, available_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


@contextmanager
def process_group(timeout: timedelta) -> Iterator[None]:
    """Join torchrun's process group for the duration of the block (nothing without torchrun).

    gloo on CPU, NCCL when CUDA is available (each process on the GPU of its ``LOCAL_RANK``).
    ``timeout`` bounds every collective, the last one too (the ranks wait for each other before
    leaving): a rank waiting on one that died or hangs fails with an error after it instead of
    waiting for ever. Each process gets its share of the cores, so
    that the ranks on one machine do not oversubscribe it.
    """
    if not launched() or _group():
        yield
        return
    import torch

    dist = _dist()
    missing = [name for name in _LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"started as a distributed process but {', '.join(missing)} is not set: "
                           "launch with torchrun")
    # torch._dynamo (timm and torchvision import it) keeps alive a group that exists when it is first
    # imported, past destroy_process_group: the group's gloo threads then outlived the interpreter, and
    # one that released a finished collective during its shutdown aborted the rank now and then
    # ("terminate called without an active exception"). Imported before the group, it holds none.
    import torch._dynamo

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.set_num_threads(threads_per_process())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    try:
        yield
        # The ranks leave the group together, so that none tears it down while another is still in it
        # (rank 0 fitting the scorer or joining predict's parts). After an error no rank waits.
        dist.barrier()
    finally:
        dist.destroy_process_group()
