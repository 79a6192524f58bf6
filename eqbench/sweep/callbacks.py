"""Lightning callbacks a sweep adds to every trial's config (so config.yaml records them).

- :class:`NonFiniteLossGuard` turns a NaN/inf training loss into an error, so the trial is recorded as
  FAIL with that reason instead of training on NaN weights until ``max_epochs``.
- :class:`TrialProgress` writes the trial's epoch, validation metric and ETA to ``progress.json`` (and
  train.log) after each validation epoch; the worker prints it (:mod:`eqbench.sweep.progress`).
- :class:`OptunaPruning` reports the objective after each validation epoch to the trial this run
  belongs to and stops the run when the study's pruner says so, through optuna-integration's
  ``PyTorchLightningPruningCallback``. The run is a separate process from the worker that owns the
  trial (crash and out-of-memory isolation), so the callback opens the study storage itself; the
  worker passes the trial in the ``EQBENCH_SWEEP_TRIAL`` environment variable (JSON: storage URL,
  study name, trial id — the URL stays out of config files and process listings).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from eqbench.sweep.progress import PROGRESS_FILE, format_progress
from eqbench.tracking import trainer_max_time_s

SWEEP_TRIAL_ENV = "EQBENCH_SWEEP_TRIAL"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(Callback):
    """Raise :class:`NonFiniteLossError` at the first non-finite training loss."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise NonFiniteLossError(f"non-finite training loss ({loss.detach().float().item()}) at epoch "
                                     f"{trainer.current_epoch}, batch {batch_idx}")


class OptunaPruning(Callback):
    """Prune the sweep trial this run belongs to on ``monitor`` (a validation metric, e.g. val_energy_mae).

    Without ``EQBENCH_SWEEP_TRIAL`` (a trial's config.yaml refitted by hand) it does nothing.
    """

    def __init__(self, monitor: str = "val_loss"):
        self.monitor = monitor
        self._pruning = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self._pruning is not None:
            return
        context = os.environ.get(SWEEP_TRIAL_ENV)
        if not context:
            warnings.warn(f"OptunaPruning: {SWEEP_TRIAL_ENV} is not set (not a sweep trial); not pruning",
                          stacklevel=2)
            return
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback

        from eqbench.sweep.spec import load_spec
        from eqbench.sweep.study import open_storage, open_study

        context = json.loads(context)
        spec = load_spec(context["spec"], context.get("profile"))
        study = open_study(spec, open_storage(context["storage"], heartbeat=None), create=False)
        trial = optuna.trial.Trial(study, context["trial_id"])
        self._pruning = PyTorchLightningPruningCallback(trial, monitor=self.monitor)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self._pruning is not None:
            self._pruning.on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        # Only while fitting: the validation of the best checkpoint after training must not prune.
        if self._pruning is not None and trainer.state.fn == "fit":
            self._pruning.on_validation_end(trainer, pl_module)


class TrialProgress(Callback):
    """Writes ``progress.json`` (epoch, max_epochs, ``monitor`` now and best, seconds per epoch, ETA)."""

    def __init__(self, monitor: str = "val_loss", mode: str = "min"):
        self.monitor, self.mode = monitor, mode
        self._start: float | None = None
        self._best: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.time()
        self._first_epoch = trainer.current_epoch

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self._start is None or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        value = float(value) if value is not None else None
        if value is not None and math.isfinite(value):
            better = self._best is None or (value < self._best if self.mode == "min" else value > self._best)
            self._best = value if better else self._best
        done = trainer.current_epoch + 1  # the epoch being validated has finished training
        elapsed = time.time() - self._start
        per_epoch = elapsed / max(1, done - self._first_epoch)
        eta = per_epoch * max(0, trainer.max_epochs - done) if trainer.max_epochs not in (None, -1) else math.inf
        limit = trainer_max_time_s(trainer)
        time_limited = limit is not None and elapsed + eta > limit
        if limit is not None:
            eta = min(eta, max(0.0, limit - elapsed))
        state = {"epoch": done, "max_epochs": trainer.max_epochs, "metric": self.monitor, "value": value,
                 "best": self._best, "epoch_s": round(per_epoch, 2), "elapsed_s": round(elapsed, 1),
                 "eta_s": round(eta, 1) if math.isfinite(eta) else None, "max_time_s": limit,
                 "time_limited": time_limited}
        run_dir = Path(trainer.default_root_dir)
        tmp = run_dir / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, run_dir / PROGRESS_FILE)
        print(format_progress(state), flush=True)
