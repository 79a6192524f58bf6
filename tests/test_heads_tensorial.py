"""Tensorial heads (PaiNN §4.2): dipole (Eqs. 12–13), |μ|, polarizability (Eq. 14), ⟨R²⟩; gated blocks."""

from pathlib import Path

import pytest
import torch
import yaml

from eqbench.batch import Batch
from eqbench.errors import ConfigError, EqbenchError
from eqbench.heads import HEADS, Energy
from eqbench.models import AtomisticModel, create
from eqbench.nn.gated import GatedEquivariantBlock
from eqbench.task import AtomisticTask, Target, build_heads
from tests.model_checks import assert_symmetries, random_molecules, random_rotation, with_pos

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def painn(**kwargs):
    torch.manual_seed(0)
    return create("painn", n_features=16, **kwargs).double()


def model_with(rep, targets):
    torch.manual_seed(1)
    return AtomisticModel(rep, build_heads(rep, [Target(**t) for t in targets])).double()


ALL_TENSORIAL = [
    {"name": "energy"}, {"name": "forces"},
    {"name": "dipole", "head": "dipole", "head_kwargs": {"atomic_dipoles": True}},
    {"name": "dipole_q", "head": "dipole", "head_kwargs": {"atomic_dipoles": False}},
    {"name": "mu", "head": "dipole_magnitude"},
    {"name": "polarizability", "head": "polarizability"},
    {"name": "r2", "head": "r2"},
]


def test_heads_registered_by_name():
    assert {"dipole", "dipole_magnitude", "polarizability", "r2"} <= set(HEADS)


def test_outputs_shapes_and_symmetries():
    batch = random_molecules()
    model = model_with(painn(), ALL_TENSORIAL)
    out = model(batch)
    B = batch.n_molecules
    assert out["dipole"].shape == out["dipole_q"].shape == (B, 3)
    assert out["mu"].shape == out["r2"].shape == out["energy"].shape == (B,)
    assert out["polarizability"].shape == (B, 3, 3)
    # dipoles rotate as vectors, α as R α Rᵀ, |μ| and ⟨R²⟩ invariant; all unchanged by translation
    # (positions are taken relative to the centre of mass).
    assert_symmetries(model, batch, vector_outputs=("forces", "dipole", "dipole_q"))


def test_polarizability_symmetric_and_rotates_as_tensor():
    batch = random_molecules()
    model = model_with(painn(), [{"name": "alpha", "head": "polarizability"}]).eval()
    alpha = model(batch)["alpha"].detach()
    torch.testing.assert_close(alpha, alpha.transpose(1, 2))
    rot = random_rotation(5)
    rotated = model(with_pos(batch, batch.pos @ rot.T))["alpha"].detach()
    torch.testing.assert_close(rotated, rot @ alpha @ rot.T)
    torch.testing.assert_close(rotated, rotated.transpose(1, 2))
    assert alpha.abs().max() > 1e-6


def _charged(batch: Batch, charges) -> Batch:
    return Batch(z=batch.z, pos=batch.pos, batch=batch.batch, n_atoms=batch.n_atoms,
                 targets={"total_charge": torch.tensor(charges, dtype=torch.float64)})


@pytest.mark.parametrize("atomic_dipoles", [True, False])
def test_dipole_of_charged_molecule_under_translation(atomic_dipoles):
    batch = _charged(random_molecules(sizes=(5, 4)), [1.0, -2.0])
    Q = batch.targets["total_charge"]
    t = torch.tensor([0.7, -1.9, 3.1], dtype=torch.float64)
    moved = _charged(with_pos(batch, batch.pos + t), Q.tolist())
    kwargs = {"atomic_dipoles": atomic_dipoles}
    # About a fixed point (the coordinate origin): μ(x + t) = μ(x) + Q t, which holds only if Σ q_i = Q.
    fixed = model_with(painn(), [{"name": "mu", "head": "dipole",
                                  "head_kwargs": {**kwargs, "reference_point": "origin"}}]).eval()
    torch.testing.assert_close(fixed(moved)["mu"], fixed(batch)["mu"] + Q[:, None] * t)
    # About the centre of mass (default): the dipole moves with the molecule.
    com = model_with(painn(), [{"name": "mu", "head": "dipole", "head_kwargs": kwargs}]).eval()
    torch.testing.assert_close(com(moved)["mu"], com(batch)["mu"])
    # Without a total_charge target the molecule is neutral: translation changes nothing even about the origin.
    neutral = Batch(z=batch.z, pos=batch.pos, batch=batch.batch, n_atoms=batch.n_atoms)
    torch.testing.assert_close(fixed(with_pos(neutral, neutral.pos + t))["mu"], fixed(neutral)["mu"])


