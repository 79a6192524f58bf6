"""PaiNN and its ablations: symmetries, forces, cutoff, parameter counts, what each switch removes,
the paper's Fig. 1 argument, and a short training against parameter-matched SchNet."""

import math

import pytest
import torch

from eqbench.batch import Batch
from eqbench.errors import ModelError
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, count_parameters, create
from tests.model_checks import (
    assert_finite_difference_forces,
    assert_smooth_at_cutoff,
    assert_symmetries,
    random_molecules,
)

ABLATIONS = {
    "full": {},
    "no_scalar_product": {"vector_scalar_product": False},
    "no_vector_propagation": {"vector_propagation": False},
    "no_both": {"vector_scalar_product": False, "vector_propagation": False},
    "invariant": {"vector_features": False},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def painn_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    rep = create("painn", **kwargs)
    return AtomisticModel(rep, [Energy(rep.n_features, forces=True, activation="silu")])


def expected_parameters(F, T=3, K=20, n_elements=101, scalar_product=True, propagation=True, vectors=True):
    """PaiNN's parameters counted from the paper's architecture (Fig. 2), plus the F → F/2 → 1 head.

    Message φ: F → F → kF with k = 3 (φ_s, φ_vs, φ_vv), 2 without W_vv, 1 without vectors; filters:
    one K → T·kF linear layer. Update: U, V (F × F, no bias); a: [s, ‖Vv‖] 2F → F → mF with
    m = 3 (a_vv, a_sv, a_ss), 2 without the scalar product; without vectors a: F → F → F, no U, V.
    """
    k = 1 if not vectors else (3 if propagation else 2)
    m = 1 if not vectors else (3 if scalar_product else 2)
    n_in = 2 * F if vectors else F
    message = (F * F + F) + (F * k * F + k * F)
    update = (2 * F * F if vectors else 0) + (n_in * F + F) + (F * m * F + m * F)
    head = (F * (F // 2) + F // 2) + (F // 2 + 1)
    return n_elements * F + (K * T * k * F + T * k * F) + T * (message + update) + head


@pytest.mark.parametrize("name", ABLATIONS)
def test_energy_invariant_forces_equivariant(name):
    assert_symmetries(painn_model(**ABLATIONS[name]), random_molecules(dtype=torch.float32))


@pytest.mark.parametrize("name", ABLATIONS)
def test_finite_difference_forces_float64(name):
    assert_finite_difference_forces(painn_model(n_features=16, **ABLATIONS[name]), random_molecules())


@pytest.mark.parametrize("name, cutoff", [("full", 2.5), ("full", 5.0), ("invariant", 2.5)])
def test_smooth_at_cutoff(name, cutoff):
    assert_smooth_at_cutoff(painn_model(n_features=16, cutoff=cutoff, **ABLATIONS[name]), cutoff)


def test_has_vectors_and_feature_shapes():
    batch = random_molecules(dtype=torch.float32)
    for name, kwargs in ABLATIONS.items():
        rep = create("painn", n_features=8, **kwargs)
        features = rep(batch)
        assert features.scalar.shape == (len(batch.z), 8)
        if name == "invariant":
            assert rep.has_vectors is False and features.vector is None
        else:
            assert rep.has_vectors is True and features.vector.shape == (len(batch.z), 3, 8)


def test_full_parameter_count_matches_paper():
    n = count_parameters(painn_model())
    # The reference implementation has 589,057 with a 100-row embedding; eqbench embeds Z = 0…100.
    assert n == expected_parameters(128) == 589_057 + 128
    assert abs(n - 588_300) / 588_300 < 0.01  # Tab. 4: 588.3k


@pytest.mark.parametrize("name", [n for n in ABLATIONS if n != "full"])
def test_each_switch_removes_its_parameters(name):
    flags = {"scalar_product": True, "propagation": True, "vectors": True}
    kwargs = ABLATIONS[name]
    flags["scalar_product"] = kwargs.get("vector_scalar_product", True)
    flags["propagation"] = kwargs.get("vector_propagation", True)
    flags["vectors"] = kwargs.get("vector_features", True)
    n = count_parameters(painn_model(**kwargs))
    assert n == expected_parameters(128, **flags)
    assert n < count_parameters(painn_model())


def _copy_into_ablation(full, ablated, T, F):
    """Load the full model's weights into an ablated one (the slices the ablation keeps)."""
    full_sd, abl_sd = full.state_dict(), ablated.state_dict()
    for key, target in abl_sd.items():
        source = full_sd[key]
        if source.shape == target.shape:
            target.copy_(source)
        elif key.endswith("representation.filters.weight") or key.endswith("representation.filters.bias"):
            # Filters of layer l: [W_s, W_vs, W_vv]; the ablation keeps [W_s, W_vs].
            per_layer = source.shape[0] // T
            kept = target.shape[0] // T
            for layer in range(T):
                target[layer * kept:(layer + 1) * kept] = source[layer * per_layer:layer * per_layer + kept]
        else:
            # Output layers of φ ([φ_s, φ_vs, φ_vv]) and a ([a_vv, a_ss, a_sv]): the ablation keeps the first two.
            target.copy_(source[: target.shape[0]])
    ablated.load_state_dict(abl_sd)


@pytest.mark.parametrize("switch, removed", [("vector_propagation", "filters_vv"), ("vector_scalar_product", "a_sv")])
def test_switch_equals_the_paper_ablation(switch, removed):
    """Tab. 4: 'W_vv = 0' and 'no scalar product': the ablated model is the full model with that term zeroed."""
    F, T = 8, 3
    full = painn_model(n_features=F).double()
    ablated = painn_model(seed=1, n_features=F, **{switch: False}).double()
    _copy_into_ablation(full, ablated, T, F)
    batch = random_molecules()
    intact = full(batch)["energy"].detach()
    with torch.no_grad():
        rep = full.representation
        if removed == "filters_vv":
            for layer in range(T):  # W_vv = 0 in Eq. 8
                rows = slice(layer * 3 * F + 2 * F, (layer + 1) * 3 * F)
                rep.filters.weight[rows] = 0
                rep.filters.bias[rows] = 0
        else:
            for update in rep.updates:  # a_sv = 0 in Eq. 9
                update.a[-1].weight[2 * F:] = 0
                update.a[-1].bias[2 * F:] = 0
    zeroed = full(batch)["energy"].detach()
    got = ablated(batch)["energy"].detach()
    torch.testing.assert_close(got, zeroed, rtol=1e-10, atol=1e-10)
    assert (got - intact).abs().max() > 1e-6, "the switched-off term contributed nothing"


def test_invariant_model_output_differs_from_full():
    batch = random_molecules()
    full = painn_model(n_features=8).double()(batch)["energy"]
    inv = painn_model(n_features=8, vector_features=False).double()(batch)["energy"]
    assert (full - inv).abs().max() > 1e-6


def test_zero_interactions_rejected():
    with pytest.raises(ModelError, match="n_interactions"):
        create("painn", n_interactions=0)


# ------------------------------------------------------------------ Fig. 1: propagating directions
def _chain(kind: str) -> Batch:
    """Four atoms, bonds 1 Å, bond angles 120°, planar; cis and trans differ only in their dihedral."""
    h = math.sqrt(3) / 2
    last = [1.0, 2 * h, 0.0] if kind == "cis" else [2.5, h, 0.0]
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.5, h, 0.0], last], dtype=torch.float64)
    return Batch(z=torch.full((4,), 6), pos=pos, batch=torch.zeros(4, dtype=torch.long), n_atoms=torch.tensor([4]))


