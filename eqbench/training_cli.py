"""LightningCLI for the training verbs, with eqbench's run directory and defaults.

What this adds to plain LightningCLI:
- a ``run`` group (:class:`~eqbench.tracking.RunOptions`): the run directory, W&B mode/group/tags;
- loggers (CSV + W&B, offline by default), best/last checkpoints and the run-directory callback;
- ``inference_mode=False``: forces are gradients, so evaluation needs autograd;
- checkpoints restored with ``weights_only=True`` behind one error boundary (:mod:`eqbench.checkpoints`),
  and written atomically (a temporary file renamed);
- SIGTERM (or Ctrl-C) during ``fit`` writes ``last.ckpt`` before the process exits, so the run resumes;
- config errors as one line naming the file, line and column (YAML syntax, wrong types, bad values);
- after ``fit``: validate and test the best checkpoint and print the test metrics with units.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from eqbench.checkpoints import atomic_checkpoint_io, check_fits, read_checkpoint
from eqbench.data.datamodule import AtomisticDataModule
from eqbench.errors import ConfigError
from eqbench.task import AtomisticTask
from eqbench.tracking import (
    RUN_DIR_ENV,
    PredictionWriter,
    ResumableCSVLogger,
    RunDirectory,
    RunOptions,
    SafeWandbLogger,
    make_loggers,
    resolve_run_dir,
)
from eqbench.yamlfiles import load_yaml, locate


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


class SaveOnInterrupt(Callback):
    """``fit`` stopped by SIGTERM (SLURM, a sweep worker, ``kill``) or Ctrl-C: write ``last.ckpt`` of the
    batch reached, so that ``fit --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt`` resumes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)  # the full training state, to resume


class FlushMetricsCSV(Callback):
    """Writes metrics.csv out at the start of every epoch (Lightning buffers 100 steps), so a run killed with
    SIGKILL has the rows of every finished epoch, and its resumed learning curve continues without a gap."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger) and trainer.is_global_zero:
                logger.save()


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

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters right after parsing: the error boundary comes first.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if _is_checkpoint_file(ckpt_path):
            self._checkpoint = read_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def parse_arguments(self, parser, args) -> None:
        """Config errors as :class:`ConfigError` naming the file, line and column, not jsonargparse's usage."""
        argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        files = config_files(argv)
        for path in files:
            load_yaml(path, "config")  # a syntax error names the file, line and column
        for each in _parsers(parser):
            each.exit_on_error = False
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(describe_config_error(str(err), files, argv[0] if argv else "fit", argv)) from None

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
        callbacks.append(SaveOnInterrupt(run_dir / "checkpoints" / "last.ckpt"))
        callbacks.append(FlushMetricsCSV())
        if not trainer_config.get("plugins"):
            trainer_config["plugins"] = [atomic_checkpoint_io()]
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
    def _before_reading_checkpoint(self) -> None:
        # Checkpoints hold tensors and plain types only; never unpickle arbitrary objects.
        cfg = self.config_init[self.subcommand]
        if "weights_only" in cfg and cfg["weights_only"] is None:
            cfg["weights_only"] = True
        # One error boundary for every verb that reads a checkpoint: a file that is not a checkpoint, or one
        # made for another model, is a one-line error naming it (Lightning's own keywords pass through).
        ckpt_path = cfg.get("ckpt_path")
        if _is_checkpoint_file(ckpt_path):
            checkpoint = getattr(self, "_checkpoint", None) or read_checkpoint(ckpt_path)
            check_fits(checkpoint, self.model, ckpt_path)
            self._checkpoint = None

    before_fit = before_validate = before_test = before_predict = _before_reading_checkpoint

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


def _is_checkpoint_file(ckpt_path) -> bool:
    """A path, not one of Lightning's keywords (best, last, hpc, registry[:...])."""
    return bool(ckpt_path) and str(ckpt_path) not in ("best", "last", "hpc", "registry") \
        and not str(ckpt_path).startswith("registry:")


def _parsers(parser):
    yield parser
    action = getattr(parser, "_subcommands_action", None)
    for sub in (action.choices.values() if action is not None else ()):
        yield from _parsers(sub)


def config_files(argv: list[str]) -> list[Path]:
    """YAML files given on the command line (``--config FILE``, ``--model FILE``, ``--data=FILE``, ...)."""
    files = []
    for i, token in enumerate(argv):
        value = token.partition("=")[2] if token.startswith("--") and "=" in token else \
            (argv[i + 1] if token.startswith("--") and i + 1 < len(argv) else None)
        if value and (token.startswith("--config") or value.endswith((".yaml", ".yml"))) and Path(value).is_file():
            files.append(Path(value))
    return files


def describe_config_error(message: str, files: list[Path], verb: str, argv: list[str] = ()) -> str:
    """jsonargparse's (multi-line) message as one line that names the file, line and column of the key."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    details = [line for line in lines if not line.startswith(("Parser key", "Problem with given class_path"))]
    detail = " ".join(details or lines[-1:]) or "invalid value"
    detail = re.sub(r"^error: ", "", detail)
    if not keys:
        where = ", ".join(str(f) for f in files) or "command line"
        return f"{where}: {detail}; fix the config (eqbench {verb} --help lists the options)"
    candidates = [".".join(keys)]
    if len(keys) > 1:
        candidates.insert(0, ".".join([keys[0], "init_args", *keys[1:]]))
    given = [key for key in candidates if any(token.split("=", 1)[0] == f"--{key}" for token in argv)]
    if given:  # the value came from the command line, which overrides the files
        return f"command line: --{given[0]}: {detail}; fix the value (eqbench {verb} --help lists the options)"
    for path in reversed(files):  # later files override earlier ones
        for key in candidates:
            found = locate(path, key)
            if found:
                return (f"{path}, line {found[0]}, column {found[1]}: {key}: {detail}; fix the value "
                        f"(eqbench {verb} --help lists the options)")
    source = f"{', '.join(str(f) for f in files)} or the command line" if files else "command line"
    return f"{source}: {candidates[-1]}: {detail}; fix the value (eqbench {verb} --help lists the options)"


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
