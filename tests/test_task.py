"""AtomisticTask: loss conventions, standardisation, schedules, EMA, optimisers."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from eqbench.data.datamodule import AtomisticDataModule
from eqbench.data.dataset import AtomisticDataset
from eqbench.errors import ConfigError
from eqbench.heads import Atomwise
from eqbench.models import SchNet
from eqbench.task import AtomisticTask, Target, ema_window_warning, energy_force_weights, standardize_head
from tests.model_checks import random_molecules
from tests.toy_data import toy_cache


def small_schnet():
    torch.manual_seed(0)
    return SchNet(n_features=16, n_interactions=1, n_rbf=8, cutoff=3.0)


def test_energy_force_weight_conventions():
    assert energy_force_weights(0.95, "painn") == pytest.approx((0.05, 0.95))
    assert energy_force_weights(100, "dimenet") == (1.0, 100)
    with pytest.raises(ConfigError, match="0 ≤ ρ ≤ 1"):
        energy_force_weights(100, "painn")


def test_dimenet_loss_is_eq2():
    """|ΔE| + ρ/(3N) Σ_iα |ΔF_iα| for one molecule (DimeNet Eq. 2)."""
    task = AtomisticTask(small_schnet(), [Target("energy", loss="mae"), Target("forces", loss="mae")],
                         rho=100, rho_convention="dimenet")
    batch = random_molecules(sizes=(4,), dtype=torch.float32)
    n = 4
    e_true, f_true = torch.tensor([1.0]), torch.zeros(n, 3)
    batch.targets = {"energy": e_true, "forces": f_true}
    batch.per_atom = frozenset({"forces"})
    pred = {"energy": torch.tensor([1.5]), "forces": torch.arange(12.0).view(n, 3)}
    loss, _ = task._loss(pred, batch)
    expected = 0.5 + 100 / (3 * n) * sum(range(12))
    assert float(loss) == pytest.approx(expected)


def test_painn_loss_is_weighted_squared_error():
    task = AtomisticTask(small_schnet(), [Target("energy"), Target("forces")], rho=0.95)
    batch = random_molecules(sizes=(2, 3), dtype=torch.float32)
    batch.targets = {"energy": torch.tensor([0.0, 0.0]), "forces": torch.zeros(5, 3)}
    pred = {"energy": torch.tensor([1.0, 3.0]), "forces": torch.ones(5, 3) * 2}
    loss, parts = task._loss(pred, batch)
    assert float(parts["energy"]) == pytest.approx((1 + 9) / 2)
    assert float(parts["forces"]) == pytest.approx(4.0)
    assert float(loss) == pytest.approx(0.05 * 5 + 0.95 * 4)


def test_standardisation_with_atom_references():
    numbers = [np.array([1, 1, 8]), np.array([6, 1, 1, 1, 1]), np.array([8, 8])]
    positions = [np.eye(3)[: len(z)] * 1.5 if len(z) <= 3 else np.random.default_rng(0).normal(size=(len(z), 3)) * 2
                 for z in numbers]
    energies = [-76.0, -40.0, -150.5]
    atomref = np.zeros(119)
    atomref[[1, 6, 8]] = [-0.5, -37.8, -75.0]
    ds = AtomisticDataset.from_molecules(numbers, positions, {"U0": energies}, {"U0": "eV"},
                                         atomrefs={"U0": atomref})
    head = Atomwise(8, output="U0", aggregation="sum")
    standardize_head(head, ds)
    # By hand: residuals −76 − (−76) = 0; −40 − (−39.8) = −0.2; −150.5 − (−150) = −0.5; per atom 0, −0.04, −0.25
    per_atom = np.array([0.0, -0.2 / 5, -0.5 / 2])
    assert float(head.shift) == pytest.approx(per_atom.mean())
    assert float(head.scale) == pytest.approx(per_atom.std())
    assert float(head.atomref[8]) == pytest.approx(-75.0)


def test_intensive_standardisation_uses_molecule_mean():
    ds = AtomisticDataset.from_molecules([np.array([1, 1]), np.array([6, 1, 1])],
                                         [np.eye(3)[:2] * 1.2, np.eye(3) * 1.2], {"gap": [2.0, 4.0]}, {"gap": "eV"})
    head = Atomwise(8, output="gap", aggregation="mean")
    standardize_head(head, ds)
    assert float(head.shift) == pytest.approx(3.0) and float(head.scale) == pytest.approx(1.0)


def test_warmup_exponential_schedule_follows_dimenet():
    """Linear warm-up over warmup_steps, then ×0.1 every decay_steps (DimeNet App.)."""
    task = AtomisticTask(small_schnet(), lr=1e-3, optimizer="amsgrad", scheduler="warmup_exponential",
                         warmup_steps=100, decay_rate=0.1, decay_steps=10_000)
    config = task.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert opt.param_groups[0]["amsgrad"] is True
    lrs = []
    for _ in range(20_001):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[49] == pytest.approx(0.5e-3, rel=0.03)  # decay has barely started (0.1^(49/10^4))
    assert lrs[99] == pytest.approx(1e-3, rel=0.03)
    assert lrs[10_000] == pytest.approx(1e-4, rel=1e-6)
    assert lrs[20_000] == pytest.approx(1e-5, rel=1e-6)


def test_adamw_weight_decay_and_plateau_on_smoothed_loss():
    task = AtomisticTask(small_schnet(), optimizer="adamw", weight_decay=0.01, scheduler="plateau",
                         plateau_factor=0.5)
    config = task.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert config["optimizer"].param_groups[0]["weight_decay"] == 0.01
    assert config["lr_scheduler"]["monitor"] == "val_loss_smoothed"
    assert config["lr_scheduler"]["scheduler"].factor == 0.5


def _fit(tmp_path, task, epochs=2):
    dm = AtomisticDataModule(str(toy_cache(tmp_path, 120)), batch_size=16, train_size=80, val_size=20,
                             test_size=20)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         inference_mode=False, default_root_dir=tmp_path,
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="best",
                                                                 monitor="val_loss")])
    trainer.fit(task, datamodule=dm)
    return trainer, dm


def test_ema_weights_are_saved_and_differ_from_raw_weights(tmp_path):
    task = AtomisticTask(small_schnet(), ema_decay=0.9, lr=1e-2)
    trainer, _ = _fit(tmp_path, task)
    ckpt = torch.load(tmp_path / "best.ckpt", weights_only=True)
    assert "current_model_state" in ckpt, "EMA checkpoints keep the raw weights beside the averaged ones"
    key = "model.representation.embedding.weight"
    assert not torch.allclose(ckpt["state_dict"][key], ckpt["current_model_state"][key])


def test_slow_weight_average_on_a_short_run_is_named():
    # 0.999 over 384 steps: a window of 1 / (1 − 0.999) = 1,000 steps; 0.999 ** 384 = 0.681 of the initial weights
    warning = ema_window_warning(0.999, 384)
    assert "model.ema_decay 0.999" in warning and "1,000 steps" in warning and "68%" in warning
    assert "384" in warning and "e.g. 0.974" in warning  # 1 − 10/384: a window of a tenth of the run
    assert "e.g." not in ema_window_warning(0.9, 10)  # 1 − 10/10 = 0 is no decay to suggest
    assert ema_window_warning(0.99, 3000) is None  # 100 steps of 3,000
    assert ema_window_warning(0.999, 3_000_000) is None  # the paper's run
    assert ema_window_warning(None, 384) is None
    assert ema_window_warning(0.999, float("inf")) is None  # no step limit: nothing to compare with


def test_training_warns_about_a_weight_average_longer_than_the_run(tmp_path):
    task = AtomisticTask(small_schnet(), ema_decay=0.99)  # 100-step window, 2 × 5 steps of training
    with pytest.warns(UserWarning, match="model.ema_decay 0.99 averages the weights over about 100 steps"):
        _fit(tmp_path, task)


@pytest.mark.parametrize("with_forces", [False, True])
def test_training_standardises_from_training_split(tmp_path, with_forces):
    targets = [Target("energy"), Target("forces")] if with_forces else [Target("energy")]
    task = AtomisticTask(small_schnet(), targets)
    _, dm = _fit(tmp_path, task, epochs=1)
    train = dm.split.train
    energy = dm.dataset.properties["energy"].values[train]
    per_atom = energy / dm.dataset.n_atoms[train]
    head = task.model.heads[0]
    assert float(head.shift) == pytest.approx(per_atom.mean(), rel=1e-5)
    if with_forces:  # NequIP's scale: RMS of the training forces' components, by hand
        offsets = dm.dataset.offsets
        f = np.concatenate([dm.dataset.properties["forces"].values[offsets[i]:offsets[i + 1]] for i in train])
        assert float(head.scale) == pytest.approx(np.sqrt(np.mean(f.astype(np.float64) ** 2)), rel=1e-5)
    else:
        assert float(head.scale) == pytest.approx(per_atom.std(), rel=1e-5)


def test_missing_target_names_the_key(tmp_path):
    from eqbench.errors import MissingPropertyError

    task = AtomisticTask(small_schnet(), [Target("U0")])
    with pytest.raises(MissingPropertyError, match="'U0'.*available: \\['energy', 'forces'\\]"):
        _fit(tmp_path, task, epochs=1)


def test_wandb_failure_is_a_warning(tmp_path, monkeypatch):
    from eqbench.tracking import RunOptions, SafeWandbLogger, make_loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest disables W&B for every other test
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    loggers = make_loggers(tmp_path, RunOptions(wandb="offline"), "x")
    wandb_logger = next(lg for lg in loggers if isinstance(lg, SafeWandbLogger))

    def broken(*args, **kwargs):
        raise RuntimeError("wandb service unreachable")

    monkeypatch.setattr(pl.loggers.WandbLogger, "log_metrics", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wandb_logger.log_metrics({"a": 1.0}, step=0)
        wandb_logger.log_metrics({"a": 2.0}, step=1)  # disabled after the first failure: no second warning
    messages = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert len(messages) == 1 and "unreachable" in messages[0]


def test_molecule_totals_keep_float64_precision():
    """A ferrocene-sized total (≈ −23,865 kcal/mol) must resolve differences far below float32's step there."""
    from eqbench.models.base import AtomFeatures

    torch.manual_seed(0)
    head = Atomwise(8, output="energy", aggregation="sum")
    head.set_standardization(scale=0.1, shift=-1136.4321)
    batch = random_molecules(sizes=(21, 21), dtype=torch.float32)
    features = AtomFeatures(scalar=torch.randn(42, 8))
    energy = head(batch, features)["energy"]
    mlp = head.mlp(features.scalar).squeeze(-1).double()
    reference = torch.stack([(0.1 * mlp[:21] - 1136.4321).sum(), (0.1 * mlp[21:] - 1136.4321).sum()])
    assert energy.dtype == torch.float64
    assert float((energy - reference).abs().max()) < 1e-9  # float32 totals would be off by up to ~1e-3

    ds = AtomisticDataset.from_molecules([np.array([1, 1])] * 2, [np.eye(3)[:2] * 1.2] * 2,
                                         {"energy": [-23865.123456, -23865.123457]}, {"energy": "kcal/mol"})
    e = ds.__getitems__([0, 1]).targets["energy"]
    assert e.dtype == torch.float64 and float(e[1] - e[0]) == pytest.approx(-1e-6, abs=1e-9)
