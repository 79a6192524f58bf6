"""The shared model checks can fail: tolerances follow the dtype, and a small broken symmetry is caught."""

import pytest
import torch

from tests.model_checks import assert_symmetries, random_molecules, symmetry_tolerance


class _Toy(torch.nn.Module):
    """Energy = Σ_i |r_i − r̄|² per molecule (invariant), plus ``leak`` × Σ x_i (not invariant)."""

    def __init__(self, leak: float = 0.0):
        super().__init__()
        self.leak = leak

    def forward(self, batch):
        n = batch.n_molecules
        centre = torch.zeros(n, 3, dtype=batch.pos.dtype).index_add_(0, batch.batch, batch.pos)
        centre = centre / batch.n_atoms[:, None].to(batch.pos.dtype)
        per_atom = ((batch.pos - centre[batch.batch]) ** 2).sum(-1) + self.leak * batch.pos[:, 0]
        return {"energy": torch.zeros(n, dtype=batch.pos.dtype).index_add_(0, batch.batch, per_atom)}


def test_tolerance_follows_the_dtype():
    assert 1e-5 < symmetry_tolerance(torch.float32) < 1e-4
    assert symmetry_tolerance(torch.float64) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_invariant_model_passes(dtype):
    assert_symmetries(_Toy(), random_molecules(dtype=dtype))


@pytest.mark.parametrize("dtype, leak", [(torch.float32, 1e-3), (torch.float64, 1e-9)])
def test_small_broken_invariance_fails(dtype, leak):
    with pytest.raises(AssertionError, match="not invariant"):
        assert_symmetries(_Toy(leak), random_molecules(dtype=dtype))
