"""`eqbench fit` from the CLI on the bundled ferrocene data: run directory, learning, resume."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eqbench.cli import main
from eqbench.data import read

CONFIG = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False},
    "model": {
        "representation": {"class_path": "eqbench.models.SchNet",
                           "init_args": {"n_features": 32, "n_interactions": 2, "n_rbf": 16, "cutoff": 4.0}},
        "targets": [{"name": "energy"}, {"name": "forces"}],
        "rho": 0.9,  # PaiNN convention: w_E = 0.1, w_F = 0.9
        "lr": 2e-3,
    },
    # 2 epochs of 200 steps each: enough to beat the mean predictor clearly (~2.2 vs 4.0 kcal/mol).
    "data": {"path": "ferrocene", "split": "ferrocene", "train_size": 1600, "val_size": 100, "test_size": 100,
             "batch_size": 8},
    "run": {"wandb": "disabled"},
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    data = "ferrocene"
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    run_dir = tmp / "run"
    assert main(["fit", "--config", str(config_path), "--run.dir", str(run_dir)]) == 0
    return run_dir, data


def test_run_directory_is_complete(trained_run):
    run_dir, data = trained_run
    for name in ("config.yaml", "run.json", "metrics.json", "metrics.csv", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), f"{name} missing from the run directory"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["data"]["fingerprint"] == read(data).fingerprint
    assert Path(run["data"]["split_file"]).is_file()
    assert run["data"]["split_sizes"] == {"train": 1600, "val": 100, "test": 100}
    assert run["data"]["units"]["energy"] == "kcal/mol"
    test_energies = read(data).properties["energy"].values[np.load(run["data"]["split_file"])["test"]]
    assert run["data"]["target_std"]["energy"] == pytest.approx(np.std(test_energies))
    assert "forces" not in run["data"]["target_std"]  # per-atom: not a DimeNet summary target
    assert "git_commit" in run and "torch" in run["packages"] and "lightning" in run["packages"]
    assert run["hardware"]["cpu_count"] == os.cpu_count()
    assert run["hardware"]["torch_threads"] == torch.get_num_threads()
    assert run["hardware"]["cpu"] and "gpus" not in run["hardware"]  # a CPU run names no GPU
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["wall_time_s"] > 0 and metrics["n_parameters"] > 1000
    for stage in ("val", "test"):
        assert metrics[stage]["energy_mae"]["unit"] == "kcal/mol"
        assert metrics[stage]["forces_mae"]["unit"] == "kcal/mol/Å"
        assert np.isfinite(metrics[stage]["forces_rmse"]["value"])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["dir"] == str(run_dir), "config.yaml must name its run directory so resume stays in place"


def test_validation_error_below_mean_predictor(trained_run):
    run_dir, data = trained_run
    dataset = read(data)
    split = np.load(json.loads((run_dir / "run.json").read_text())["data"]["split_file"])
    energy = dataset.properties["energy"].values
    mean_predictor_mae = np.abs(energy[split["val"]] - energy[split["train"]].mean()).mean()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["energy_mae"]["value"] < mean_predictor_mae


def test_smoothed_validation_loss_follows_painn_rule(trained_run):
    run_dir, _ = trained_run
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss") and r.get("val_loss_smoothed")]
    assert len(rows) == 2
    v = [float(r["val_loss"]) for r in rows]
    s = [float(r["val_loss_smoothed"]) for r in rows]
    assert s[0] == pytest.approx(v[0], rel=1e-6)
    assert s[1] == pytest.approx(0.9 * v[0] + 0.1 * v[1], rel=1e-6)


def test_resume_continues_from_saved_step(trained_run):
    run_dir, _ = trained_run
    before = json.loads((run_dir / "metrics.json").read_text())
    assert main(["fit", "--config", str(run_dir / "config.yaml"), "--trainer.max_epochs", "3",
                 "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]) == 0
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["start_global_step"] == before["global_step"] > 0
    assert after["start_epoch"] == 2 and after["epochs"] == 3
    steps_per_epoch = before["global_step"] // 2
    assert after["global_step"] == before["global_step"] + steps_per_epoch
    with open(run_dir / "metrics.csv") as f:
        epochs = sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("val_loss_smoothed")})
    assert epochs == [0, 1, 2], "the resumed run's learning curve must continue the earlier one"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_test_and_predict_verbs_use_the_checkpoint(trained_run):
    run_dir, data = trained_run
    best = str(run_dir / "checkpoints" / "best.ckpt")
    assert main(["test", "--config", str(run_dir / "config.yaml"), "--ckpt_path", best]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["energy_mae"]["unit"] == "kcal/mol"
    assert main(["predict", "--config", str(run_dir / "config.yaml"), "--ckpt_path", best]) == 0
    pred = np.load(run_dir / "predictions.npz")
    dataset = read(data)
    test_idx = np.load(json.loads((run_dir / "run.json").read_text())["data"]["split_file"])["test"]
    assert sorted(pred["index"].tolist()) == sorted(test_idx.tolist())
    assert pred["energy"].shape == (len(test_idx),) and pred["forces"].shape == (pred["n_atoms"].sum(), 3)
    mae = np.abs(pred["energy"] - dataset.properties["energy"].values[pred["index"]]).mean()
    assert mae == pytest.approx(metrics["test"]["energy_mae"]["value"], rel=1e-4)


def test_predict_on_unlabelled_structures(trained_run, tmp_path):
    from eqbench.data import AtomisticDataset, write_cache

    run_dir, data = trained_run
    labelled = read(data).subset(range(5))
    unlabelled = AtomisticDataset(labelled.z, labelled.pos, labelled.offsets, source="new structures")
    write_cache(unlabelled, tmp_path / "new.h5")
    out = tmp_path / "predictions"
    assert main(["predict", "--config", str(run_dir / "config.yaml"), "--data.path", str(tmp_path / "new.h5"),
                 "--data.split", "all", "--data.train_size", "null", "--data.val_size", "null",
                 "--data.test_size", "null", "--run.dir", str(out),
                 "--ckpt_path", str(run_dir / "checkpoints" / "best.ckpt")]) == 0
    pred = np.load(out / "predictions.npz")
    assert sorted(pred["index"].tolist()) == [0, 1, 2, 3, 4] and pred["energy"].shape == (5,)


def test_ase_calculator_on_the_trained_run(trained_run):
    """The run directory as an ASE calculator: training elements recorded, kcal/mol converted to eV."""
    from eqbench.ase import Calculator
    from eqbench.tracking import load_model

    run_dir, data = trained_run
    dataset = read(data)
    recorded = json.loads((run_dir / "run.json").read_text())["data"]["elements"]
    assert recorded == sorted(np.unique(dataset.z).tolist())
    atoms = dataset.to_atoms(0)
    calc = Calculator(run_dir, dtype="float64")
    energy_ev = calc.evaluate([atoms])[0]["energy"]
    batch = dataset.__getitems__([0]).to("cpu", torch.float64)
    energy_kcal = float(load_model(run_dir).double()(batch)["energy"][0].detach())
    kcal_mol = 4184 / 6.02214076e23 / 1.602176634e-19  # eV
    assert energy_ev == pytest.approx(energy_kcal * kcal_mol, rel=1e-6)
    # Trained for two epochs: within a few kcal/mol of the reference's −23,865 kcal/mol.
    assert abs(energy_ev / kcal_mol - dataset.properties["energy"].values[0]) < 20
