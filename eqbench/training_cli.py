"""LightningCLI for the training verbs, with eqbench's run directory and defaults.

What this adds to plain LightningCLI:
- a ``run`` group (:class:`~eqbench.tracking.RunOptions`): the run directory, W&B mode/group/tags;
- loggers (CSV + W&B, offline by default), best/last checkpoints and the run-directory callback;
- ``inference_mode=False``: forces are gradients, so evaluation needs autograd;
- checkpoints restored with ``weights_only=True``;
- after ``fit``: validate and test the best checkpoint and print the test metrics with units.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from eqbench.data.datamodule import AtomisticDataModule
from eqbench.task import AtomisticTask
from eqbench.tracking import (
    RUN_DIR_ENV,
    PredictionWriter,
    RunDirectory,
    RunOptions,
    SafeWandbLogger,
    make_loggers,
    resolve_run_dir,
)


class SaveTrainingConfig(SaveConfigCallback):
    """config.yaml records how the run was trained: validate/test/predict on it must not overwrite it."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        # Every logger (W&B among them) receives the full resolved config, not only the task's arguments.
        config = self.config.as_dict()
        for logger in trainer.loggers:
            if isinstance(logger, SafeWandbLogger):
                logger.log_hyperparams(config)


class EqbenchCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True):
        super().__init__(
            AtomisticTask, AtomisticDataModule, args=args, run=run,
            save_config_callback=SaveTrainingConfig, save_config_kwargs={"overwrite": True},
            parser_kwargs={"default_env": False},
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(RunOptions, "run")

    # ------------------------------------------------------------------ trainer with run directory
    def instantiate_trainer(self, **kwargs):
        config = self.config[self.subcommand] if self.subcommand else self.config
        init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        options = RunOptions(**{k: v for k, v in dict(config["run"]).items()})
        model_name = type(init["model"].model.representation).__name__.lower()
        run_dir = resolve_run_dir(options, model_name, str(config["data"]["path"]))
        # Saved in config.yaml, so `fit --config RUN/config.yaml --ckpt_path ...` resumes in place; the
        # environment variable reaches DDP workers, which re-run this command.
        config["run"]["dir"] = str(run_dir)
        os.environ[RUN_DIR_ENV] = str(run_dir)
        trainer_config = {**init.get("trainer", {}), **kwargs}
        trainer_config["default_root_dir"] = str(run_dir)
        trainer_config["inference_mode"] = False
        if trainer_config.get("logger") in (None, True):
            resume = bool(config.get("ckpt_path"))
            trainer_config["logger"] = make_loggers(run_dir, options, run_dir.name, resume=resume)
        callbacks = [init[key] for key in self._parser(self.subcommand).callback_keys]
        callbacks.append(RunDirectory(run_dir))
        if self.subcommand == "predict":
            callbacks.append(PredictionWriter(run_dir))
        user_callbacks = trainer_config.get("callbacks") or []
        if not any(isinstance(c, ModelCheckpoint) for c in user_callbacks):
            # No version counter: a run directory always has best.ckpt/last.ckpt, even when refitted.
            callbacks.append(ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best",
                                             monitor="val_loss", mode="min", save_last=True,
                                             enable_version_counter=False))
        self.run_dir = run_dir
        self.run_options = options
        return self._instantiate_trainer(trainer_config, callbacks)

    # ------------------------------------------------------------------ subcommand hooks
    def _default_weights_only(self) -> None:
        # Checkpoints hold tensors and plain types only; never unpickle arbitrary objects.
        cfg = self.config_init[self.subcommand]
        if "weights_only" in cfg and cfg["weights_only"] is None:
            cfg["weights_only"] = True

    before_fit = before_validate = before_test = before_predict = _default_weights_only

    def after_fit(self):
        if not self.run_options.test_after_fit or self.trainer.interrupted:
            return
        ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path \
            else None
        self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True,
                              verbose=False)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True,
                          verbose=False)
        if self.trainer.is_global_zero:
            log_final_metrics(self.trainer, self.run_dir)
            finish_wandb(self.trainer)  # its closing messages would otherwise follow the summary
            print_summary(self.run_dir)


def log_final_metrics(trainer, run_dir: Path) -> None:
    """metrics.json (best checkpoint's validation and test metrics) into the W&B run's summary."""
    from eqbench.tracking import read_metrics

    metrics = read_metrics(run_dir)
    summary = {f"final/{stage}_{name}": entry["value"] for stage in ("val", "test")
               for name, entry in metrics.get(stage, {}).items()}
    summary.update({"final/n_parameters": metrics.get("n_parameters"), "final/epochs": metrics.get("epochs")})
    for logger in trainer.loggers:
        if isinstance(logger, SafeWandbLogger) and logger._experiment is not None:
            logger._guard(logger.experiment.summary.update, summary)


def finish_wandb(trainer) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, SafeWandbLogger) and logger._experiment is not None:
            logger._guard(logger.experiment.finish)


def print_summary(run_dir: Path) -> None:
    from eqbench.tracking import read_metrics

    metrics = read_metrics(run_dir)
    print(f"\nTest metrics ({metrics.get('n_parameters', '?')} parameters, {metrics.get('epochs', '?')} epochs, "
          f"{metrics.get('wall_time_s', '?')} s):")
    for name, entry in sorted(metrics.get("test", {}).items()):
        if name.endswith("_mae") or name.endswith("_rmse"):
            print(f"  {name:<22} {entry['value']:.5g} {entry['unit']}")
    print(f"Run directory: {run_dir}  (metrics.json, run.json, config.yaml, checkpoints/"
          + (", profile.png" if (run_dir / "profile.png").is_file() else "") + ")")
