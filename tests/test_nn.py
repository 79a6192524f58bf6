"""nn blocks against their paper formulas, evaluated independently with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from eqbench.errors import ConfigError
from eqbench.nn import (
    BesselRBF,
    CosineCutoff,
    GaussianRBF,
    PolynomialEnvelope,
    ShiftedSoftplus,
    SincRBF,
    activation,
    build_mlp,
    radial_basis,
    segment_mean,
    segment_sum,
)
from eqbench.nn.activations import SiLU

D = np.linspace(0.05, 4.95, 50)  # distances inside a 5 Å cutoff


@pytest.fixture(autouse=True)
def float64_default():
    """Build modules in float64, so that buffers such as centres and frequencies are exact."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def evaluate(module: nn.Module, d: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.tensor(d, dtype=torch.float64)).numpy()


def test_buffers_follow_the_default_dtype():
    assert BesselRBF(6, 5.0).freqs.dtype == torch.float64
    assert GaussianRBF(6, 5.0).centers.dtype == torch.float64


# ---------------------------------------------------------------------- radial bases
@pytest.mark.parametrize("n_rbf,cutoff,start", [(50, 5.0, 0.0), (20, 4.0, 0.5), (7, 6.0, 1.0)])
def test_gaussian_rbf(n_rbf, cutoff, start):
    # SchNet: exp(-γ (d - μ_k)²), μ_k evenly spaced on [start, cutoff], γ = 1 / (2 Δμ²).
    mu = np.array([start + k * (cutoff - start) / (n_rbf - 1) for k in range(n_rbf)])
    gamma = 1.0 / (2.0 * ((cutoff - start) / (n_rbf - 1)) ** 2)
    expected = np.exp(-gamma * (D[:, None] - mu[None, :]) ** 2)
    got = evaluate(GaussianRBF(n_rbf, cutoff, start), D)
    assert got.shape == (len(D), n_rbf)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("n_rbf,cutoff", [(6, 5.0), (8, 3.0)])
def test_bessel_rbf_dimenet_eq7(n_rbf, cutoff):
    d = D * cutoff / 5.0
    n = np.arange(1, n_rbf + 1)
    expected = np.sqrt(2.0 / cutoff) * np.sin(n[None, :] * np.pi * d[:, None] / cutoff) / d[:, None]
    for trainable in (True, False):
        got = evaluate(BesselRBF(n_rbf, cutoff, trainable=trainable), d)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_rbf,cutoff", [(20, 5.0), (4, 2.5)])
def test_sinc_rbf_painn(n_rbf, cutoff):
    d = D * cutoff / 5.0
    n = np.arange(1, n_rbf + 1)
    expected = np.sin(n[None, :] * np.pi * d[:, None] / cutoff) / d[:, None]
    got = evaluate(SincRBF(n_rbf, cutoff), d)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_bases_keep_leading_shape():
    d = torch.rand(4, 3, dtype=torch.float64) * 4 + 0.1
    for basis in (GaussianRBF(9, 5.0), BesselRBF(9, 5.0), SincRBF(9, 5.0)):
        assert basis.double()(d).shape == (4, 3, 9)


def test_trainable_frequencies_are_parameters():
    bessel = BesselRBF(6, 5.0, trainable=True)
    names = dict(bessel.named_parameters())
    assert "freqs" in names and isinstance(names["freqs"], nn.Parameter)
    np.testing.assert_allclose(names["freqs"].detach().numpy(), np.arange(1, 7) * np.pi / 5.0, rtol=1e-6)
    # gradients reach the frequencies
    bessel(torch.tensor([1.0, 2.5])).sum().backward()
    assert bessel.freqs.grad is not None and torch.all(bessel.freqs.grad != 0)
    # and an optimiser step changes them
    opt = torch.optim.SGD(bessel.parameters(), lr=0.1)
    before = bessel.freqs.detach().clone()
    opt.step()
    assert not torch.equal(before, bessel.freqs.detach())

    fixed = BesselRBF(6, 5.0, trainable=False)
    assert list(fixed.parameters()) == []
    assert "freqs" in dict(fixed.named_buffers())  # moves with .to() and is saved in checkpoints
    assert list(SincRBF(20, 5.0).parameters()) == []
    assert {n for n, _ in SincRBF(20, 5.0, trainable=True).named_parameters()} == {"freqs"}
    assert {n for n, _ in GaussianRBF(10, 5.0, trainable=True).named_parameters()} == {"centers", "gamma"}
    assert list(GaussianRBF(10, 5.0).parameters()) == []


