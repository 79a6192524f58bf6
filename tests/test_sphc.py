"""SPHC maps of So3krates on cumulene rotors (eqbench.evaluate.sphc, So3krates Fig. 3 / Eq. 14)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation

from eqbench.cli import main
from eqbench.data.cache import read_cache
from eqbench.errors import ConfigError, DataError
from eqbench.evaluate.sphc import analyse, rotor_ends, sphc_statistics, sphc_weights
from eqbench.models import So3krates
from eqbench.models.so3krates import sphc_softmax_weights
from eqbench.nn import PolynomialEnvelope

BUNDLED = Path(__file__).resolve().parents[1] / "eqbench" / "data" / "bundled"


@pytest.fixture(scope="module")
def profile():
    return read_cache(BUNDLED / "cumulene_profile.h5")


def _structure(dataset, index):
    batch = dataset.__getitems__([index])
    return batch.z.numpy(), batch.pos.to(torch.float64).numpy()


def test_rotor_ends_are_the_two_ch2_groups(profile):
    for index in range(0, len(profile), 7):
        numbers, pos = _structure(profile, index)
        carbons = np.flatnonzero(numbers == 6)
        ends = rotor_ends(numbers, pos)
        assert [len(e) for e in ends] == [2, 2]
        # each end's hydrogens are bonded to one and the same terminal carbon, the two ends to different ones
        bonded = [{int(carbons[np.argmin(np.linalg.norm(pos[carbons] - pos[h], axis=1))]) for h in e} for e in ends]
        assert all(len(b) == 1 for b in bonded) and bonded[0] != bonded[1]
        for e, (c,) in zip(ends, bonded):
            assert np.linalg.norm(pos[e] - pos[c], axis=1).max() < 1.2
        from_centre = np.linalg.norm(pos[carbons] - pos[carbons].mean(0), axis=1)
        chain_ends = {int(carbons[i]) for i in np.argsort(from_centre)[-2:]}
        assert bonded[0] | bonded[1] == chain_ends


def test_rotor_ends_refuse_what_is_not_a_rotor():
    with pytest.raises(DataError, match="two heavy atoms"):
        rotor_ends(np.array([6, 1, 1, 1, 1]), np.random.default_rng(0).normal(size=(5, 3)), "methane.xyz")
    pos = np.array([[0.0, 0, 0], [1.3, 0, 0], [2.0, 0.9, 0], [2.0, -0.9, 0]])
    with pytest.raises(DataError, match="one side"):
        rotor_ends(np.array([6, 6, 1, 1]), pos, "vinyl")


def _envelope_literal(d: float, p: int = 6) -> float:
    """DimeNet Eq. 8 with cutoff 1, written out."""
    if d >= 1.0:
        return 0.0
    return 1 - (p + 1) * (p + 2) / 2 * d**p + p * (p + 2) * d ** (p + 1) - p * (p + 1) / 2 * d ** (p + 2)


def test_weights_are_eq14_written_out():
    """X_ij = ‖χ_i − χ_j‖, χ̃ = row softmax (j = i included), weight u(n χ̃_ij), j ≠ i: loops against the module."""
    rng = np.random.default_rng(1)
    chi = rng.normal(size=(7, 3)) * 0.6
    n = len(chi)
    expected = np.zeros((n, n))
    distances = np.zeros((n, n))
    for i in range(n):
        row = [math.sqrt(sum((chi[i, c] - chi[j, c]) ** 2 for c in range(3))) for j in range(n)]
        total = sum(math.exp(x) for x in row)
        for j in range(n):
            distances[i, j] = row[j]
            if j != i:
                expected[i, j] = _envelope_literal(n * math.exp(row[j]) / total)
    x, weight = sphc_weights(torch.tensor(chi), PolynomialEnvelope(1.0, 6))
    np.testing.assert_allclose(x.numpy(), distances, atol=1e-12)
    np.testing.assert_allclose(weight.numpy(), expected, atol=1e-12)
    assert 0 < (expected > 0).sum() < n * (n - 1)  # the cutoff at 1/n keeps some pairs and drops others
    # the model's own (pair-list) computation of the same weights
    center, neighbor = (t.reshape(-1) for t in torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"))
    keep = center != neighbor
    center, neighbor = center[keep], neighbor[keep]
    model_weight = sphc_softmax_weights(torch.tensor(chi), center, neighbor, torch.full((len(center),), float(n),
                                        dtype=torch.float64), PolynomialEnvelope(1.0, 6))
    np.testing.assert_allclose(model_weight.numpy(), expected[center.numpy(), neighbor.numpy()], atol=1e-12)


def test_statistics_of_a_map_that_joins_the_ends():
    """Ends mapped onto one point: opposite distance 0, every opposite pair inside N_χ with the largest weight."""
    chi = torch.tensor([[0.0, 0, 0], [3.0, 0, 0], [-3.0, 0, 0], [0.1, 1.0, 0], [0.1, 1.0, 0], [0.1, 1.0, 0],
                        [0.1, 1.0, 0]], dtype=torch.float64)
    ends = (np.array([3, 4]), np.array([5, 6]))
    stats = sphc_statistics(chi, ends, PolynomialEnvelope(1.0, 6))
    assert stats["opposite_distance"] == 0 and stats["same_distance"] == 0
    assert stats["relative_opposite_distance"] == 0 and stats["opposite_in_neighbourhood"] == 1
    _, weight = sphc_weights(chi, PolynomialEnvelope(1.0, 6))
    assert stats["opposite_weight"] == pytest.approx(float(weight[3].max()))
    far = sphc_statistics(chi, (np.array([1]), np.array([2])), PolynomialEnvelope(1.0, 6))
    assert far["relative_opposite_distance"] > 1 and far["opposite_weight"] == 0


def _small_so3krates(seed: int = 0) -> So3krates:
    torch.manual_seed(seed)
    return So3krates(n_features=12, n_interactions=3, n_rbf=8, cutoff=2.5, lmax=1, n_heads=2,
                     nonlocal_corrections=True).double()


def test_statistics_do_not_depend_on_orientation(profile):
    """χ is equivariant, so distances and weights between SPHCs are invariant under a rotation of the molecule."""
    model = _small_so3krates()
    subset = profile.subset(np.arange(0, len(profile), 20))
    before = analyse(model, subset)
    rotation = torch.tensor(Rotation.random(random_state=3).as_matrix())

    class Rotated:
        source = subset.source

        def __len__(self):
            return len(subset)

        def __getitems__(self, indices):
            batch = subset.__getitems__(indices)
            return replace(batch, pos=(batch.pos.to(torch.float64) @ rotation.T).to(batch.pos.dtype))

    after = analyse(model, Rotated())
    for stage_a, stage_b in zip(before["layers"], after["layers"]):
        for key, value in stage_a.items():
            assert stage_b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert before["layers"][0] != before["layers"][-1]  # the layers move χ


def test_analyse_refuses_other_models(profile):
    from eqbench.models import PaiNN

    with pytest.raises(ConfigError, match="So3krates"):
        analyse(PaiNN(n_features=8, n_interactions=1), profile.subset(np.arange(2)))


CONFIG = {
    "seed_everything": 3,
    "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False},
    "model": {
        "representation": {"class_path": "eqbench.models.So3krates",
                           "init_args": {"n_features": 12, "n_interactions": 2, "n_rbf": 8, "cutoff": 2.5, "lmax": 1,
                                         "n_heads": 2, "nonlocal_corrections": True}},
        "targets": [{"name": "energy"}],
        "lr": 1e-3,
    },
    "data": {"path": "cumulene", "split": "cumulene", "subset": {"n_carbon": [5]}, "train_size": 16,
             "val_size": 8, "test_size": 8, "batch_size": 8},
    "run": {"wandb": "disabled"},
}


def test_evaluate_sphc_verb_on_a_trained_run(tmp_path, capsys):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    run_dir = tmp_path / "run"
    assert main(["fit", "--config", str(config_path), "--run.dir", str(run_dir)]) == 0
    assert main(["evaluate", "sphc", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "sphc.json").read_text())
    assert (tmp_path / "out" / "sphc.png").is_file()
    assert result["seed"] == 3 and result["trained"]["nonlocal_corrections"] is True
    # the run's chain length only (C5H4 points of the profile), two layer inputs each
    c5 = int((read_cache(BUNDLED / "cumulene_profile.h5").properties["n_carbon"].values == 5).sum())
    assert result["trained"]["n_structures"] == c5 and len(result["trained"]["layers"]) == 2
    # layer 0's χ is Eq. 11, which has no parameters: the same before and after training; later ones differ
    assert result["trained"]["layers"][0] == result["initialised"]["layers"][0]
    assert result["trained"]["layers"][1] != result["initialised"]["layers"][1]
    assert "Eq. 14 weight per layer" in capsys.readouterr().out
    assert main(["evaluate", "sphc", str(run_dir), "--subset", "n_carbon=7", "--out", str(tmp_path / "c7")]) == 0
    assert json.loads((tmp_path / "c7" / "sphc.json").read_text())["trained"]["n_structures"] > 0
    assert main(["evaluate", "sphc", str(run_dir), "--subset", "n_carbon"]) != 0
    # several runs: one subdirectory each and a summary table with the runs' profile R²
    (run_dir / "profile.json").write_text(json.dumps({"r2": 0.25}))
    assert main(["evaluate", "sphc", str(run_dir), str(run_dir), "--out", str(tmp_path / "many")]) == 0
    table = (tmp_path / "many" / "sphc.md").read_text()
    assert (tmp_path / "many" / "run" / "sphc.json").is_file() and "| run | 0.250 |" in table
