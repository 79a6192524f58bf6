"""SchNet (Schütt et al. 2017/2018): continuous-filter convolutions, the invariant baseline.

x_i ← x_i + v_i,  v_i = Dense(ssp(Dense(Σ_j W(r_ij) ⊙ Dense(x_j))))  with filters
W(r) = Dense(ssp(Dense(RBF(r)))) · f_cut(r)  (Gaussian RBF, cosine cutoff, shifted softplus).
Defaults follow the papers' SchNet baseline: 128 features, 6 interactions, 50 Gaussians
on [0, 5 Å].
"""

from __future__ import annotations

from torch import nn

from eqbench.batch import Batch
from eqbench.geometry import radius_graph
from eqbench.models.base import AtomFeatures, Representation
from eqbench.nn import CosineCutoff, segment_sum
from eqbench.nn import activation as make_activation
from eqbench.nn import radial_basis as make_radial_basis


class CFConvInteraction(nn.Module):
    def __init__(self, n_features: int, n_rbf: int, activation: str):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(n_rbf, n_features), make_activation(activation),
                                    nn.Linear(n_features, n_features))
        self.in2f = nn.Linear(n_features, n_features, bias=False)
        self.f2out = nn.Sequential(nn.Linear(n_features, n_features), make_activation(activation))
        self.dense = nn.Linear(n_features, n_features)

    def forward(self, x, rbf, fcut, center, neighbor):
        w = self.filter(rbf) * fcut[:, None]
        messages = self.in2f(x)[neighbor] * w
        return self.dense(self.f2out(segment_sum(messages, center, x.shape[0])))


class SchNet(Representation):
    has_vectors = False

    def __init__(self, n_features: int = 128, n_interactions: int = 6, n_rbf: int = 50, cutoff: float = 5.0,
                 activation: str = "ssp", radial_basis: str = "gaussian", max_z: int = 100):
        super().__init__()
        self.n_features, self.cutoff, self.activation = n_features, cutoff, activation
        self.embedding = nn.Embedding(max_z + 1, n_features)
        self.rbf = make_radial_basis(radial_basis, n_rbf, cutoff)
        self.fcut = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(
            CFConvInteraction(n_features, n_rbf, activation) for _ in range(n_interactions))

    def forward(self, batch: Batch) -> AtomFeatures:
        graph = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff, batch.cell, batch.pbc)
        rbf, fcut = self.rbf(graph.dist), self.fcut(graph.dist)
        x = self.embedding(batch.z)
        for interaction in self.interactions:
            x = x + interaction(x, rbf, fcut, graph.center, graph.neighbor)
        return AtomFeatures(scalar=x)
