"""Test-only callbacks that inject faults into a real `eqbench fit` at a chosen batch."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    """Sends ``signal`` to this process at the start of training batch ``batch`` of epoch ``epoch``, once: the
    ``marker`` file it creates first keeps a resumed run (same config) from being killed again."""

    def __init__(self, epoch: int, batch: int, signal: str, marker: str):
        self.epoch, self.batch, self.signal, self.marker = epoch, batch, signal, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not self.marker.exists():
            self.marker.write_text(str(trainer.global_step))
            os.kill(os.getpid(), getattr(signal, self.signal))


class MemoryLimit(Callback):
    """Limits this process's address space (RLIMIT_AS) to what it uses plus ``headroom_mb``, then allocates
    ``allocate_mb``: the allocation fails the way it does on a machine out of memory."""

    def __init__(self, headroom_mb: int = 256, allocate_mb: int = 4096):
        self.headroom_mb, self.allocate_mb = headroom_mb, allocate_mb

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        limit = used + self.headroom_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        torch.empty(self.allocate_mb * 2**20, dtype=torch.uint8).fill_(1)


class TerminateSweepLauncher(Callback):
    """Sends SIGTERM to the `eqbench sweep run` that launched this trial's worker (the trial's grandparent) at
    the start of training batch ``batch`` of epoch ``epoch``, once (``marker`` as in `KillAt`)."""

    def __init__(self, epoch: int, batch: int, marker: str):
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and not self.marker.exists():
            with open(f"/proc/{os.getppid()}/stat") as f:  # "pid (comm) state ppid ..."
                launcher = int(f.read().rsplit(")", 1)[1].split()[1])
            self.marker.write_text(str(launcher))
            os.kill(launcher, signal.SIGTERM)
