"""PaiNN (Schütt, Unke & Gastegger 2021): equivariant message passing with scalar and vector features.

Each atom carries invariant features s_i ∈ R^F and Cartesian vector features v_i ∈ R^{3×F}.
s⁰ is an element embedding, v⁰ = 0 (§4.1). Interactions alternate a message block (Eqs. 7–8)
and an update block (Eqs. 9–10), each added as a residual (Fig. 2a).

Ablation switches (Tab. 4), keyword arguments named for what they turn on:

- ``vector_scalar_product``: the ⟨U v_i, V v_i⟩ term of Eq. 9 (off: the update network
  outputs a_vv and a_ss only, F fewer outputs per layer).
- ``vector_propagation``: the W_vv term of Eq. 8, v_j ∘ φ_vv(s_j) ∘ W_vv(r_ij) (off: φ and the
  filters output two splits instead of three, so no vector feature reaches a neighbour).
- ``vector_features``: off gives an invariant model with no vector features at all: the message
  is Eq. 7 alone and the update is s_i^u = a_ss(s_i); φ, the filters and a output F each and U, V
  are gone. The other two switches are then moot.

Filters for all layers come from one linear layer on the radial basis and are split per layer;
this gives the reference implementation's parameter count (589,057 with the 128 → 64 → 1 energy
head; ours has one more embedding row, Z = 0…100, like eqbench's SchNet: 589,185).

Parameter matching (Tab. 4, ``eqbench.sweep.match_width``) reproduces the paper's widths 134, 135
and 142 for the first three ablations. The invariant model differs: with every vector computation
removed it has 409k parameters at the paper's F = 174 and needs F = 210 to match 589k. The paper's
590.3k at F = 174 would be consistent with a model that kept U and V (2F² per layer: 590.9k) with
no vector features for them to act on, i.e. an ablation that zeroed the vectors but not their weights.
"""

from __future__ import annotations

import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.geometry import EdgePadding, radius_graph
from eqbench.models.base import AtomFeatures, Representation
from eqbench.nn import CosineCutoff, SincRBF, build_mlp, segment_sum

# Keeps ‖V v‖ differentiable where V v = 0 (every vector is zero before the first message,
# and stays zero on an atom without neighbours).
NORM_EPS = 1e-8


class PaiNNMessage(nn.Module):
    """Message block (Fig. 2b), Eqs. 7–8.

    Δs_i = Σ_j φ_s(s_j) ∘ W_s(‖r_ij‖)                                              (7)
    Δv_i = Σ_j v_j ∘ φ_vv(s_j) ∘ W_vv(‖r_ij‖) + Σ_j φ_vs(s_j) ∘ W_vs(‖r_ij‖) r_ij/‖r_ij‖  (8)

    φ is one atomwise network (F → F → n_splits·F) whose output is split into φ_s, φ_vs and
    (with vector propagation) φ_vv; the filters W arrive already split the same way.

    The directional sum of Eq. 8, Σ_j x_ij ⊗ r̂_ij, is computed per atom as a batched matrix
    product of the atom's neighbour directions [3, K] with its edge features [K, F] (zero-padded
    to K = the largest degree), so neither it nor its derivatives form [E, 3, F] tensors. In the
    first layer v⁰ = 0 and the v_j term is exactly zero, so it is skipped (``v=None``).
    """

    def __init__(self, n_features: int, activation: str, vector_features: bool, vector_propagation: bool):
        super().__init__()
        self.vector_features = vector_features
        self.vector_propagation = vector_features and vector_propagation
        self.n_splits = 1 + int(self.vector_features) + int(self.vector_propagation)
        self.phi = build_mlp(n_features, n_features, self.n_splits * n_features, activation)

    def forward(self, s, v, filters, direction, center, neighbor, padding: EdgePadding | None = None):
        """``filters``: [E, n_splits·F] (W_s, W_vs, W_vv), or a pair (basis [E, n_rbf + 1], weights
        [n_splits·F, n_rbf + 1]) whose product they are. ``direction``: [E, 3] unit vectors r̂_ij, or
        with ``padding`` its padded transpose [N, 3, K]."""
        n_atoms = s.shape[0]
        phi = torch.chunk(self.phi(s), self.n_splits, dim=-1)  # split per atom, gathered per edge below
        if isinstance(filters, tuple):
            basis, weights = filters
            weights = torch.chunk(weights, self.n_splits, dim=0)

            def filtered(k):  # φ_k(s_j) ∘ W_k(‖r_ij‖)
                return phi[k][neighbor] * torch.mm(basis, weights[k].t())
        else:
            filter_parts = torch.chunk(filters, self.n_splits, dim=-1)

            def filtered(k):
                return phi[k][neighbor] * filter_parts[k]

        ds = segment_sum(filtered(0), center, n_atoms)
        if not self.vector_features:
            return ds, None
        if padding is None:  # the same sum edge by edge
            dv = segment_sum(filtered(1)[:, None, :] * direction[:, :, None], center, n_atoms)
        else:
            dv = torch.bmm(direction, padding.pad(filtered(1)))  # equivariant filter Σ_j W_vs r̂_ij
        if self.vector_propagation and v is not None:
            dv = dv + segment_sum(filtered(2)[:, None, :] * v[neighbor], center, n_atoms)  # v_j travels on to i
        return ds, dv


