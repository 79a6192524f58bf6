"""Multi-process training: `eqbench fit --trainer.strategy ddp` on 2 CPU processes (gloo).

The CLI is run as a subprocess because Lightning's DDP launcher re-runs the command line
for the other ranks.
"""

import json
import subprocess
import sys

import pytest
import torch.distributed as dist
import yaml

from tests.toy_data import toy_cache

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available")

CONFIG = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False,
                "accelerator": "cpu"},
    "model": {"representation": {"class_path": "eqbench.models.SchNet",
                                 "init_args": {"n_features": 16, "n_interactions": 2, "n_rbf": 8, "cutoff": 4.0}},
              "targets": [{"name": "energy"}, {"name": "forces"}], "rho": 0.9, "lr": 3e-3},
    # Odd evaluation sizes: the two ranks get unequal shares, which must neither hang nor repeat molecules.
    "data": {"split": "random", "train_size": 120, "val_size": 31, "test_size": 37, "batch_size": 8},
    "run": {"wandb": "disabled"},
}


def eqbench(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "eqbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env={**__import__("os").environ, "WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_ddp_metrics_equal_single_process_evaluation(tmp_path):
    config = {**CONFIG, "data": {**CONFIG["data"], "path": str(toy_cache(tmp_path, 200))}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "runs" / "ddp"
    eqbench("fit", "--config", "config.yaml", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--run.dir", str(run_dir), cwd=tmp_path)

    # The run directory is written once, by rank 0, and knows it ran on two processes.
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["devices"] == 2
    ddp_metrics = json.loads((run_dir / "metrics.json").read_text())["test"]

    single_dir = tmp_path / "single"
    eqbench("test", "--config", str(run_dir / "config.yaml"), "--trainer.devices", "1", "--trainer.strategy",
            "auto", "--run.dir", str(single_dir), "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt"),
            cwd=tmp_path)
    single_metrics = json.loads((single_dir / "metrics.json").read_text())["test"]
    for name in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse"):
        assert ddp_metrics[name]["value"] == pytest.approx(single_metrics[name]["value"], rel=1e-5), name


def test_ddp_predict_gathers_every_rank(tmp_path):
    import numpy as np

    config = {**CONFIG, "trainer": {**CONFIG["trainer"], "max_epochs": 1},
              "data": {**CONFIG["data"], "path": str(toy_cache(tmp_path, 200))}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    eqbench("fit", "--config", "config.yaml", "--run.dir", str(run_dir), "--run.test_after_fit", "false",
            cwd=tmp_path)
    eqbench("predict", "--config", str(run_dir / "config.yaml"), "--trainer.devices", "2", "--trainer.strategy",
            "ddp", "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt"), cwd=tmp_path)
    pred = np.load(run_dir / "predictions.npz")
    split = np.load(json.loads((run_dir / "run.json").read_text())["data"]["split_file"])
    assert sorted(pred["index"].tolist()) == sorted(split["test"].tolist())  # 37 molecules, none twice
    assert pred["forces"].shape == (int(pred["n_atoms"].sum()), 3)
    assert not list(run_dir.glob("predictions.rank*"))
