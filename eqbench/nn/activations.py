"""Activation functions by name (one vocabulary: ``activation="ssp"|"silu"|...``)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ShiftedSoftplus(nn.Module):
    """ssp(x) = ln(0.5 eˣ + 0.5) = softplus(x) − ln 2 (SchNet); ssp(0) = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


ACTIVATIONS = {"ssp": ShiftedSoftplus, "shifted_softplus": ShiftedSoftplus, "silu": nn.SiLU, "swish": nn.SiLU,
               "tanh": nn.Tanh, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        from eqbench.errors import ConfigError

        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
