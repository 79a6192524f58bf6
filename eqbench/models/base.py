"""AtomisticModel = representation + heads.

A representation maps a Batch to :class:`AtomFeatures` (it builds its neighbour list from
positions inside the forward pass); heads map features to predictions. When a head
needs gradients with respect to positions (forces), the model enables them here, so
forces are exact derivatives of the predicted energy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from eqbench.batch import Batch


@dataclass
class AtomFeatures:
    scalar: torch.Tensor  # [N, F] invariant features
    vector: torch.Tensor | None = None  # [N, 3, F] Cartesian vector features (equivariant models)
    pos: torch.Tensor | None = None  # positions the features were computed from (carry grad for forces)


class Representation(nn.Module):
    """Base class: subclasses set ``n_features``, ``cutoff`` and ``has_vectors``."""

    n_features: int
    cutoff: float
    has_vectors: bool = False
    activation: str = "silu"

    def forward(self, batch: Batch) -> AtomFeatures:  # pragma: no cover - interface
        raise NotImplementedError


class AtomisticModel(nn.Module):
    def __init__(self, representation: Representation, heads: list[nn.Module] | nn.ModuleList):
        super().__init__()
        self.representation = representation
        self.heads = nn.ModuleList(heads)

    @property
    def needs_pos_grad(self) -> bool:
        return any(getattr(h, "needs_pos_grad", False) for h in self.heads)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.needs_pos_grad:
            # Validation runs under no_grad; forces still need the graph from pos to energy.
            with torch.enable_grad():
                batch = replace(batch, pos=batch.pos.detach().requires_grad_(True))
                return self._forward(batch)
        return self._forward(batch)

    def _forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        features = self.representation(batch)
        features.pos = batch.pos
        out: dict[str, torch.Tensor] = {}
        for head in self.heads:
            out.update(head(batch, features))
        return out
