"""A sweep trial's progress while it runs: epoch, validation metric and ETA.

The trial process (callback :class:`eqbench.sweep.callbacks.TrialProgress`, added to every trial's
config) writes
``RUN_DIR/progress.json`` after each validation epoch and prints the same line into its train.log. The
worker that owns the trial (:class:`ProgressFollower`, a thread) reads that file and prints one line
per epoch, at most every ``min_interval_s`` seconds, e.g.::

    [host:123/w0] trial 4 epoch 7/20: val_forces_mae 1.91 (best 1.88), 25 s/epoch, ETA 5.4 min

Plain lines suit a terminal and a log file alike; several workers share one terminal without a live
display fighting over it. ``eqbench sweep status --watch`` refreshes the table of cells.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

PROGRESS_FILE = "progress.json"


def format_progress(state: dict) -> str:
    total = state.get("max_epochs")
    text = f"epoch {state['epoch']}" + (f"/{total}" if total not in (None, -1) else "")
    if state.get("value") is not None:
        text += f": {state['metric']} {state['value']:.4g}"
        if state.get("best") is not None and state["best"] != state["value"]:
            text += f" (best {state['best']:.4g})"
    text += f", {state['epoch_s']:.0f} s/epoch"
    if state.get("eta_s") is not None:
        eta = state["eta_s"]
        text += f", ETA {eta:.0f} s" if eta < 120 else f", ETA {eta / 60:.1f} min"
    if state.get("time_limited"):
        text += " (max_time stops it before the last epoch)"
    return text


class ProgressFollower:
    """Context manager: a thread that prints a running trial's ``progress.json`` as it changes."""

    def __init__(self, run_dir: Path, log: Callable[[str], None], prefix: str, min_interval_s: float = 10.0,
                 poll_s: float = 2.0):
        self.path = Path(run_dir) / PROGRESS_FILE
        self.log, self.prefix, self.min_interval_s, self.poll_s = log, prefix, min_interval_s, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"progress-{prefix}", daemon=True)
        self._last_epoch, self._last_print = None, 0.0

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check()

    def check(self, final: bool = False) -> None:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):  # not written yet, or being replaced
            return
        if state.get("epoch") == self._last_epoch:
            return
        if not final and self._last_epoch is not None and time.time() - self._last_print < self.min_interval_s:
            return  # a modest rate: fast epochs are summarised by the next line
        self._last_epoch, self._last_print = state.get("epoch"), time.time()
        self.log(f"{self.prefix} {format_progress(state)}")

    def __enter__(self) -> ProgressFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.check(final=True)  # the last epoch, even when the trial was faster than the polling
