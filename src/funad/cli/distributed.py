"""What `funad fit` and `funad predict` share under torchrun: the process group and its errors."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta


def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dist-timeout", type=float, default=30.0, metavar="MINUTES",
                        help="under torchrun: how long a process waits for the others at each exchange before "
                             "the job stops with an error (default 30)")


@contextmanager
def distributed_run(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun: this process's place in the process group for the command's duration, and an
    error that names the rank and says where to look when another rank stopped."""
    from funad.utils import distributed

    with distributed.process_group(timedelta(minutes=args.dist_timeout)):
        try:
            yield
        except RuntimeError as error:
            if distributed.world_size() == 1:
                raise
            raise RuntimeError(f"rank {distributed.rank()} of {distributed.world_size()}: {error} "
                               "(if another rank stopped, its error is above; torchrun stops the job)") from error
