"""Smooth cutoff functions: values → 0 (with derivatives) at the cutoff radius."""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineCutoff(nn.Module):
    """f(d) = ½ (cos(π d / c) + 1) for d < c, else 0 (SchNet, PaiNN)."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        f = 0.5 * (torch.cos(dist * math.pi / self.cutoff) + 1.0)
        return f * (dist < self.cutoff).to(dist.dtype)


class PolynomialEnvelope(nn.Module):
    """DimeNet Eq. (8): u(d) = 1 − (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) − p(p+1)/2 d^(p+2), d in units of c.

    DimeNet uses p = 6 (``exponent`` = p). Twice continuously differentiable at the cutoff.
    """

    def __init__(self, cutoff: float, exponent: int = 6):
        super().__init__()
        self.cutoff, self.p = cutoff, exponent

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        p = self.p
        d = dist / self.cutoff
        u = 1 - (p + 1) * (p + 2) / 2 * d**p + p * (p + 2) * d ** (p + 1) - p * (p + 1) / 2 * d ** (p + 2)
        return u * (d < 1).to(d.dtype)
