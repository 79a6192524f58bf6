"""Gated equivariant blocks (PaiNN Fig. 3): atomwise maps of (scalars, vectors) to (scalars, vectors).

Vectors may only be combined linearly and scaled (PaiNN §3.2), so every nonlinearity acts on
scalars: the norm of one linear combination of the input vectors joins the input scalars in
an MLP, whose output gives the new scalars and a gate that scales a second linear combination
of the input vectors. Stacks of these blocks are PaiNN's output networks for tensorial
properties (§4.2, Eq. 11).
"""

from __future__ import annotations

import torch
from torch import nn

from eqbench.nn.activations import activation as make_activation
from eqbench.nn.mlp import build_mlp

# Keeps ‖W v‖ differentiable where W v = 0.
NORM_EPS = 1e-8


class GatedEquivariantBlock(nn.Module):
    """(s [N, n_in], v [N, 3, n_in]) → (s' [N, n_out], v' [N, 3, n_out]).

    s', g = MLP([s, ‖W₁ v‖]) (2 n_in → n_hidden → 2 n_out), v' = g ∘ W₂ v. ``scalar_activation``
    applies the activation to s' as well (for every block but the last of a stack).
    """

    def __init__(self, n_in: int, n_out: int, n_hidden: int | None = None, activation: str = "silu",
                 scalar_activation: bool = False):
        super().__init__()
        self.n_out = n_out
        self.norm_mix = nn.Linear(n_in, n_in, bias=False)  # W₁: bias would break equivariance
        self.gated_mix = nn.Linear(n_in, n_out, bias=False)  # W₂
        self.mlp = build_mlp(2 * n_in, n_hidden or n_in, 2 * n_out, activation)
        self.scalar_activation = make_activation(activation) if scalar_activation else nn.Identity()

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = torch.sqrt(self.norm_mix(v).pow(2).sum(dim=1) + NORM_EPS)
        s_out, gate = torch.split(self.mlp(torch.cat([s, norm], dim=-1)), self.n_out, dim=-1)
        return self.scalar_activation(s_out), gate[:, None, :] * self.gated_mix(v)


def gated_equivariant_mlp(n_in: int, n_out: int = 1, activation: str = "silu") -> nn.ModuleList:
    """Two gated equivariant blocks n_in → n_in/2 → n_out, the tensorial twin of the 2-layer atomwise head."""
    n_mid = max(n_in // 2, 1)
    return nn.ModuleList([
        GatedEquivariantBlock(n_in, n_mid, n_hidden=n_in, activation=activation, scalar_activation=True),
        GatedEquivariantBlock(n_mid, n_out, n_hidden=n_mid, activation=activation),
    ])
