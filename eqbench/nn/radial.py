"""Radial basis expansions of interatomic distances (one module for every model).

- :class:`GaussianRBF`  SchNet: exp(-γ (d - μ_k)²), centres evenly spaced on [start, cutoff].
- :class:`BesselRBF`    DimeNet Eq. (7): sqrt(2/c) · sin(nπ d/c) / d, n = 1…n_rbf; frequencies
                        nπ optionally trainable (DimeNet initialises them at nπ and trains them).
- :class:`SincRBF`      PaiNN Eq. (8) filter basis: sin(nπ d/c) / d, n = 1…n_rbf (no prefactor).
- :class:`CosineSquaredRBF`  Miller et al. (e3nn L0/L1Net) Eq. (2): cos²(π/2 (d − μ_k)/Δ) for |d − μ_k| ≤ Δ,
                        centres μ_k evenly spaced on [0, r_max] with spacing Δ.
- :class:`ExpNormalRBF` PhysNet basis exp(-β (e^(-d) - μ_k)²), μ_k evenly spaced on [e^(-c), 1],
                        β = (2 (1 - e^(-c)) / n_rbf)^(-2) (So3krates' reference implementation, "phys").
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianRBF(nn.Module):
    def __init__(self, n_rbf: int = 50, cutoff: float = 5.0, start: float = 0.0, trainable: bool = False):
        super().__init__()
        centers = torch.linspace(start, cutoff, n_rbf)
        width = float(centers[1] - centers[0]) if n_rbf > 1 else 1.0
        # SchNet: γ = 1 / (2 Δμ²) where Δμ is the spacing of the centres.
        gamma = torch.full((n_rbf,), 0.5 / width**2)
        if trainable:
            self.centers, self.gamma = nn.Parameter(centers), nn.Parameter(gamma)
        else:
            self.register_buffer("centers", centers)
            self.register_buffer("gamma", gamma)
        self.n_rbf = n_rbf

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (dist[..., None] - self.centers) ** 2)


class _SineBasis(nn.Module):
    prefactor: float

    def __init__(self, n_rbf: int, cutoff: float, trainable: bool):
        super().__init__()
        freqs = torch.arange(1, n_rbf + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff
        if trainable:
            self.freqs = nn.Parameter(freqs)
        else:
            self.register_buffer("freqs", freqs)
        self.n_rbf, self.cutoff = n_rbf, cutoff

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        d = dist[..., None]
        # sin(f d)/d is finite as d → 0 (limit f); the clamp only guards the division.
        return self.prefactor * torch.sin(self.freqs * d) / d.clamp_min(1e-9)


class BesselRBF(_SineBasis):
    """DimeNet Eq. (7), ẽ_RBF,n(d) = sqrt(2/c) sin(nπ d / c) / d."""

    def __init__(self, n_rbf: int = 6, cutoff: float = 5.0, trainable: bool = True):
        super().__init__(n_rbf, cutoff, trainable)
        self.prefactor = math.sqrt(2.0 / cutoff)


class SincRBF(_SineBasis):
    """PaiNN (§4, Eq. 8 filters): sin(nπ ‖r‖ / r_cut) / ‖r‖, n = 1…20."""

    def __init__(self, n_rbf: int = 20, cutoff: float = 5.0, trainable: bool = False):
        super().__init__(n_rbf, cutoff, trainable)
        self.prefactor = 1.0


class CosineSquaredRBF(nn.Module):
    """Miller et al. Eq. (2): φ_k(d) = cos²(π/2 · (d − μ_k)/(μ_{k+1} − μ_k)) where |d − μ_k| ≤ Δ, else 0.

    ``n_rbf`` centres μ_k evenly spaced on [0, ``cutoff``] (the paper: 84 on 0–11.1 Å), spacing
    Δ = cutoff / (n_rbf − 1). Neighbouring functions overlap by half, so Σ_k φ_k(d) = 1 for
    0 ≤ d ≤ cutoff; the last function reaches zero (with zero slope) at ``support`` = cutoff + Δ,
    the radius beyond which every function vanishes.
    """

    def __init__(self, n_rbf: int = 84, cutoff: float = 11.1):
        super().__init__()
        if n_rbf < 2:
            from eqbench.errors import ConfigError

            raise ConfigError(f"cos² radial basis: n_rbf={n_rbf}; it needs at least 2 centres")
        self.n_rbf, self.cutoff = n_rbf, cutoff
        self.spacing = cutoff / (n_rbf - 1)
        self.support = cutoff + self.spacing

    @property
    def centers(self) -> torch.Tensor:
        return torch.arange(self.n_rbf, dtype=torch.float64) * self.spacing

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        # (d − μ_k)/Δ = d/Δ − k, in the distances' dtype (no float32 table when the model runs in float64)
        k = torch.arange(self.n_rbf, dtype=dist.dtype, device=dist.device)
        x = dist[..., None] / self.spacing - k
        return torch.cos(0.5 * math.pi * x).pow(2) * (x.abs() <= 1).to(dist.dtype)


class ExpNormalRBF(nn.Module):
    """PhysNet's basis exp(-β (exp(-d) - μ_k)²) without a cutoff factor (the models apply their own cutoff)."""

    def __init__(self, n_rbf: int = 32, cutoff: float = 5.0):
        super().__init__()
        self.beta = (2.0 / n_rbf * (1.0 - math.exp(-cutoff))) ** -2
        self.n_rbf, self.cutoff = n_rbf, cutoff

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        # Centres made in the input's dtype (a float32 buffer cast to float64 would carry float32 rounding).
        centers = torch.linspace(math.exp(-self.cutoff), 1.0, self.n_rbf, dtype=dist.dtype, device=dist.device)
        return torch.exp(-self.beta * (torch.exp(-dist)[..., None] - centers) ** 2)


RADIAL_BASES = {"gaussian": GaussianRBF, "bessel": BesselRBF, "sinc": SincRBF, "cos2": CosineSquaredRBF,
                "expnormal": ExpNormalRBF}


def radial_basis(name: str, n_rbf: int, cutoff: float, **kwargs) -> nn.Module:
    try:
        cls = RADIAL_BASES[name]
    except KeyError:
        from eqbench.errors import ConfigError

        raise ConfigError(f"unknown radial basis {name!r}; choose one of {sorted(RADIAL_BASES)}") from None
    return cls(n_rbf=n_rbf, cutoff=cutoff, **kwargs)
