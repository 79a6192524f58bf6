"""Multilayer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from eqbench.nn.activations import activation as make_activation


def build_mlp(n_in: int, n_hidden: int | Sequence[int], n_out: int, activation: str = "silu",
              n_layers: int | None = None, bias_out: bool = True) -> nn.Sequential:
    """Dense layers n_in → hidden… → n_out with ``activation`` between them (none after the last).

    ``n_hidden`` is a list of widths, or one width repeated ``n_layers - 1`` times.
    """
    if isinstance(n_hidden, int):
        n_hidden = [n_hidden] * ((n_layers or 2) - 1)
    widths = [n_in, *n_hidden, n_out]
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = k == len(widths) - 2
        layers.append(nn.Linear(a, b, bias=bias_out or not last))
        if not last:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)
