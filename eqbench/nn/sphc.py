"""Helpers for concatenated spherical-harmonic vectors χ = [χ^(l)]_{l ∈ L} (So3krates' SPHCs).

A vector over the degrees L = (l₁, l₂, …) has m_tot = Σ (2l+1) entries, degree by degree, each
degree in e3nn's real basis (``e3nn.o3.spherical_harmonics``), so rotating the input by R maps
χ^(l) to D^l(R) χ^(l) with e3nn's Wigner D matrices.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


def safe_norm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """‖x‖₂ along ``dim``, exactly 0 (with gradient 0, not NaN) where x = 0."""
    return safe_sqrt(x.pow(2).sum(dim))


def safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """√sq for sq ≥ 0 whose first and second derivatives stay finite at sq = 0 (there they are 0)."""
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), torch.zeros_like(sq))


class SphericalHarmonics(nn.Module):
    """Y(r̂) = [Y^(l)(r̂)]_{l ∈ L} of the direction of ``vec`` (orthonormal on the sphere: 'integral')."""

    def __init__(self, degrees: list[int]):
        super().__init__()
        self.degrees = list(degrees)

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        return o3.spherical_harmonics(self.degrees, vec, normalize=True, normalization="integral")


class DegreeNorms(nn.Module):
    """Per-degree norms [‖χ^(l)‖₂]_{l ∈ L}: [..., m_tot] → [..., |L|]."""

    def __init__(self, degrees: list[int]):
        super().__init__()
        m_tot = sum(2 * l + 1 for l in degrees)
        segment = torch.zeros(m_tot, len(degrees))
        offset = 0
        for k, l in enumerate(degrees):
            segment[offset:offset + 2 * l + 1, k] = 1.0
            offset += 2 * l + 1
        self.register_buffer("segment", segment)
        self.register_buffer("repeats", torch.tensor([2 * l + 1 for l in degrees]), persistent=False)

    def forward(self, chi: torch.Tensor) -> torch.Tensor:
        return safe_sqrt(chi.pow(2) @ self.segment)

    def expand(self, per_degree: torch.Tensor) -> torch.Tensor:
        """[..., |L|] → [..., m_tot], each degree's value repeated over its 2l+1 orders."""
        return per_degree @ self.segment.T


def coupling_paths(degrees: list[int]) -> list[tuple[int, int, int]]:
    """(l₁, l₂, l) with l₁ < l₂ in L, l in L and |l₁ − l₂| ≤ l ≤ l₁ + l₂ (So3krates Eq. 19)."""
    degrees = sorted(degrees)
    return [(l1, l2, l) for a, l1 in enumerate(degrees) for l2 in degrees[a + 1:] for l in degrees
            if abs(l1 - l2) <= l <= l1 + l2]


class CrossDegreeCoupling(nn.Module):
    """χ̃^(l) = Σ_{l₁ < l₂} k_{l₁,l₂,l} (χ^(l₁) ⊗_l χ^(l₂))  (So3krates Eq. 19), one learnable k per path.

    The contraction uses e3nn's real-basis Wigner 3j symbols (Frobenius norm 1), which differ from the
    paper's Clebsch-Gordan coefficients by a basis change and a factor √(2l+1); both are absorbed by k.
    The paths with l₁ + l₂ + l odd give pseudotensors: the model is SO(3)- (not O(3)-) equivariant.
    """

    def __init__(self, degrees: list[int]):
        super().__init__()
        self.degrees = list(degrees)
        offsets, o = {}, 0
        for l in self.degrees:
            offsets[l] = o
            o += 2 * l + 1
        self.m_tot = o
        self.paths = coupling_paths(self.degrees)
        with torch.device("cpu"):  # real numbers even when the module is built on the meta device
            blocks = torch.zeros(len(self.paths), o, o, o, dtype=torch.float64)
            for p, (l1, l2, l) in enumerate(self.paths):
                a, b, c = offsets[l1], offsets[l2], offsets[l]
                w3j = o3.wigner_3j(l1, l2, l, dtype=torch.float64)
                blocks[p, a:a + 2 * l1 + 1, b:b + 2 * l2 + 1, c:c + 2 * l + 1] = w3j
        # Kept in float64 outside the module's buffers, so that .float() then .double() cannot round it.
        self._blocks64 = blocks.reshape(len(self.paths), o * o, o)
        self._blocks: torch.Tensor | None = None
        # Paper silent on the initial k; eqbench starts every path at 1.
        self.k = nn.Parameter(torch.ones(len(self.paths)))

    def forward(self, chi: torch.Tensor) -> torch.Tensor:
        if not self.paths:
            return torch.zeros_like(chi)
        blocks = self._blocks
        if blocks is None or blocks.dtype != chi.dtype or blocks.device != chi.device:
            blocks = self._blocks = self._blocks64.to(device=chi.device, dtype=chi.dtype)
        coupling = torch.einsum("p,pqc->qc", self.k, blocks)  # [m_tot², m_tot]
        outer = (chi[:, :, None] * chi[:, None, :]).reshape(chi.shape[0], -1)
        return outer @ coupling
