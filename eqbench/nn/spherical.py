"""Spherical Bessel functions, their roots, Legendre polynomials and DimeNet's 2D Fourier–Bessel basis.

- :func:`spherical_bessel`        j_l(x) for l = 0…L−1 by the upward recurrence
                                  j_{l+1}(x) = (2l+1)/x · j_l(x) − j_{l−1}(x), j_0 = sin x / x.
- :func:`spherical_bessel_rows`   j_l(x) of order l on row l of x [..., L, N], accurate for all x ≥ 0: the
                                  recurrence for x ≥ l + 1 and the power series
                                  x^l/(2l+1)!! Σ_k (−x²/2)^k / (k! (2l+3)(2l+5)⋯(2l+2k+1)) below, where the
                                  recurrence loses every digit to cancellation.
- :func:`spherical_bessel_roots`  z_ln, the n-th positive root of j_l, computed numerically: the roots of
                                  j_l interlace those of j_{l−1} (z_0n = nπ), so each lies in a bracket
                                  found from the previous order and is refined by bisection in float64.
- :func:`legendre_y0`             Y_l^0(α) = sqrt((2l+1)/4π) P_l(cos α) from Bonnet's recurrence.
- :class:`SphericalBesselBasis`   the radial part of DimeNet Eq. (6):
                                  sqrt(2 / (c³ j_{l+1}²(z_ln))) · j_l(z_ln d / c), shape [..., L, N].
                                  Multiplied by Y_l^0(α) it is ã_SBF,ln(d, α), orthonormal on the ball of
                                  radius c (∫ ã_ln ã_l'n' d³x = δ_ll' δ_nn').
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def spherical_bessel(x: torch.Tensor, n_orders: int) -> list[torch.Tensor]:
    """[j_0(x), …, j_{n_orders−1}(x)] (works for torch tensors and numpy arrays alike)."""
    sin, cos = (torch.sin, torch.cos) if isinstance(x, torch.Tensor) else (np.sin, np.cos)
    out = [sin(x) / x]
    if n_orders > 1:
        out.append(sin(x) / x**2 - cos(x) / x)
    for l in range(1, n_orders - 1):
        out.append((2 * l + 1) / x * out[l] - out[l - 1])
    return out


def _j(l: int, x: np.ndarray) -> np.ndarray:
    return spherical_bessel(np.asarray(x, dtype=np.float64), l + 1)[l]


def spherical_bessel_roots(n_orders: int, n_roots: int, iterations: int = 200) -> np.ndarray:
    """[n_orders, n_roots] float64: z_ln, the first n_roots positive roots of j_l for l < n_orders."""
    # Order l needs n_roots + (n_orders − 1 − l) roots so that order l + 1 has enough brackets.
    n_total = n_roots + n_orders - 1
    roots = [np.arange(1, n_total + 1) * math.pi]  # j_0 = sin x / x
    for l in range(1, n_orders):
        prev = roots[-1]
        lo, hi = prev[:-1].copy(), prev[1:].copy()  # one root of j_l between consecutive roots of j_{l-1}
        f_lo = _j(l, lo)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            f_mid = _j(l, mid)
            left = np.sign(f_mid) == np.sign(f_lo)
            lo, f_lo = np.where(left, mid, lo), np.where(left, f_mid, f_lo)
            hi = np.where(left, hi, mid)
        roots.append(0.5 * (lo + hi))
    return np.stack([r[:n_roots] for r in roots])


def legendre_y0(cos_angle: torch.Tensor, n_orders: int) -> torch.Tensor:
    """[..., n_orders]: Y_l^0 = sqrt((2l+1)/4π) P_l(cos α), l = 0…n_orders−1 (real, m = 0)."""
    p = [torch.ones_like(cos_angle)]
    if n_orders > 1:
        p.append(cos_angle)
    for l in range(1, n_orders - 1):
        p.append(((2 * l + 1) * cos_angle * p[l] - l * p[l - 1]) / (l + 1))
    norm = torch.tensor([math.sqrt((2 * l + 1) / (4 * math.pi)) for l in range(n_orders)],
                        dtype=cos_angle.dtype, device=cos_angle.device)
    return torch.stack(p, dim=-1) * norm


class SphericalBesselBasis(nn.Module):
    """Radial part of the 2D spherical Fourier–Bessel basis, DimeNet Eq. (6).

    forward(d) → [..., n_spherical, n_radial] with entries sqrt(2/(c³ j_{l+1}²(z_ln))) j_l(z_ln d/c),
    l = 0…n_spherical−1 (N_SHBF), n = 1…n_radial (N_SRBF). The roots z_ln are buffers (computed once
    here, numerically).
    """

    def __init__(self, n_spherical: int = 7, n_radial: int = 6, cutoff: float = 5.0):
        super().__init__()
        roots = spherical_bessel_roots(n_spherical, n_radial)
        j_next = np.stack([_j(l + 1, roots[l]) for l in range(n_spherical)])
        norm = np.sqrt(2.0 / (cutoff**3 * j_next**2))
        # float64 buffers (cast in forward), so a float64 model sees the roots to full precision.
        self.register_buffer("roots", torch.as_tensor(roots, dtype=torch.float64))
        self.register_buffer("norm", torch.as_tensor(norm, dtype=torch.float64))
        self.n_spherical, self.n_radial, self.cutoff = n_spherical, n_radial, cutoff

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        x = dist[..., None, None] / self.cutoff * self.roots.to(dist.dtype)  # [..., L, N]
        return spherical_bessel_rows(x) * self.norm.to(dist.dtype)


def spherical_bessel_rows(x: torch.Tensor, n_terms: int = 16) -> torch.Tensor:
    """j_l(x[..., l, :]) for every row l of x [..., L, N], x ≥ 0 (see the module docstring). Both branches are
    evaluated on safe inputs only, so the gradient has no NaN from the branch not taken."""
    n_orders = x.shape[-2]
    threshold = torch.arange(1, n_orders + 1, dtype=x.dtype, device=x.device)[:, None]  # l + 1, [L, 1]
    small = x < threshold
    # recurrence j_{l+1} = (2l+1)/x j_l − j_{l−1} on safe inputs; row l is final after order l, so each step
    # carries on with the rows above it only
    x_rec = torch.where(small, threshold.expand_as(x), x)
    inv_x = 1.0 / x_rec
    j_prev = torch.sin(x_rec) * inv_x  # j_0 on rows 0…L−1
    rows = [j_prev[..., :1, :]]
    if n_orders > 1:
        j = (j_prev - torch.cos(x_rec)) * inv_x  # j_1
        rows.append(j[..., 1:2, :])
        for l in range(1, n_orders - 1):  # order l + 1, needed on rows l + 1… only
            cut = 1 if l > 1 else 2
            j_prev, j, inv_x = j_prev[..., cut:, :], j[..., cut:, :], inv_x[..., cut:, :]
            j, j_prev = (2 * l + 1) * inv_x * j - j_prev, j
            rows.append(j[..., :1, :])
    recurrence = torch.cat(rows, dim=-2)
    # power series x^l/(2l+1)!! Σ_k a_lk y^k, y = −x²/2, a_lk = Π_{m≤k} 1/(m (2l+2m+1)), by Horner's rule, on
    # the entries below the threshold only
    where = torch.nonzero(small.reshape(-1)).squeeze(-1)
    order = torch.div(where, x.shape[-1], rounding_mode="floor") % n_orders
    x_ser = x.reshape(-1)[where]
    y = -0.5 * x_ser * x_ser
    coefficients = np.ones((n_terms, n_orders))
    for k in range(1, n_terms):
        coefficients[k] = coefficients[k - 1] / (k * (2 * np.arange(n_orders) + 2 * k + 1))
    double_factorial = [math.prod(range(1, 2 * l + 2, 2)) for l in range(n_orders)]
    coefficients = torch.as_tensor(coefficients / double_factorial, dtype=x.dtype, device=x.device)[:, order]
    total = coefficients[-1]
    for k in range(n_terms - 2, -1, -1):
        total = torch.addcmul(coefficients[k], y, total)
    power = x_ser ** order.clamp_min(1).to(x.dtype)  # x^l; l = 0 below, without 0 · 0⁻¹ in the gradient at x = 0
    series = torch.where(order == 0, torch.ones_like(x_ser), power) * total
    return recurrence.reshape(-1).index_put((where,), series).view(x.shape)