def test_radial_basis_by_name():
    assert isinstance(radial_basis("bessel", 6, 5.0), BesselRBF)
    assert isinstance(radial_basis("gaussian", 6, 5.0), GaussianRBF)
    assert isinstance(radial_basis("sinc", 6, 5.0), SincRBF)
    with pytest.raises(ConfigError, match="nope"):
        radial_basis("nope", 6, 5.0)


# ---------------------------------------------------------------------- cutoffs
def value_and_derivatives(module: nn.Module, d: float) -> tuple[float, float, float]:
    x = torch.tensor([d], dtype=torch.float64, requires_grad=True)
    y = module(x)
    (dy,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2y,) = torch.autograd.grad(dy.sum(), x)
    return float(y.detach()), float(dy.detach()), float(d2y)


@pytest.mark.parametrize("cutoff", [3.0, 5.0])
def test_cosine_cutoff(cutoff):
    d = np.linspace(0.0, 1.5 * cutoff, 61)
    expected = np.where(d < cutoff, 0.5 * (np.cos(np.pi * d / cutoff) + 1.0), 0.0)
    np.testing.assert_allclose(evaluate(CosineCutoff(cutoff), d), expected, atol=1e-12)
    assert value_and_derivatives(CosineCutoff(cutoff), 0.0)[0] == pytest.approx(1.0)
    value, slope, _ = value_and_derivatives(CosineCutoff(cutoff), cutoff * (1 - 1e-7))
    assert abs(value) < 1e-12 and abs(slope) < 1e-6


@pytest.mark.parametrize("cutoff", [2.0, 5.0])
def test_polynomial_envelope_dimenet_eq8(cutoff):
    p = 6
    x = np.linspace(0.0, 1.3, 53)  # d / c
    poly = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    expected = np.where(x < 1, poly, 0.0)
    env = PolynomialEnvelope(cutoff, exponent=p)
    np.testing.assert_allclose(evaluate(env, x * cutoff), expected, atol=1e-12)
    # value 1 at 0 (flat there as well)
    value, slope, _ = value_and_derivatives(env, 0.0)
    assert value == pytest.approx(1.0, abs=1e-14) and abs(slope) < 1e-12
    # value, first and second derivative → 0 as d → c from below
    for eps in (1e-3, 1e-5):
        value, slope, curvature = value_and_derivatives(env, cutoff * (1 - eps))
        assert abs(value) < 1000 * eps**3
        assert abs(slope) < 1000 * eps**2 / cutoff
        assert abs(curvature) < 1000 * eps / cutoff**2
    # zero beyond the cutoff, with zero gradient
    assert value_and_derivatives(env, 1.2 * cutoff) == (0.0, 0.0, 0.0)


def test_polynomial_envelope_is_not_trivially_flat():
    # The derivative checks above must be able to fail: a wrong exponent is not smooth at c.
    env = PolynomialEnvelope(1.0, exponent=6)
    _, slope, _ = value_and_derivatives(env, 0.5)
    x = 0.5
    expected = -28 * 6 * x**5 + 48 * 7 * x**6 - 21 * 8 * x**7
    assert slope == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------- activations
