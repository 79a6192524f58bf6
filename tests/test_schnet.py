"""SchNet: symmetry, finite-difference forces, cutoff smoothness, parameter count."""

import pytest
import torch

from eqbench.heads import Energy
from eqbench.models import AtomisticModel, count_parameters, create
from tests.model_checks import (
    assert_finite_difference_forces,
    assert_smooth_at_cutoff,
    assert_symmetries,
    random_molecules,
)


def schnet_model(**kwargs):
    torch.manual_seed(0)
    rep = create("schnet", **kwargs)
    return AtomisticModel(rep, [Energy(rep.n_features, forces=True, activation="ssp")])


def test_invariance_float32():
    model = schnet_model()
    assert_symmetries(model, random_molecules(dtype=torch.float32))


def test_finite_difference_forces_float64():
    assert_finite_difference_forces(schnet_model(n_features=32, n_interactions=3), random_molecules())


@pytest.mark.parametrize("cutoff", [2.5, 5.0])
def test_smooth_at_cutoff(cutoff):
    assert_smooth_at_cutoff(schnet_model(cutoff=cutoff, n_features=32), cutoff)


def test_parameter_count_by_hand():
    # Counted from the architecture, layer by layer (F features, K Gaussians, T interactions):
    # embedding 101·F; per interaction: filter (K·F + F) + (F·F + F), in2f F·F, f2out F·F + F, dense F·F + F;
    # output head F → F/2 → 1. For F=128, K=50, T=6 this is PyG's SchNet count (455,809) plus one more
    # embedding row, as eqbench indexes embeddings by Z up to 100.
    F, K, T = 128, 50, 6
    expected = 101 * F + T * ((K * F + F) + (F * F + F) + F * F + (F * F + F) + (F * F + F)) \
        + (F * (F // 2) + F // 2) + (F // 2 + 1)
    assert count_parameters(schnet_model()) == expected == 455_809 + F


def test_unknown_model_name_raises():
    from eqbench.errors import ModelError

    with pytest.raises(ModelError, match="unknown model 'schnett'.*schnet"):
        create("schnett")
