"""Run directories and W&B: the one way a run records itself.

A run directory holds ``config.yaml`` (LightningCLI), ``run.json`` (data fingerprint, split
file, git commit and ``git describe --dirty`` with a hash of the uncommitted diff, package
versions, parameter count, and how the run ended), ``metrics.json`` (final validation and test
metrics with units, wall time, epochs and steps, stop reason), ``metrics.csv`` (per-epoch metrics)
and ``checkpoints/{best,last}.ckpt``. Reports read these files, never logs. Only rank zero
writes, so a multi-GPU run writes its directory once.

How a run ended (``stop_reason`` in both files): ``max_epochs`` (or ``max_steps``), ``early_stopping``,
``max_time`` (the trainer's time limit cut the run short), ``pruned`` (a sweep's pruner stopped it),
``failed`` (an exception; ``stop_detail`` says which) or ``interrupted`` (SIGINT/SIGTERM).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from eqbench.errors import ConfigError

RUN_DIR_ENV = "EQBENCH_RUN_DIR"  # set by rank 0 so DDP workers (re-launched scripts) share the directory


@dataclass
class RunOptions:
    """Where and how a run records itself.

    Args:
        dir: run directory; default ``runs/<model>-<data>-<timestamp>``.
        wandb: ``offline`` (default, no account needed; ``wandb sync`` later), ``online`` or ``disabled``.
        wandb_project, wandb_group: W&B project and group (a sweep's runs share a group).
        tags: W&B tags (a sweep puts its factor values here).
        test_after_fit: after ``fit``, validate and test the best checkpoint and write metrics.json.
    """

    dir: str | None = None
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "eqbench"
    wandb_group: str | None = None
    tags: list[str] = field(default_factory=list)
    test_after_fit: bool = True


def resolve_run_dir(options: RunOptions, model_name: str, data_name: str) -> Path:
    if options.dir:
        return Path(options.dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model_name}-{Path(str(data_name)).stem}-{stamp}"


class SafeWandbLogger(WandbLogger):
    """WandbLogger whose failures are warnings: W&B must never fail a run."""

    _disabled = False

    def _guard(self, fn, *args, **kwargs):
        if self._disabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any W&B failure (network, auth, disk) must not stop training
            self._disable(err)
            return None

    def _disable(self, err: Exception) -> None:
        self._disabled = True
        warnings.warn(f"W&B logging disabled after an error: {err}", stacklevel=3)

    @property
    def experiment(self):
        # Lightning touches the experiment directly (setup hook); a failing wandb.init must not escape.
        from lightning.fabric.loggers.logger import _DummyExperiment

        if self._disabled:
            return _DummyExperiment()
        try:
            return WandbLogger.experiment.fget(self)
        except Exception as err:  # noqa: BLE001 - see _guard
            self._disable(err)
            return _DummyExperiment()

    def log_metrics(self, *args, **kwargs):
        return self._guard(super().log_metrics, *args, **kwargs)

    def log_hyperparams(self, *args, **kwargs):
        return self._guard(super().log_hyperparams, *args, **kwargs)

    def after_save_checkpoint(self, *args, **kwargs):
        return self._guard(super().after_save_checkpoint, *args, **kwargs)

    def finalize(self, *args, **kwargs):
        return self._guard(super().finalize, *args, **kwargs)


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (Lightning's writer deletes it), so a resumed run's
    learning curve continues in the same file."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(header))


class ResumableCSVLogger(CSVLogger):
    def __init__(self, *args, append: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._append = append

    @property
    def experiment(self):
        if self._experiment is None and self._append:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment


def make_loggers(run_dir: Path, options: RunOptions, name: str, resume: bool = False) -> list:
    # CSVLogger first: trainer.log_dir (where config.yaml goes) is the first logger's directory.
    loggers: list = [ResumableCSVLogger(save_dir=str(run_dir), name="", version="", append=resume)]
    if options.wandb != "disabled" and os.environ.get("WANDB_MODE") != "disabled":
        try:
            loggers.append(SafeWandbLogger(save_dir=str(run_dir), offline=options.wandb == "offline",
                                           project=options.wandb_project, group=options.wandb_group,
                                           tags=options.tags or None, name=name))
        except Exception as err:  # noqa: BLE001 - e.g. wandb missing or misconfigured: warn, train anyway
            warnings.warn(f"W&B logger not created ({err}); continuing without it", stacklevel=2)
    return loggers


def _git(*args: str, text: bool = True):
    """stdout of a git command in eqbench's own checkout, or None (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=text, timeout=20,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return (out or "").strip() or None


def changed_files(a: str, b: str, path: str = "") -> list[str] | None:
    """Files under ``path`` that differ between commits ``a`` and ``b`` of eqbench's checkout (None when
    git cannot tell, e.g. a commit is not in this checkout)."""
    out = _git("diff", "--name-only", a, b, "--", f":(top){path}")
    return None if out is None else [line for line in out.splitlines() if line]


def git_state() -> dict:
    """The code a run used: commit, ``git describe --always --dirty`` and, when the tree has uncommitted
    changes to tracked files, the changed paths and the sha256 of ``git diff HEAD`` (same hash = same
    changes). Untracked files are not part of the hash. Empty when eqbench is not a git checkout."""
    commit = git_commit()
    if commit is None:
        return {}
    state = {"git_commit": commit, "git_describe": (_git("describe", "--always", "--dirty", "--abbrev=12") or
                                                    "").strip() or None}
    # Paths relative to the repository root, whatever the working directory.
    changed = [line for line in (_git("diff", "HEAD", "--name-only") or "").splitlines() if line]
    state["git_dirty"] = bool(changed)
    if changed:
        diff = _git("diff", "HEAD", "--binary", text=False)
        state["git_dirty_files"] = changed
        state["git_diff_sha256"] = hashlib.sha256(diff).hexdigest() if diff is not None else None
    return state


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("eqbench", "torch", "lightning", "numpy", "ase", "h5py", "optuna", "wandb", "e3nn", "tblite"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware(accelerator: str | None = None) -> dict:
    """What the run ran on, for reports: CPU model and cores, torch's thread count, GPU names."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:  # Linux names the model in /proc/cpuinfo; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if accelerator != "CPUAccelerator" and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def target_std(dm, pl_module) -> dict[str, float]:
    """σ of each per-molecule scalar target over the test split: the σ_m of DimeNet's std. MAE and
    logMAE (App. C, Eqs. 10–11), which reports use for their summary rows."""
    out = {}
    for target in getattr(pl_module, "targets", []):
        prop = dm.dataset.properties.get(target.name)
        if prop is None or prop.per_atom or prop.values.ndim != 1 or len(dm.split.test) < 2:
            continue
        out[target.name] = float(np.std(np.asarray(prop.values, dtype=np.float64)[dm.split.test]))
    return out


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


class RunDirectory(pl.Callback):
    """Writes run.json when training starts and metrics.json after validation/test runs."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._start = None
        self._metrics: dict = {}

    def _read_existing(self) -> None:
        path = self.run_dir / "metrics.json"
        if not self._metrics and path.is_file():
            self._metrics = json.loads(path.read_text())

    @rank_zero_only
    def on_fit_start(self, trainer, pl_module):
        from eqbench.models import count_parameters

        self._start = time.time()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        dm = trainer.datamodule
        data = {}
        if dm is not None and getattr(dm, "dataset", None) is not None:
            data = {"path": str(dm.path), "source": dm.dataset.source, "fingerprint": dm.dataset.fingerprint,
                    "split_protocol": dm.protocol, "split_seed": dm.seed,
                    "split_file": str(dm.split.path) if dm.split.path else None,
                    "split_sizes": dict(zip(("train", "val", "test"), dm.split.sizes())),
                    "units": dm.units, "target_std": target_std(dm, pl_module),
                    "elements": sorted(int(z) for z in np.unique(dm.dataset.z))}
        _write_json(self.run_dir / "run.json", {
            "command": sys.argv, "started": datetime.now().isoformat(timespec="seconds"),
            "git_commit": None, **git_state(), "packages": package_versions(), "data": data,
            "n_parameters": count_parameters(pl_module.model), "host": platform.node(),
            "devices": trainer.num_devices, "accelerator": type(trainer.accelerator).__name__,
            "hardware": hardware(type(trainer.accelerator).__name__),
        })

    @rank_zero_only
    def on_train_start(self, trainer, pl_module):
        # After a checkpoint restore: a resumed run starts from the saved step, not from zero.
        self._read_existing()
        self._metrics["start_global_step"] = trainer.global_step
        self._metrics["start_epoch"] = trainer.current_epoch

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_path:
            self._read_existing()
            self._metrics["best_checkpoint"] = ckpt.best_model_path
        self._record_end(trainer, pl_module, *stop_reason(trainer))

    @rank_zero_only
    def on_exception(self, trainer, pl_module, exception):
        if trainer.state.fn != "fit" or self._start is None:
            return  # a failed validate/test/predict leaves the training record as it was
        name = type(exception).__name__
        if name == "TrialPruned":  # optuna's, raised by the sweep's pruning callback
            reason = "pruned"
        elif isinstance(exception, KeyboardInterrupt) or name == "SIGTERMException":
            reason = "interrupted"
        else:
            reason = "failed"
        self._record_end(trainer, pl_module, reason, f"{name}: {exception}"[:300])

    def _record_end(self, trainer, pl_module, reason: str, detail: str | None) -> None:
        """How training ended, into metrics.json and run.json (``ended``)."""
        self._read_existing()
        ended = {"stop_reason": reason, "stop_detail": detail, "epochs": trainer.current_epoch,
                 "global_step": trainer.global_step, "max_epochs": trainer.max_epochs,
                 "max_time_s": trainer_max_time_s(trainer)}
        if self._start is not None:
            ended["wall_time_s"] = round(time.time() - self._start, 2)
        self._metrics.update(ended)
        self._flush(trainer, pl_module)
        run_json = self.run_dir / "run.json"
        if run_json.is_file():
            run = json.loads(run_json.read_text())
            run["ended"] = {**ended, "at": datetime.now().isoformat(timespec="seconds")}
            _write_json(run_json, run)

    def _record(self, trainer, pl_module, stage: str) -> None:
        if trainer.sanity_checking or trainer.state.fn == "fit":
            return
        self._read_existing()
        dm = trainer.datamodule
        units = dm.units if dm is not None and hasattr(dm, "units") else {}
        stage_metrics = {}
        for key, value in trainer.callback_metrics.items():
            if not key.startswith(stage + "_"):
                continue
            name = key[len(stage) + 1:]
            target = name.rsplit("_", 1)[0]
            stage_metrics[name] = {"value": float(value), "unit": units.get(target, "")}
        self._metrics[stage] = stage_metrics
        self._flush(trainer, pl_module)

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module):
        self._record(trainer, pl_module, "val")

    @rank_zero_only
    def on_test_end(self, trainer, pl_module):
        self._record(trainer, pl_module, "test")

    def _flush(self, trainer, pl_module) -> None:
        from eqbench.models import count_parameters

        self._metrics["n_parameters"] = count_parameters(pl_module.model)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.run_dir / "metrics.json", self._metrics)