def test_shifted_softplus():
    ssp = ShiftedSoftplus()
    assert float(ssp(torch.zeros(1, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-15)
    x = np.linspace(-20, 20, 81)
    np.testing.assert_allclose(evaluate(ssp, x), np.log(0.5 * np.exp(x) + 0.5), rtol=1e-10, atol=1e-12)
    assert isinstance(activation("ssp"), ShiftedSoftplus)
    assert isinstance(activation("silu"), SiLU)  # eqbench's, equal to nn.SiLU (test below)
    with pytest.raises(ConfigError, match="nope"):
        activation("nope")


# ---------------------------------------------------------------------- segment ops
@pytest.mark.parametrize("trailing", [(), (3,), (2, 4)])
def test_segment_sum_and_mean(trailing):
    g = torch.Generator().manual_seed(0)
    n_items, n_segments = 30, 7  # segments 5 and 6 stay empty
    index = torch.randint(0, 5, (n_items,), generator=g)
    src = torch.randn(n_items, *trailing, generator=g, dtype=torch.float64)
    total = segment_sum(src, index, n_segments)
    mean = segment_mean(src, index, n_segments)
    assert total.shape == mean.shape == (n_segments, *trailing)
    for s in range(n_segments):
        acc, count = torch.zeros(trailing, dtype=torch.float64), 0
        for e in range(n_items):
            if int(index[e]) == s:
                acc = acc + src[e]
                count += 1
        torch.testing.assert_close(total[s], acc)
        torch.testing.assert_close(mean[s], acc / count if count else torch.zeros(trailing, dtype=torch.float64))


def test_segment_sum_gradient():
    src = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 2, 2, 1, 0, 2])
    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    (segment_sum(src, index, 3) * weights).sum().backward()
    torch.testing.assert_close(src.grad, weights[index])


# ---------------------------------------------------------------------- MLPs
def linear_shapes(mlp: nn.Sequential) -> list[tuple[int, int, bool]]:
    return [(m.in_features, m.out_features, m.bias is not None) for m in mlp if isinstance(m, nn.Linear)]


def test_build_mlp_shapes():
    mlp = build_mlp(7, [16, 8], 3, activation="ssp")
    assert linear_shapes(mlp) == [(7, 16, True), (16, 8, True), (8, 3, True)]
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, ShiftedSoftplus, nn.Linear, ShiftedSoftplus, nn.Linear]  # none after the last
    assert mlp(torch.randn(5, 7)).shape == (5, 3)

    assert linear_shapes(build_mlp(4, 12, 2, n_layers=3)) == [(4, 12, True), (12, 12, True), (12, 2, True)]
    assert linear_shapes(build_mlp(4, 12, 2)) == [(4, 12, True), (12, 2, True)]
    assert linear_shapes(build_mlp(4, 12, 2, n_layers=1)) == [(4, 2, True)]
    assert linear_shapes(build_mlp(4, [6], 1, bias_out=False)) == [(4, 6, True), (6, 1, False)]
    n_params = sum(p.numel() for p in build_mlp(4, [6], 1).parameters())
    assert n_params == 4 * 6 + 6 + 6 * 1 + 1
    assert math.isfinite(float(build_mlp(3, 5, 1, activation="tanh")(torch.zeros(1, 3)).sum().detach()))


def test_silu_with_short_double_backward_matches_torch():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(40, 3, dtype=torch.float64, generator=gen) * 4).requires_grad_(True)
    assert torch.autograd.gradcheck(SiLU(), (x,))
    assert torch.autograd.gradgradcheck(SiLU(), (x,))
    w = torch.randn(40, 3, dtype=torch.float64, generator=gen)

    def derivatives(act):  # value, first derivative and the double backward of a force-like loss
        y = act(x)
        (g,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad((g * g * w).sum(), x)
        return y, g, gg

    for ours, ref in zip(derivatives(SiLU()), derivatives(nn.SiLU())):
        assert float(ref.abs().max()) > 0.1
        assert torch.allclose(ours, ref, atol=1e-14, rtol=1e-12)
    # every model that names "silu"/"swish" gets this one (PaiNN, DimeNet, So3krates, MLPs)
    assert isinstance(activation("silu"), SiLU) and isinstance(activation("swish"), SiLU)


def test_dense_matches_functional_linear_with_gradients():
    from eqbench.nn.linear import linear

    gen = torch.Generator().manual_seed(1)
    for bias in (True, False):
        layer = nn.Linear(5, 3, bias=bias).double()
        x = torch.randn(4, 2, 5, dtype=torch.float64, generator=gen, requires_grad=True)
        ours, ref = linear(x, layer), layer(x)
        assert ours.shape == ref.shape == (4, 2, 3) and torch.allclose(ours, ref, atol=1e-15)
        params = [x, *layer.parameters()]
        w = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
        for a, b in zip(torch.autograd.grad((ours * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
            assert torch.allclose(a, b, atol=1e-14)