def test_center_of_mass_uses_atomic_masses():
    # H–F: the centre of mass sits near F. Dipole about the COM vs about the origin differs by Q·R_com.
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.92]], dtype=torch.float64)
    batch = Batch(z=torch.tensor([1, 9]), pos=pos, batch=torch.zeros(2, dtype=torch.long), n_atoms=torch.tensor([2]),
                  targets={"total_charge": torch.tensor([1.0], dtype=torch.float64)})
    heads = {ref: model_with(painn(), [{"name": "mu", "head": "dipole",
                                        "head_kwargs": {"reference_point": ref}}]).eval()
             for ref in ("origin", "center_of_mass")}
    r_com = torch.tensor([0.0, 0.0, 0.92 * 18.998403 / (18.998403 + 1.00794)], dtype=torch.float64)
    about_origin, about_com = heads["origin"](batch)["mu"], heads["center_of_mass"](batch)["mu"]
    torch.testing.assert_close(about_origin - about_com, 1.0 * r_com[None], atol=1e-5, rtol=1e-4)


def test_latent_charge_dipole_of_diatomic_lies_on_the_bond():
    # Eq. 12 uses positions and scalars only: for two atoms μ = q (r₁ − r₂) ∥ bond.
    pos = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.8, -0.4]], dtype=torch.float64)
    batch = Batch(z=torch.tensor([6, 8]), pos=pos, batch=torch.zeros(2, dtype=torch.long), n_atoms=torch.tensor([2]))
    mu = model_with(painn(), [{"name": "mu", "head": "dipole", "head_kwargs": {"atomic_dipoles": False}}])(batch)["mu"]
    bond = pos[1] - pos[0]
    assert torch.linalg.cross(mu[0], bond).norm() < 1e-10 * bond.norm() * mu.norm()
    assert mu.norm() > 1e-8


def test_magnitude_is_norm_of_dipole():
    batch = random_molecules()
    rep = painn()
    torch.manual_seed(3)
    vec = HEADS["dipole"](rep, output="mu_vec").double()
    mag = HEADS["dipole_magnitude"](rep, output="mu").double()
    mag.load_state_dict(vec.state_dict())
    features = rep(batch)
    torch.testing.assert_close(mag(batch, features)["mu"], vec(batch, features)["mu_vec"].norm(dim=-1))


def test_r2_is_charge_weighted_squared_distance_from_center_of_mass():
    # One atom sits at its own centre of mass: ⟨R²⟩ = 0; a homonuclear dimer at distance d: Σ q (d/2)² ∝ d².
    rep = painn()
    model = model_with(rep, [{"name": "r2", "head": "r2"}])
    single = Batch(z=torch.tensor([8]), pos=torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64),
                   batch=torch.zeros(1, dtype=torch.long), n_atoms=torch.tensor([1]))
    assert model(single)["r2"].abs().item() < 1e-12
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.2]], dtype=torch.float64)
    dimer = Batch(z=torch.tensor([7, 7]), pos=pos, batch=torch.zeros(2, dtype=torch.long), n_atoms=torch.tensor([2]))
    head = model.heads[0]
    q, _ = head.net(rep(dimer))
    torch.testing.assert_close(model(dimer)["r2"], (q.sum() * 0.6**2)[None])


@pytest.mark.parametrize("head", ["polarizability", "dipole", "dipole_magnitude"])
@pytest.mark.parametrize("model", ["schnet", "painn-invariant"])
def test_vector_heads_refuse_models_without_vectors(head, model):
    rep = create("schnet", n_features=8) if model == "schnet" else create("painn", n_features=8,
                                                                          vector_features=False)
    with pytest.raises(ConfigError) as err:
        build_heads(rep, [Target("y", head=head)])
    assert isinstance(err.value, EqbenchError)
    message = str(err.value)
    assert head in message and type(rep).__name__ in message and "vector" in message


@pytest.mark.parametrize("head", ["dipole", "dipole_magnitude", "r2"])
def test_scalar_only_heads_work_for_invariant_models(head):
    rep = create("schnet", n_features=8).double()
    kwargs = {} if head == "r2" else {"atomic_dipoles": False}
    model = AtomisticModel(rep, build_heads(rep, [Target("y", head=head, head_kwargs=kwargs)])).double()
    assert_symmetries(model, random_molecules(), vector_outputs=("y",) if head == "dipole" else ())


def test_unknown_reference_point_is_a_config_error():
    with pytest.raises(ConfigError, match="reference_point"):
        HEADS["dipole"](painn(), output="mu", reference_point="centroid")