def _timer(trainer):
    from lightning.pytorch.callbacks import Timer

    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)


def trainer_max_time_s(trainer) -> float | None:
    timer = _timer(trainer)
    return None if timer is None or timer._duration is None else float(timer._duration)


def stop_reason(trainer) -> tuple[str, str | None]:
    """Why ``trainer.fit`` returned normally: ``max_epochs``, ``max_steps``, ``early_stopping``, ``max_time``
    or ``stopped`` (another callback set ``should_stop``), with a detail for the last three."""
    from lightning.pytorch.callbacks import EarlyStopping
    from lightning.pytorch.trainer.states import RunningStage

    if trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs", None
    if trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        return "max_steps", None
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
            return "early_stopping", f"{callback.monitor} did not improve for {callback.patience} epochs"
    timer = _timer(trainer)
    if timer is not None and timer._duration is not None:
        remaining = timer.time_remaining(RunningStage.TRAINING)
        if remaining is not None and remaining <= 0:
            return "max_time", (f"trainer.max_time ({timer._duration / 60:.4g} min) reached after "
                                f"{trainer.current_epoch} of {trainer.max_epochs} epochs")
    return "stopped", "a callback stopped training"


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.npz``: dataset index of each molecule, per-molecule outputs [B, ...]
    and per-atom outputs concatenated over molecules with ``n_atoms`` to split them."""

    def __init__(self, run_dir: str | Path):
        super().__init__(write_interval="epoch")
        self.run_dir = Path(run_dir)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        # Each rank writes its share; rank 0 merges them (in rank order) once all are on disk.
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        arrays = {key: np.concatenate([b[key].cpu().numpy() for b in batches]) for key in batches[0]} if batches \
            else {}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        part = self.run_dir / f"predictions.rank{trainer.global_rank}.npz"
        np.savez(part, **arrays)
        trainer.strategy.barrier("eqbench-predictions")
        if not trainer.is_global_zero:
            return
        parts = [self.run_dir / f"predictions.rank{r}.npz" for r in range(trainer.world_size)]
        loaded = [dict(np.load(p)) for p in parts]
        keys = next((list(d) for d in loaded if d), [])
        merged = {k: np.concatenate([d[k] for d in loaded if d]) for k in keys}
        tmp = self.run_dir / "predictions.tmp.npz"
        np.savez(tmp, **merged)
        os.replace(tmp, self.run_dir / "predictions.npz")
        for p in parts:
            p.unlink()


def read_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: the run has not finished (or {run_dir} is not a run directory)")
    return json.loads(path.read_text())


def run_config(run_dir: Path, require_model: bool = True) -> dict:
    """The config.yaml of a run directory, checked to be a mapping (with a ``model`` section by default)."""
    from eqbench.yamlfiles import load_yaml

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path} not found; is {run_dir} an eqbench run directory?")
    config = load_yaml(config_path, "run config") or {}
    if not isinstance(config, dict) or (require_model and "model" not in config):
        raise ConfigError(f"{config_path} is not a run config (no 'model' section); is {run_dir} an eqbench run "
                          f"directory?")
    return config


def build_task(run_dir: str | Path):
    """The AtomisticTask of a run directory's config, freshly initialised (no weights loaded)."""
    from jsonargparse import ArgumentParser

    from eqbench.task import AtomisticTask

    config = run_config(Path(run_dir))
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(AtomisticTask, "model")
    return parser.instantiate_classes(parser.parse_object({"model": config["model"]})).model


def run_seed(run_dir: str | Path) -> int:
    """The ``seed_everything`` of a run's config (0 when it has none)."""
    seed = run_config(Path(run_dir)).get("seed_everything")
    return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else 0


def load_task(run_dir: str | Path, checkpoint: str = "best"):
    """The trained AtomisticTask of a run directory, with its best (EMA) or last weights.

    ``checkpoint`` is ``best``, ``last`` or the path of a ``.ckpt`` file (trained with this run's config).
    """
    from eqbench.checkpoints import load_weights

    run_dir = Path(run_dir)
    task = build_task(run_dir)
    is_path = str(checkpoint).endswith(".ckpt")
    ckpt = Path(checkpoint) if is_path else run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"checkpoint {ckpt} not found; choose 'best' or 'last', or train the run first")
    load_weights(ckpt, task)
    return task.eval()


def load_model(run_dir: str | Path, checkpoint: str = "best"):
    """The trained AtomisticModel of a run directory (best checkpoint = EMA weights when EMA was on)."""
    return load_task(run_dir, checkpoint).model
