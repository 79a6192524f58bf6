"""Output heads: map atom features to predictions.

Each head returns a dict of named outputs. Standardisation lives in the heads (buffers
``scale``, ``shift`` and per-element ``atomref``, set from the training split by the
task), so a saved model predicts in the dataset's units.
"""

from __future__ import annotations

import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.data.dataset import MAX_Z
from eqbench.errors import ConfigError
from eqbench.models.base import AtomFeatures
from eqbench.nn import build_mlp, segment_mean, segment_sum


class Atomwise(nn.Module):
    """y = agg_i (scale · MLP(s_i) + shift + atomref[z_i]); ``aggregation`` sum (extensive) or mean (intensive).

    The MLP has two layers, F → F/2 → 1, as in SchNet's and PaiNN's (Fig. 2) output blocks.
    """

    needs_pos_grad = False

    def __init__(self, n_features: int, output: str = "y", aggregation: str = "sum", n_hidden: int | None = None,
                 activation: str = "silu"):
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ConfigError(f"head {output!r}: aggregation must be 'sum' or 'mean', not {aggregation!r}")
        self.output, self.aggregation = output, aggregation
        self.mlp = build_mlp(n_features, n_hidden or n_features // 2, 1, activation)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("atomref", torch.zeros(MAX_Z + 1))

    def set_standardization(self, scale: float, shift: float, atomref: torch.Tensor | None = None) -> None:
        self.scale.fill_(scale)
        self.shift.fill_(shift)
        if atomref is not None:
            self.atomref.copy_(torch.as_tensor(atomref, dtype=self.atomref.dtype)[: MAX_Z + 1])

    def atomic(self, batch: Batch, features: AtomFeatures) -> torch.Tensor:
        y = self.mlp(features.scalar).squeeze(-1) * self.scale + self.shift
        return y + self.atomref[batch.z]

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        reduce = segment_sum if self.aggregation == "sum" else segment_mean
        return {self.output: reduce(self.atomic(batch, features), batch.batch, batch.n_molecules)}


class Energy(Atomwise):
    """Energy as a sum of atomic contributions; forces F = −∂E/∂pos by autograd.

    The graph is kept (``create_graph``) while training so that a force loss can be
    differentiated with respect to the weights.
    """

    def __init__(self, n_features: int, forces: bool = True, n_hidden: int | None = None,
                 activation: str = "silu", output: str = "energy"):
        super().__init__(n_features, output=output, aggregation="sum", n_hidden=n_hidden, activation=activation)
        self.forces = forces

    @property
    def needs_pos_grad(self) -> bool:  # type: ignore[override]
        return self.forces

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        out = super().forward(batch, features)
        if self.forces:
            (grad,) = torch.autograd.grad(out[self.output].sum(), features.pos, create_graph=self.training)
            out["forces"] = -grad
        return out


# Heads selected by name in a Target's ``head`` (tensorial heads register here):
# each is called as HEADS[name](representation, output=..., **head_kwargs).
HEADS: dict[str, type[nn.Module]] = {}