def test_gated_block_is_equivariant():
    torch.manual_seed(0)
    block = GatedEquivariantBlock(6, 4, scalar_activation=True).double()
    s, v = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 3, 6, dtype=torch.float64)
    rot = random_rotation(2)
    s1, v1 = block(s, v)
    s2, v2 = block(s, torch.einsum("ij,njf->nif", rot, v))
    assert s1.shape == (5, 4) and v1.shape == (5, 3, 4)
    torch.testing.assert_close(s2, s1)
    torch.testing.assert_close(v2, torch.einsum("ij,njf->nif", rot, v1))


def test_task_trains_joint_model_on_tensorial_targets():
    """§5.4's joint model through AtomisticTask: the loss covers every target and gradients reach all heads."""
    batch = random_molecules()
    B = batch.n_molecules
    g = torch.Generator().manual_seed(0)
    a = torch.randn(B, 3, 3, generator=g, dtype=torch.float64)
    batch.targets.update({"energy": torch.randn(B, generator=g, dtype=torch.float64),
                          "forces": torch.randn(len(batch.z), 3, generator=g, dtype=torch.float64),
                          "dipole": torch.randn(B, 3, generator=g, dtype=torch.float64),
                          "polarizability": (a + a.transpose(1, 2)).reshape(B, 9)})
    targets = [{"name": "energy"}, {"name": "forces"},
               {"name": "dipole", "head": "dipole", "head_kwargs": {"atomic_dipoles": True}},
               {"name": "polarizability", "head": "polarizability"}]
    task = AtomisticTask(painn(), targets=targets, rho=0.95).double()
    loss, parts = task._loss(task(batch), batch)
    assert set(parts) == {"energy", "forces", "dipole", "polarizability"}
    loss.backward()
    for head in task.model.heads:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()), type(head).__name__


def _representation_from(init: dict):
    module, _, cls = init["class_path"].rpartition(".")
    assert module == "eqbench.models"
    return create(cls.lower(), **init.get("init_args", {}))


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("*.yaml")
                                        if p.name.startswith(("painn_", "schnet_"))))
def test_configs_build_their_models(path):
    config = yaml.safe_load((CONFIGS / path).read_text())
    model = config["model"]
    task = AtomisticTask(_representation_from(model["representation"]), targets=model["targets"],
                         **{k: v for k, v in model.items() if k not in ("representation", "targets")})
    names = {t["name"] for t in model["targets"]}
    assert {t.name for t in task.targets} == names
    assert task.hparams.weight_decay == 0.01 and task.hparams.optimizer == "adamw"  # PaiNN §5
    assert task.hparams.plateau_factor == 0.5 and task.hparams.plateau_smoothing == 0.9
    if "md17" in path and "forces" not in path or "spectra" in path:
        assert model["rho"] == 0.95 and model["rho_convention"] == "painn"
    assert any(isinstance(h, Energy) for h in task.model.heads) == bool(names & {"energy", "forces"})


def test_fit_with_tensorial_targets_through_lightning(tmp_path):
    """Dataset → DataModule → AtomisticTask → Trainer with dipole [3], polarizability [3, 3] and total_charge."""
    import lightning.pytorch as pl
    import numpy as np

    from eqbench.data import AtomisticDataset, write_cache
    from eqbench.data.datamodule import AtomisticDataModule

    rng = np.random.default_rng(0)
    mols = [random_molecules(sizes=(int(n),), seed=i) for i, n in enumerate(rng.integers(3, 7, size=40))]
    props = {"energy": rng.normal(size=40), "dipole": rng.normal(size=(40, 3)),
             "polarizability": np.stack([a + a.T for a in rng.normal(size=(40, 3, 3))]),
             "total_charge": rng.integers(-1, 2, size=40).astype(float)}
    data = AtomisticDataset.from_molecules([m.z.numpy() for m in mols], [m.pos.numpy() for m in mols], props,
                                           {"energy": "eV", "dipole": "D", "polarizability": "a0^3",
                                            "total_charge": "e"})
    write_cache(data, tmp_path / "tensorial.h5")
    targets = [{"name": "energy"}, {"name": "dipole", "head": "dipole"},
               {"name": "polarizability", "head": "polarizability"}]
    task = AtomisticTask(create("painn", n_features=8, n_interactions=2), targets=targets)
    dm = AtomisticDataModule(path=str(tmp_path / "tensorial.h5"), split="random", train_size=30, val_size=10,
                             test_size=0, batch_size=10, split_dir=str(tmp_path / "splits"))
    trainer = pl.Trainer(max_epochs=2, inference_mode=False, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, dm)
    for name in ("dipole", "polarizability"):
        assert torch.isfinite(trainer.callback_metrics[f"val_{name}_mae"])
