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


class _SiLUFunction(torch.autograd.Function):
    """silu(x) = x σ(x) whose backward is :class:`_SiLUBackward` (below)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _SiLUBackward.apply(grad, x)


class _SiLUBackward(torch.autograd.Function):
    """g · silu'(x), silu'(x) = σ(1 + x(1 − σ)), with a short derivative of its own (double backward).

    d/dg = gg · silu'(x) (torch's fused ``silu_backward``); d/dx = gg · g · silu''(x) with
    silu''(x) = σ(1 − σ)(2 + x(1 − 2σ)): 6 element-wise kernels where autograd's formula for torch's
    ``silu_backward`` takes about a dozen.
    """

    @staticmethod
    def forward(ctx, grad, x):
        ctx.save_for_backward(grad, x)
        return torch.ops.aten.silu_backward(grad, x)

    @staticmethod
    def backward(ctx, gg):
        grad, x = ctx.saved_tensors
        d_grad = d_x = None
        if ctx.needs_input_grad[0]:
            d_grad = torch.ops.aten.silu_backward(gg, x)
        if ctx.needs_input_grad[1]:
            s = torch.sigmoid(x)
            a = torch.ops.aten.sigmoid_backward(gg * grad, s)
            b = torch.addcmul(x, x, s, value=-2.0)
            if torch.is_grad_enabled():  # differentiated once more (create_graph): no in-place ops
                d_x = a * (b + 2.0)
            else:  # in place on fresh tensors: fewer allocations
                d_x = a.mul_(b.add_(2.0))
        return d_grad, d_x


class SiLU(nn.Module):
    """silu(x) = x σ(x) (swish), as ``torch.nn.SiLU`` but with fewer element-wise kernels in its second
    derivative (force training differentiates the backward once more)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SiLUFunction.apply(x)


# SiLU is eqbench's own (equal to torch.nn.SiLU, with a cheaper second derivative for force training).
ACTIVATIONS = {"ssp": ShiftedSoftplus, "shifted_softplus": ShiftedSoftplus, "silu": SiLU, "swish": SiLU,
               "tanh": nn.Tanh, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        from eqbench.errors import ConfigError

        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