class PaiNNUpdate(nn.Module):
    """Update block (Fig. 2c), Eqs. 9–10, atomwise.

    Δs_i = a_ss(s_i, ‖V v_i‖) + a_sv(s_i, ‖V v_i‖) ⟨U v_i, V v_i⟩   (9)
    Δv_i = a_vv(s_i, ‖V v_i‖) U v_i                                  (10)

    a is one network ([s, ‖Vv‖]: 2F → F → n_out·F) split into a_vv, a_ss and (with the scalar
    product) a_sv. Without vector features, Δs_i = a_ss(s_i) (F → F → F).
    """

    def __init__(self, n_features: int, activation: str, vector_features: bool, vector_scalar_product: bool):
        super().__init__()
        self.vector_features = vector_features
        self.vector_scalar_product = vector_features and vector_scalar_product
        if vector_features:
            self.U = nn.Linear(n_features, n_features, bias=False)
            self.V = nn.Linear(n_features, n_features, bias=False)
        self.n_splits = 1 + int(self.vector_features) + int(self.vector_scalar_product)
        n_in = 2 * n_features if vector_features else n_features
        self.a = build_mlp(n_in, n_features, self.n_splits * n_features, activation)

    def forward(self, s, v):
        if not self.vector_features:
            return self.a(s), None
        uv, vv = self.U(v), self.V(v)  # linear maps over features act on [N, 3, F] per spatial component
        vv_norm = torch.sqrt(vv.pow(2).sum(dim=1) + NORM_EPS)
        parts = torch.chunk(self.a(torch.cat([s, vv_norm], dim=-1)), self.n_splits, dim=-1)
        a_vv, ds = parts[0], parts[1]
        if self.vector_scalar_product:
            ds = ds + parts[2] * (uv * vv).sum(dim=1)
        return ds, a_vv[:, None, :] * uv


class PaiNN(Representation):
    """PaiNN representation (§4.1, Fig. 2).

    Args:
        n_features: F, width of s_i and v_i (paper: 128).
        n_interactions: number of message + update blocks (paper: 3).
        n_rbf: sinc radial basis functions sin(nπ‖r‖/r_cut)/‖r‖, n = 1…n_rbf (paper: 20).
        cutoff: r_cut in Å (paper: 5.0); the filters are multiplied by a cosine cutoff.
        activation: of the atomwise networks φ and a (paper: SiLU/swish).
        vector_scalar_product, vector_propagation, vector_features: ablation switches (module docstring).
        max_z: largest atomic number that gets an embedding.
    """

    has_vectors = True  # per instance: False with vector_features=False
    supports_periodic = True

    def __init__(self, n_features: int = 128, n_interactions: int = 3, n_rbf: int = 20, cutoff: float = 5.0,
                 activation: str = "silu", vector_scalar_product: bool = True, vector_propagation: bool = True,
                 vector_features: bool = True, max_z: int = 100):
        super().__init__()
        self.n_features, self.cutoff, self.activation = n_features, cutoff, activation
        self.n_interactions = n_interactions
        self.has_vectors = vector_features
        self.embedding = nn.Embedding(max_z + 1, n_features)
        self.rbf = SincRBF(n_rbf, cutoff)
        self.fcut = CosineCutoff(cutoff)
        self.messages = nn.ModuleList(PaiNNMessage(n_features, activation, vector_features, vector_propagation)
                                      for _ in range(n_interactions))
        self.updates = nn.ModuleList(PaiNNUpdate(n_features, activation, vector_features, vector_scalar_product)
                                     for _ in range(n_interactions))
        # W_s, W_vs (, W_vv) of every layer as linear combinations of the radial basis, computed once.
        self.filters_per_layer = self.messages[0].n_splits * n_features
        self.filters = nn.Linear(n_rbf, n_interactions * self.filters_per_layer)

    def forward(self, batch: Batch) -> AtomFeatures:
        graph = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff, batch.cell, batch.pbc)
        # W(r) f_cut(r) = (A·rbf(r) + b) f_cut(r) = [rbf(r) f_cut(r), f_cut(r)] · [A, b]ᵀ: the cutoff multiplies
        # the n_rbf + 1 inputs of the filter layer rather than its n_interactions·n_splits·F outputs, and each
        # layer's filters are made where they are used (no [E, 3·n_splits·F] tensor).
        fcut = self.fcut(graph.dist)[:, None]
        # Geometry in the weights' dtype: the matrix products below do not promote mixed dtypes (a float64
        # model fed float32 positions) as elementwise products do.
        dtype = self.filters.weight.dtype
        basis = torch.cat([self.rbf(graph.dist) * fcut, fcut], dim=-1).to(dtype)
        weights = torch.cat([self.filters.weight, self.filters.bias[:, None]], dim=-1)
        filters = [(basis, w) for w in torch.split(weights, self.filters_per_layer, dim=0)]
        direction = (graph.vec / graph.dist[:, None]).to(dtype)
        s = self.embedding(batch.z)
        padding = None
        if self.has_vectors:
            padding = EdgePadding(graph.center, s.shape[0])
            direction = padding.pad(direction).transpose(1, 2)  # [N, 3, K]
        v = None  # v⁰ = 0 (§4.1), exactly, until the first message
        for message, update, w in zip(self.messages, self.updates, filters):
            ds, dv = message(s, v, w, direction, graph.center, graph.neighbor, padding)
            s = s + ds
            v = dv if v is None else (v + dv if self.has_vectors else None)
            ds, dv = update(s, v)
            s = s + ds
            v = v + dv if self.has_vectors else None
        return AtomFeatures(scalar=s, vector=v)