def _atom_features(name, batch, **kwargs):
    torch.manual_seed(0)
    return create(name, **kwargs).double()(batch).scalar.detach()


def test_fig1_invariant_models_cannot_tell_cis_from_trans_painn_can():
    cis, trans = _chain("cis"), _chain("trans")
    cutoff = 1.5  # bonded neighbours (1 Å) only; 1–3 distances are √3 Å, 1–4 are 2 and √7 Å
    for batch in (cis, trans):
        d = torch.cdist(batch.pos, batch.pos)
        assert ((d < cutoff) & (d > 0)).sum() == 6  # three bonds, both directions
    for name, kwargs in [("schnet", {}), ("painn", {"vector_features": False}),
                         ("painn", {"vector_propagation": False})]:  # directions do not travel beyond neighbours
        a, b = _atom_features(name, cis, cutoff=cutoff, **kwargs), _atom_features(name, trans, cutoff=cutoff, **kwargs)
        assert (a - b).abs().max() < 1e-12, f"{name} {kwargs} resolved the dihedral"
    a, b = _atom_features("painn", cis, cutoff=cutoff), _atom_features("painn", trans, cutoff=cutoff)
    assert (a - b).abs().max() > 1e-7, "full PaiNN did not resolve the dihedral"


# ------------------------------------------------------------------ learning beyond the cutoff
def _dihedral_chains(n: int, seed: int = 0):
    """4-atom chains (bonds 1 ± 0.03 Å, angles 115 ± 4°, random dihedral φ, random orientation), E = cos φ.

    With a 1.45 Å cutoff only bonded atoms are neighbours (1–3 distances ≥ 1.6 Å), so an invariant model
    sees bond lengths only and can do no better than predicting the mean; φ is the Fig. 1 information.
    """
    import numpy as np

    from eqbench.data import AtomisticDataset

    rng = np.random.default_rng(seed)
    numbers, positions, energies = [], [], []
    for _ in range(n):
        b = 1.0 + rng.uniform(-0.03, 0.03, 3)
        angles = np.radians(115 + rng.uniform(-4, 4, 2))
        phi = rng.uniform(0, 2 * np.pi)
        a_pos, b_pos = np.zeros(3), np.array([b[0], 0.0, 0.0])
        c_pos = b_pos + b[1] * np.array([-np.cos(angles[0]), np.sin(angles[0]), 0.0])
        axis = (c_pos - b_pos) / np.linalg.norm(c_pos - b_pos)
        perp = np.cross(np.array([0.0, 0.0, 1.0]), axis)  # in the plane, towards atom 0 for φ = 0
        perp *= np.sign(perp @ (a_pos - b_pos))
        bond = np.cos(np.pi - angles[1]) * axis + np.sin(np.pi - angles[1]) * perp
        # rotate the C→D bond about the B–C axis by φ (Rodrigues)
        bond = bond * np.cos(phi) + np.cross(axis, bond) * np.sin(phi) + axis * (axis @ bond) * (1 - np.cos(phi))
        pos = np.stack([a_pos, b_pos, c_pos, c_pos + b[2] * bond])
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        numbers.append(np.full(4, 6))
        positions.append(pos @ q.T)
        energies.append(float(np.cos(phi)))
    return AtomisticDataset.from_molecules(numbers, positions, {"energy": energies}, {"energy": "kcal/mol"})


