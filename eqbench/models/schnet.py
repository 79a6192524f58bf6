"""SchNet (Schütt et al. 2017/2018): continuous-filter convolutions, the invariant baseline.

x_i ← x_i + v_i,  v_i = Dense(ssp(Dense(Σ_j W(r_ij) ⊙ Dense(x_j))))  with filters
W(r) = Dense(ssp(Dense(RBF(r)))) · f_cut(r)  (Gaussian RBF, cosine cutoff, shifted softplus).
Defaults follow the papers' SchNet baseline: 128 features, 6 interactions, 50 Gaussians
on [0, 5 Å].

The filters depend on the distance only, and ‖r_ij‖ = ‖r_ji‖: they are computed once per pair of
atoms and used for both directions (half the filter-network work; the same equations).
"""

from __future__ import annotations

from torch import nn

from eqbench.batch import Batch
from eqbench.geometry import edge_pairs, radius_graph
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

    def forward(self, x, rbf, fcut, center, neighbor, pair=None):
        """``rbf``, ``fcut`` per edge, or per pair with ``pair`` [E] mapping each edge to its pair."""
        w = self.filter(rbf) * fcut[:, None]
        if pair is not None:
            w = w[pair]  # W(‖r_ij‖) = W(‖r_ji‖): one filter per pair, both directions
        messages = self.in2f(x)[neighbor] * w
        return self.dense(self.f2out(segment_sum(messages, center, x.shape[0])))


class SchNet(Representation):
    has_vectors = False
    supports_periodic = True

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
        x = self.embedding(batch.z)
        pairs = edge_pairs(graph, x.shape[0])
        dist = graph.dist if pairs is None else graph.dist[pairs.edge]
        rbf, fcut = self.rbf(dist), self.fcut(dist)
        for interaction in self.interactions:
            x = x + interaction(x, rbf, fcut, graph.center, graph.neighbor, None if pairs is None else pairs.pair)
        return AtomFeatures(scalar=x)
