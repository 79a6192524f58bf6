"""W&B offline: a run logs its config, per-epoch and final metrics; a W&B failure never fails the run."""

import json

import pytest
import yaml

from eqbench.cli import main
from tests.toy_data import toy_cache

CONFIG = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False},
    "model": {"representation": {"class_path": "eqbench.models.SchNet",
                                 "init_args": {"n_features": 8, "n_interactions": 1, "n_rbf": 8, "cutoff": 3.0}},
              "targets": [{"name": "energy"}]},
    "data": {"split": "random", "train_size": 40, "val_size": 10, "test_size": 10, "batch_size": 10},
    "run": {"wandb": "offline", "wandb_group": "my-sweep", "tags": ["variant=full"]},
}


def fit(tmp_path):
    config = {**CONFIG, "data": {**CONFIG["data"], "path": str(toy_cache(tmp_path, 60))}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert main(["fit", "--config", str(tmp_path / "config.yaml"), "--run.dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def wandb_enabled(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest disables W&B for the other tests
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_logs_config_history_and_final_metrics(tmp_path, wandb_enabled):
    # A fresh interpreter, as a real run has: wandb keeps per-process settings from earlier tests.
    import os
    import subprocess
    import sys

    config = {**CONFIG, "data": {**CONFIG["data"], "path": str(toy_cache(tmp_path, 60))}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "eqbench.cli", "fit", "--config", str(tmp_path / "config.yaml"),
                             "--run.dir", str(run_dir)], capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "WANDB_MODE"})
    assert result.returncode == 0, result.stderr[-3000:]
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    content = log.read_bytes()  # protobuf records; strings are stored as plain UTF-8
    for key in (b"representation", b"class_path",  # the full config
                b"val_energy_mae", b"train_loss",  # per-epoch metrics
                b"final/test_energy_mae", b"final/n_parameters",  # metrics.json in the summary
                b"my-sweep", b"variant=full"):  # the sweep's group and tags
        assert key in content, key


def test_wandb_that_fails_to_start_leaves_a_successful_run(tmp_path, wandb_enabled, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B backend unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(UserWarning, match="W&B logging disabled.*unreachable"):
        run_dir = fit(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["energy_mae"]["unit"] == "eV"