def test_painn_learns_what_parameter_matched_schnet_cannot(tmp_path):
    import lightning.pytorch as pl
    import numpy as np

    from eqbench.data import write_cache
    from eqbench.data.datamodule import AtomisticDataModule
    from eqbench.sweep import count_model_parameters, width_for_budget
    from eqbench.task import AtomisticTask, Target

    data = _dihedral_chains(600)
    pos = data.pos.reshape(-1, 4, 3)
    assert np.linalg.norm(pos[:, 0] - pos[:, 2], axis=-1).min() > 1.5  # only bonded neighbours in range
    path = tmp_path / "dihedral.h5"
    write_cache(data, path)
    cutoff = 1.45
    painn_kwargs = dict(n_features=32, n_interactions=3, cutoff=cutoff)
    budget = count_model_parameters("painn", painn_kwargs)
    schnet = width_for_budget("schnet", dict(n_interactions=3, n_rbf=20, cutoff=cutoff), budget)
    assert abs(schnet.n_params - budget) / budget < 0.01
    val_mae = {}
    for name, kwargs in [("painn", painn_kwargs),
                         ("schnet", dict(n_interactions=3, n_rbf=20, cutoff=cutoff, n_features=schnet.width))]:
        pl.seed_everything(0, verbose=False)
        task = AtomisticTask(create(name, **kwargs), targets=[Target("energy")], lr=1e-3)
        data_module = AtomisticDataModule(path=str(path), split="random", train_size=400, val_size=100,
                                          test_size=100, batch_size=20, split_dir=str(tmp_path / "splits"))
        trainer = pl.Trainer(max_epochs=10, inference_mode=False, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        trainer.fit(task, data_module)
        val_mae[name] = float(trainer.callback_metrics["val_energy_mae"])
    spread = float(np.abs(data.properties["energy"].values - data.properties["energy"].values.mean()).mean())
    assert val_mae["schnet"] > 0.8 * spread, f"SchNet should not see the dihedral: {val_mae}, spread {spread}"
    assert val_mae["painn"] < 0.5 * val_mae["schnet"], val_mae


def test_painn_beats_parameter_matched_schnet_on_ferrocene(tmp_path):
    """Bundled 1,1'-difluoroferrocene (GFN2-xTB, kcal/mol): equal epochs, equal parameter budget, same seed.

    At the paper's 5 Å cutoff and 10 epochs on 400 structures PaiNN's validation MAE was 21–39 % below
    SchNet's for seeds 0–2 (seed 0: 3.26 vs 4.12 kcal/mol; energy std 5.5 kcal/mol).
    """
    import lightning.pytorch as pl

    from eqbench.data.datamodule import AtomisticDataModule
    from eqbench.sweep import count_model_parameters, width_for_budget
    from eqbench.task import AtomisticTask, Target

    painn_kwargs = dict(n_features=32, n_interactions=3, cutoff=5.0)
    schnet_kwargs = dict(n_interactions=3, n_rbf=20, cutoff=5.0)
    budget = count_model_parameters("painn", painn_kwargs)
    schnet_kwargs["n_features"] = width_for_budget("schnet", schnet_kwargs, budget).width
    assert abs(count_model_parameters("schnet", schnet_kwargs) - budget) / budget < 0.01
    val_mae = {}
    for name, kwargs in [("painn", painn_kwargs), ("schnet", schnet_kwargs)]:
        pl.seed_everything(0, verbose=False)
        task = AtomisticTask(create(name, **kwargs), targets=[Target("energy")], lr=1e-3)
        data_module = AtomisticDataModule(path="ferrocene", split="random", train_size=400, val_size=200,
                                          test_size=100, batch_size=32, seed=0, split_dir=str(tmp_path))
        trainer = pl.Trainer(max_epochs=10, inference_mode=False, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        trainer.fit(task, data_module)
        val_mae[name] = float(trainer.callback_metrics["val_energy_mae"])
    assert val_mae["painn"] < 0.9 * val_mae["schnet"], val_mae
