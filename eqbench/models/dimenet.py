"""DimeNet (Klicpera, Groß & Günnemann 2020) and DimeNet++ (Klicpera et al. 2020): directional message passing.

Messages m_ji live on directed edges j → i (eqbench.geometry's edge convention: ``center`` i,
``neighbor`` j). They are updated from the messages m_kj arriving at j, k ∈ N_j \\ {i}, using the
distance d_ji, the distance d_kj and the angle α_(kj,ji) between the two messages (Eq. 4)::

    m_ji^(l+1) = f_update(m_ji^(l), Σ_k f_int(m_kj^(l), e_RBF^(ji), a_SBF^(kj,ji)))         (4)

Bases (Sec. 5), both multiplied by the envelope u(d) of Eq. (8) (p = 6, C² at the cutoff):

- e_RBF(d) = u(d) · sqrt(2/c) sin(k_n d)/d, k_n initialised at nπ/c and trained (Eq. 7; N_RBF = 6, App. B).
- a_SBF(d_kj, α) = u(d_kj) · sqrt(2/(c³ j²_{l+1}(z_ln))) j_l(z_ln d_kj/c) Y_l^0(α) (Eq. 6; N_SHBF = 7,
  N_SRBF = 6), with the roots z_ln of the spherical Bessel functions computed numerically
  (:mod:`eqbench.nn.spherical`).
- α_(kj,ji) is the angle between the message directions x_j − x_k and x_i − x_j, i.e. π minus the bond
  angle at j (the authors' implementation and PyG's DimeNetPlusPlus; PyG's ``DimeNet`` uses instead the
  angle at i between x_j − x_i and x_k − x_i, which is a different angle: see the tests).

Blocks (Sec. 6, Fig. 4; σ = swish/SiLU):

- Embedding block (Eq. 9): m_ji^(1) = σ([h_j ‖ h_i ‖ σ(W_rbf e_RBF(d_ji) + b_rbf)] W + b). As in Fig. 4 and the
  authors' implementation, e_RBF passes through a dense layer with σ before the concatenation.
- Interaction block (Fig. 4): x_ji = σ(W_ji m_ji + b); x_kj = σ(W_kj m_kj + b) ⊙ W_rbf e_RBF;
  Σ_k of the bilinear layer Σ_{b,l} W_{c,b,l} (W_sbf a_SBF)_b x_kj,l (N_bilinear = 8); one residual layer,
  a dense layer with σ plus the skip connection from m_ji, two residual layers (x + σ(W₂ σ(W₁ x + b₁) + b₂)).
- Output block: Σ_j (W_rbf e_RBF(d_ji)) ⊙ m_ji per atom i, three dense layers with σ, then a final
  linear layer; the outputs of all blocks (the embedding block's included) are summed, t = Σ_i Σ_l t_i^(l).

DimeNet++ (public changes): the message is multiplied by W_rbf2 W_rbf1 e_RBF, projected down to
``n_triplet_features`` (64) with σ before the triplet step, which multiplies it element-wise by
W_sbf2 W_sbf1 a_SBF (basis embeddings of size 8) instead of the bilinear layer, and projected up with σ
after the sum over k; output blocks project up to ``n_output_features`` (256) before their dense layers.
Defaults: F = 128, 4 blocks.

Implementation choices that follow the authors' code rather than the equations as printed (both are also
what PyTorch Geometric does, so weights transfer):

- The interaction block multiplies x_kj by W_rbf e_RBF(d_kj), the radial basis of the *incoming* edge k → j
  (Eq. 4 writes e_RBF^(ji)).
- ``sbf_over_distance=True``: the 2D basis is u(d)/d · ã_SBF. The authors' envelope carries the 1/d of Eq. 7
  and is applied to both bases; ``False`` gives u(d) · ã_SBF as in Eq. 6 and Sec. 5.

How the triplet step is computed (the same sums, without one row per triplet). A triplet (k→j, j→i), k ≠ i,
is a pair of neighbours of the shared atom j. With the edges centred on j in padded slots s = 0…D−1
(:class:`TripletLayout`, u_s the unit vector from j to its s-th neighbour), the edge k→j is slot s_k of atom
j, the edge j→i is the reverse of the edge in slot s_i, and cos α_(kj,ji) = −u_{s_i}·u_{s_k}. The 2D basis
factorises, a_SBF = radial(d_kj)[l, n] · Y_l^0(α), so every linear map of it is Σ_l Y_l^0(α) R[kj, l, :]
with a per-edge R (the weights applied to the radial part of each l). Hence, with A_j[s_i, s_k, l] =
Y_l^0(α) (zero for s_i = s_k):

- DimeNet++: Σ_k x_kj ⊙ W_sbf2 W_sbf1 a_SBF = Σ_{s_k, l} A_j[s_i, s_k, l] (x ⊙ Q)[(j, s_k), l, :] with
  Q = W_sbf2 (W_sbf1 per l) radial, one batched matrix product per atom, [D, D·L] @ [D·L, F_t];
- DimeNet: Σ_k s_b x_kj = Σ_{s_k} S_j[s_i, b, s_k] x[(j, s_k)] with S_j = Σ_l A_j[·, ·, l] R[·, l, b], one
  batched product [D·B, D] @ [D, F] before the bilinear weights;

and the result for (j, s_i) is moved to edge j→i by one gather with the reverse-edge index (radius graphs
are symmetric; DimeNet refuses periodic batches). The work per atom grows with D², so atoms are grouped by
degree into up to three buckets, each padded to its own largest degree. Why: per block this replaces the
gathers, element-wise products and scatters of [T, F_t] tensors (T ≈ 17 × the number of edges for QM9 at
5 Å) and the slow weight gradient of W_sbf2 on T rows by products on [N, D, L, F_t] tensors and batched
matrix products, in every derivative of the force-training step (which differentiates the forces once
more). The loop reference in the tests checks the result against the equations. Also for speed, and with
unchanged values: linear layers run through :func:`eqbench.nn.linear.linear` (a faster weight gradient),
σ = SiLU is :class:`eqbench.nn.activations.SiLU` (a shorter double backward), and the radial part of the 2D
basis is computed once per forward for all orders at once; rows are gathered with ``index_select``, whose
backward is an ``index_add_`` (``x[index]``'s is a slower, sorting ``index_put_``).

How the output blocks meet eqbench's heads: every output block ends in a linear layer, and a sum of linear
maps is one linear map of the concatenation, Σ_l W_l x_l = [W_0 … W_B] [x_0; …; x_B]. The representation
therefore returns as ``AtomFeatures.scalar`` the concatenated inputs x_l of the final layers of all B + 1
output blocks (width (B+1)·F, or (B+1)·256 for DimeNet++), and asks the task (``head_kwargs``) for a linear
head without bias: one such head per target is exactly DimeNet's per-target final layers. The head's
scale/shift/atom references are eqbench's standardisation (buffers, no parameters).

Parameter counts (one target, the defaults): DimeNet 2,100,838, DimeNet++ 1,886,598. PyTorch Geometric's
``DimeNet(128, 1, 6, 8, 7, 6)`` has 2,100,070 and ``DimeNetPlusPlus(128, 1, 4, 64, 8, 256, 7, 6)``
1,885,830: the only difference is the element embedding, 101 rows (Z = 0…100, as every eqbench model)
against PyG's 95, i.e. 6 × 128 = 768 parameters (+0.04 %).

Tab. 3 ablations, keyword arguments:

- ``radial_basis="gaussian"``: 64 Gaussians (eqbench.nn.GaussianRBF on [0, c], times the envelope) for d_ji
  and for the radial part of a_SBF (d_kj), instead of 6 Bessel functions each.
- ``n_spherical=1``: N_SHBF = 1, only l = 0, so the angle is ignored.
- ``message_embeddings=False``: node embeddings h_i (element embedding) instead of message embeddings; the
  interaction block updates h_i from Σ_j σ(W_kj h_j + b) ⊙ W_rbf e_RBF(d_ji) (DimeNet++: with the down/up
  projections) without triplets, angles or the 2D basis; output blocks read h_j in place of m_ji.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.errors import ModelError
from eqbench.geometry import EdgePadding, radius_graph, reverse_edges
from eqbench.models.base import AtomFeatures, Representation
from eqbench.nn import GaussianRBF, PolynomialEnvelope, segment_sum
from eqbench.nn import activation as make_activation
from eqbench.nn.linear import dense, linear
from eqbench.nn.radial import BesselRBF
from eqbench.nn.spherical import SphericalBesselBasis, legendre_y0

RADIAL_BASES = ("bessel", "gaussian")


class ResidualLayer(nn.Module):
    """x + σ(W₂ σ(W₁ x + b₁) + b₂)."""

    def __init__(self, n_features: int, activation: str):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(n_features, n_features), nn.Linear(n_features, n_features)
        self.act = make_activation(activation)

    def forward(self, x):
        return x + self.act(linear(self.act(linear(x, self.lin1)), self.lin2))


class EmbeddingBlock(nn.Module):
    """Eq. (9): m_ji = σ([h_j ‖ h_i ‖ σ(W_rbf e_RBF(d_ji) + b)] W + b); ``message_embeddings=False``: h_i only."""

    def __init__(self, n_rbf: int, n_features: int, activation: str, max_z: int, message_embeddings: bool):
        super().__init__()
        self.embedding = nn.Embedding(max_z + 1, n_features)
        self.message_embeddings = message_embeddings
        if message_embeddings:
            self.lin_rbf = nn.Linear(n_rbf, n_features)
            self.lin = nn.Linear(3 * n_features, n_features)
        self.act = make_activation(activation)

    def forward(self, z, rbf, center, neighbor):
        h = self.embedding(z)
        if not self.message_embeddings:
            return h
        e = self.act(linear(rbf, self.lin_rbf))
        h_ji = [h.index_select(0, neighbor), h.index_select(0, center)]
        return self.act(linear(torch.cat([*h_ji, e], dim=-1), self.lin))


class _Interaction(nn.Module):
    """Shared parts of the interaction block: x_ji, x_kj, residual stacks and the skip connection."""

    def __init__(self, n_features: int, activation: str, n_before_skip: int, n_after_skip: int):
        super().__init__()
        self.act = make_activation(activation)
        self.lin_ji = nn.Linear(n_features, n_features)
        self.lin_kj = nn.Linear(n_features, n_features)
        self.before_skip = nn.ModuleList(ResidualLayer(n_features, activation) for _ in range(n_before_skip))
        self.lin = nn.Linear(n_features, n_features)
        self.after_skip = nn.ModuleList(ResidualLayer(n_features, activation) for _ in range(n_after_skip))

    def update(self, m, x_ji, aggregated):
        h = x_ji + aggregated
        for layer in self.before_skip:
            h = layer(h)
        h = self.act(linear(h, self.lin)) + m
        for layer in self.after_skip:
            h = layer(h)
        return h


class DimeNetInteraction(_Interaction):
    """DimeNet interaction block with the bilinear layer (N_bilinear × F × F)."""

    def __init__(self, n_features: int, n_bilinear: int, n_sbf: int, n_rbf: int, activation: str,
                 n_before_skip: int, n_after_skip: int):
        super().__init__(n_features, activation, n_before_skip, n_after_skip)
        self.lin_rbf = nn.Linear(n_rbf, n_features, bias=False)
        if n_sbf:  # node embeddings (n_sbf = 0) have no triplets, hence no 2D basis and no bilinear layer
            self.lin_sbf = nn.Linear(n_sbf, n_bilinear, bias=False)
            # W[c, b, l]: output channel c, bilinear index b, input channel l.
            self.bilinear = nn.Parameter(torch.empty(n_features, n_bilinear, n_features))
            nn.init.normal_(self.bilinear, std=2.0 / n_features)
        self.n_bilinear = n_bilinear

    def forward(self, m, rbf, sbf, graph, layout, n_atoms):
        x_ji = self.act(linear(m, self.lin_ji))
        if layout is None:  # node embeddings: m is [N, F], neighbours j of each atom i, no angles
            x = self.act(linear(m, self.lin_kj)).index_select(0, graph.neighbor) * linear(rbf, self.lin_rbf)
            agg = segment_sum(x, graph.center, n_atoms)
            return self.update(m, x_ji, agg)
        x_kj = self.act(linear(m, self.lin_kj)) * linear(rbf, self.lin_rbf)
        radial, angular = sbf
        # s_(kj,ji),b = Σ_l Y_l^0(α) R[kj, l, b], R = W_sbf applied to the radial part of each l (slot layout).
        u = layout.bilinear_sum(angular, [radial_mix(r, self.lin_sbf.weight) for r in radial], layout.pad(x_kj))
        agg = dense(u.flatten(1), self.bilinear.flatten(1))  # Σ_{b,l} W[c, b, l] u[b, l]
        return self.update(m, x_ji, agg)


class DimeNetPPInteraction(_Interaction):
    """DimeNet++ interaction block: down-projection, element-wise triplet product, up-projection."""

    def __init__(self, n_features: int, n_triplet_features: int, n_basis_features: int, n_sbf: int, n_rbf: int,
                 activation: str, n_before_skip: int, n_after_skip: int):
        super().__init__(n_features, activation, n_before_skip, n_after_skip)
        self.lin_rbf1 = nn.Linear(n_rbf, n_basis_features, bias=False)
        self.lin_rbf2 = nn.Linear(n_basis_features, n_features, bias=False)
        if n_sbf:
            self.lin_sbf1 = nn.Linear(n_sbf, n_basis_features, bias=False)
            self.lin_sbf2 = nn.Linear(n_basis_features, n_triplet_features, bias=False)
        self.lin_down = nn.Linear(n_features, n_triplet_features, bias=False)
        self.lin_up = nn.Linear(n_triplet_features, n_features, bias=False)

    def forward(self, m, rbf, sbf, graph, layout, n_atoms):
        x_ji = self.act(linear(m, self.lin_ji))
        rbf = linear(linear(rbf, self.lin_rbf1), self.lin_rbf2)
        if layout is None:  # node embeddings
            x = self.act(linear(self.act(linear(m, self.lin_kj)).index_select(0, graph.neighbor) * rbf, self.lin_down))
            agg = segment_sum(x, graph.center, n_atoms)
        else:
            x_kj = self.act(linear(self.act(linear(m, self.lin_kj)) * rbf, self.lin_down))
            radial, angular = sbf
            # W_sbf2 W_sbf1 a_SBF = Σ_l Y_l^0(α) Q[kj, l] with Q = W_sbf2 (W_sbf1 per l) radial (slot layout).
            q = [linear(radial_mix(r, self.lin_sbf1.weight), self.lin_sbf2) for r in radial]  # [n, D, L, F_t]
            agg = layout.triplet_sum(angular, layout.pad(x_kj), q)
        return self.update(m, x_ji, self.act(linear(agg, self.lin_up)))


def radial_mix(radial: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_n W[b, (l, n)] radial[..., l, n] → [..., L, B]: a linear layer on a_SBF with the angular factor left out.

    ``radial`` is [..., L, N] (Bessel) or [..., 1, N] (Gaussian: the same for every l); ``weight`` [B, L·N].
    One matrix product with the block-diagonal (per l) weight, or with W reordered to [N, L·B] for one
    radial part shared by all l.
    """
    n_out, n_radial = weight.shape[0], radial.shape[-1]
    w = weight.view(n_out, -1, n_radial).permute(1, 2, 0)  # [L, N, B]
    n_orders = w.shape[0]
    mixed = torch.block_diag(*w) if radial.shape[-2] > 1 else w.permute(1, 0, 2).reshape(n_radial, -1)
    out = torch.mm(radial.reshape(-1, mixed.shape[0]), mixed)
    return out.view(*radial.shape[:-2], n_orders, n_out)


class TripletLayout:
    """DimeNet's triplets (k→j, j→i), k ≠ i, as pairs of neighbour slots of the shared atom j.

    Both k and i are neighbours of j, so with the edges centred on j in padded slots s = 0…D−1
    (:class:`eqbench.geometry.EdgePadding`, edge (j, n_s), unit vector u_s from j to n_s), the edge k→j is
    slot s_k of atom j and the edge j→i is the reverse of slot s_i's edge. Triplet sums become one batched
    matrix product per atom j over the slots s_k, and the result for (j, s_i) belongs to edge j→i, the reverse
    of edge (j, i) (graphs from :func:`eqbench.geometry.radius_graph` are symmetric; DimeNet refuses periodic
    batches). No tensor has one row per triplet.

    The work per atom grows with D², so atoms are grouped by degree into up to ``max_buckets`` buckets, each
    padded to its own largest degree (the 50-molecule QM9 benchmark batch at 5 Å: 70 % of one bucket's N·D²).
    Per-edge inputs are given in this layout as one [n_b, D_b, ...] tensor per bucket (:meth:`pad`).
    """

    def __init__(self, center: torch.Tensor, neighbor: torch.Tensor, n_atoms: int, max_buckets: int = 3):
        degree = torch.bincount(center, minlength=n_atoms)
        bounds = degree_buckets(degree, max_buckets)
        lower = [0, *bounds[:-1]]
        rank = torch.zeros(n_atoms, dtype=torch.long, device=center.device)
        row = torch.empty_like(center)
        self.edges, self.paddings = [], []
        offset = 0
        for lo, hi in zip(lower, bounds):
            atoms = torch.nonzero((degree > lo) & (degree <= hi)).squeeze(-1)
            rank[atoms] = torch.arange(len(atoms), device=center.device)
            edges = torch.nonzero((degree[center] > lo) & (degree[center] <= hi)).squeeze(-1)
            padding = EdgePadding(rank[center[edges]], len(atoms))  # edges stay sorted by center
            row[edges] = offset + padding.slot
            offset += padding.n_atoms * padding.k
            self.edges.append(edges)
            self.paddings.append(padding)
        # row of the concatenated, flattened slots (j, s_i) for every edge j→i
        self.source = row[reverse_edges(center, neighbor, n_atoms)]

    def pad(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[E, ...] per edge (center j) → [n_b, D_b, ...] per bucket, zero in the empty slots."""
        return [padding.pad(x.index_select(0, edges)) for padding, edges in zip(self.paddings, self.edges)]

    def angular(self, unit: torch.Tensor, n_spherical: int) -> list[torch.Tensor]:
        """A_j[s_i, s_k, l] = Y_l^0(cos α_(kj,ji)), zero where s_i = s_k: [n_b, D_b, D_b, L] per bucket.

        ``unit``: [E, 3] unit vectors from center to neighbor. u_(kj) = u_{s_k} and u_(ji) = −u_{s_i}, hence
        cos α = −u_{s_i}·u_{s_k}. Entries with a padded slot are never used (zero rows of the slot data on one
        side, discarded rows of the result on the other).
        """
        out = []
        for u in self.pad(unit):  # [n, D, 3]
            cos = -torch.bmm(u, u.transpose(1, 2))
            not_self = 1.0 - torch.eye(u.shape[1], dtype=cos.dtype, device=cos.device)
            out.append(legendre_y0(cos, n_spherical) * not_self[:, :, None])
        return out

    def gather(self, out: list[torch.Tensor]) -> torch.Tensor:
        """Results per (j, s_i), [n_b, D_b, ...] per bucket → [E, ...] in edge order j→i."""
        return torch.cat([o.reshape(-1, *o.shape[2:]) for o in out]).index_select(0, self.source)

    def triplet_sum(self, angular, x, q) -> torch.Tensor:
        """Σ_{k ∈ N_j \\ {i}} x_kj ⊙ Σ_l Y_l^0(α_(kj,ji)) q[kj, l, :] for every edge j→i → [E, F].

        Per bucket, ``x`` [n, D, F] and ``q`` [n, D, L, F] in the slot layout. One batched product per atom j:
        A_j [D, D·L] @ (x ⊙ q)_j [D·L, F] (slots s_k and orders l together).
        """
        out = []
        for a, xb, qb in zip(angular, x, q):
            n, d = xb.shape[:2]
            p = (xb[:, :, None, :] * qb).view(n, d * qb.shape[2], xb.shape[-1])
            out.append(torch.bmm(a.reshape(n, d, d * a.shape[-1]), p))
        return self.gather(out)

    def bilinear_sum(self, angular, r, x) -> torch.Tensor:
        """Σ_{k ∈ N_j \\ {i}} s_(kj,ji),b x_kj with s_b = Σ_l Y_l^0(α) r[kj, l, b] → [E, B, F].

        Per bucket, ``r`` [n, D, L, B] and ``x`` [n, D, F] in the slot layout. S_j[s_i, b, s_k] =
        Σ_l A_j[s_i, s_k, l] r[(j, s_k), l, b], then one batched product per atom j, S_j [D·B, D] @ x_j [D, F].
        """
        out = []
        for a, rb, xb in zip(angular, r, x):
            n, d, b = rb.shape[0], rb.shape[1], rb.shape[-1]
            s = torch.einsum("nikl,nklb->nibk", a, rb)
            out.append(torch.bmm(s.reshape(n, d * b, d), xb).view(n, d, b, xb.shape[-1]))
        return self.gather(out)


def degree_buckets(degree: torch.Tensor, max_buckets: int) -> list[int]:
    """Upper degree bounds of at most ``max_buckets`` buckets of atoms (degree ≥ 1), ascending, chosen to
    minimise Σ_b n_b D_b² (D_b the largest degree in bucket b)."""
    counts = torch.bincount(degree).tolist()
    values = [d for d in range(1, len(counts)) if counts[d]]
    if not values:  # no edges: one empty bucket
        return [1]
    below = list(itertools.accumulate(counts))  # atoms with degree ≤ d

    def cost(bounds):
        return sum((below[hi] - below[lo]) * hi * hi for lo, hi in zip([0, *bounds[:-1]], bounds))

    best, best_cost = [values[-1]], cost([values[-1]])
    for n_cuts in range(1, min(max_buckets, len(values))):
        for cuts in itertools.combinations(values[:-1], n_cuts):
            bounds = [*cuts, values[-1]]
            if (c := cost(bounds)) < best_cost:
                best, best_cost = bounds, c
    return best


class OutputBlock(nn.Module):
    """Σ_j (W_rbf e_RBF(d_ji)) ⊙ m_ji per atom i, [up-projection], dense layers with σ.

    Returns the input of the block's final linear layer (which lives in the head, see the module docstring).
    """

    def __init__(self, n_rbf: int, n_features: int, n_output_features: int | None, n_layers: int, activation: str):
        super().__init__()
        self.lin_rbf = nn.Linear(n_rbf, n_features, bias=False)
        width = n_output_features or n_features
        self.lin_up = nn.Linear(n_features, width, bias=False) if n_output_features else None
        self.lins = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        self.act = make_activation(activation)

    def forward(self, m, rbf, graph, n_atoms, message_embeddings: bool):
        messages = m if message_embeddings else m.index_select(0, graph.neighbor)
        x = segment_sum(linear(rbf, self.lin_rbf) * messages, graph.center, n_atoms)
        if self.lin_up is not None:
            x = linear(x, self.lin_up)
        for lin in self.lins:
            x = self.act(linear(x, lin))
        return x


class DimeNet(Representation):
    """DimeNet (Sec. 6, App. B hyperparameters); ``DimeNetPlusPlus`` below.

    Args:
        n_features: F, message embedding size (128).
        n_interactions: interaction blocks (6).
        n_rbf: N_RBF radial functions for d_ji (6, App. B; 64 with ``radial_basis="gaussian"``).
        n_spherical: N_SHBF, orders l of the 2D basis (7); 1 ignores angles (Tab. 3).
        n_radial: N_SRBF radial functions of the 2D basis (6; 64 with ``radial_basis="gaussian"``).
        n_bilinear: N_bilinear (8).
        cutoff: c in Å (5).
        envelope_exponent: p of Eq. (8) (6).
        activation: σ (swish = SiLU).
        radial_basis: ``bessel`` (Eqs. 6–7) or ``gaussian`` (Tab. 3 ablation).
        message_embeddings: directional message embeddings (True) or node embeddings (Tab. 3 ablation).
        sbf_over_distance: the authors' u(d)/d on the 2D basis (module docstring).
        n_before_skip, n_after_skip, n_output_layers: residual layers before/after the skip connection (1, 2),
            dense layers of the output blocks (3).
        max_z: largest atomic number with an embedding.
    """

    has_vectors = False

    def __init__(self, n_features: int = 128, n_interactions: int = 6, n_rbf: int | None = None,
                 n_spherical: int = 7, n_radial: int | None = None, n_bilinear: int = 8, cutoff: float = 5.0,
                 envelope_exponent: int = 6, activation: str = "silu", radial_basis: str = "bessel",
                 message_embeddings: bool = True, sbf_over_distance: bool = True, n_before_skip: int = 1,
                 n_after_skip: int = 2, n_output_layers: int = 3, max_z: int = 100):
        super().__init__()
        self._build(n_features, n_interactions, n_rbf, n_spherical, n_radial, cutoff, envelope_exponent,
                    activation, radial_basis, message_embeddings, sbf_over_distance, n_output_layers, max_z,
                    n_output_features=None)
        self.interactions = nn.ModuleList(
            DimeNetInteraction(n_features, n_bilinear, self.n_sbf, self.n_rbf, activation, n_before_skip,
                               n_after_skip) for _ in range(n_interactions))

    def _build(self, n_features, n_interactions, n_rbf, n_spherical, n_radial, cutoff, envelope_exponent,
               activation, radial_basis, message_embeddings, sbf_over_distance, n_output_layers, max_z,
               n_output_features):
        name = type(self).__name__
        if radial_basis not in RADIAL_BASES:
            raise ModelError(f"{name}: radial_basis={radial_basis!r}; choose one of {list(RADIAL_BASES)}")
        if n_interactions < 1 or n_spherical < 1:
            raise ModelError(f"{name}: n_interactions={n_interactions}, n_spherical={n_spherical}; set both to 1 "
                             "or more")
        gaussian = radial_basis == "gaussian"
        self.n_rbf = n_rbf or (64 if gaussian else 6)
        self.n_radial = n_radial or (64 if gaussian else 6)
        self.n_spherical, self.cutoff, self.activation = n_spherical, cutoff, activation
        self.radial_basis, self.message_embeddings = radial_basis, message_embeddings
        self.sbf_over_distance = sbf_over_distance
        self.n_sbf = n_spherical * self.n_radial if message_embeddings else 0
        self.envelope = PolynomialEnvelope(cutoff, envelope_exponent)
        if gaussian:
            self.rbf = GaussianRBF(self.n_rbf, cutoff)
            self.sbf_radial = GaussianRBF(self.n_radial, cutoff) if message_embeddings else None
        else:
            self.rbf = BesselRBF(self.n_rbf, cutoff, trainable=True)
            self.sbf_radial = SphericalBesselBasis(n_spherical, self.n_radial, cutoff) if message_embeddings else None
        self.embedding = EmbeddingBlock(self.n_rbf, n_features, activation, max_z, message_embeddings)
        self.outputs = nn.ModuleList(OutputBlock(self.n_rbf, n_features, n_output_features, n_output_layers,
                                                 activation) for _ in range(n_interactions + 1))
        # Width of AtomFeatures.scalar: the concatenated inputs of every output block's final linear layer.
        self.hidden_features = n_features
        self.n_features = (n_interactions + 1) * (n_output_features or n_features)
        self.head_kwargs = {"n_hidden": [], "bias": False}

    def bases(self, graph, layout):
        """e_RBF [E, N_RBF] and the two factors of a_SBF in the slot layout of :class:`TripletLayout`, one tensor
        per degree bucket: radial [n, D, N_SHBF or 1, N_SRBF] per edge k→j and angular [n, D, D, N_SHBF] per
        triplet (None without triplets)."""
        env = self.envelope(graph.dist)
        rbf = self.rbf(graph.dist) * env[:, None]
        if layout is None:
            return rbf, None
        if self.radial_basis == "gaussian":
            radial = (self.sbf_radial(graph.dist) * env[:, None])[:, None, :]  # [E, 1, N], same for every l
        else:
            radial = self.sbf_radial(graph.dist) * env[:, None, None]  # [E, L, N]
        if self.sbf_over_distance:
            radial = radial / graph.dist[:, None, None]
        radial = layout.pad(radial)
        # α between the message directions x_j − x_k and x_i − x_j: vec = pos[neighbor] − pos[center].
        angular = layout.angular(graph.vec / graph.dist[:, None], self.n_spherical)
        return rbf, (radial, angular)

    def forward(self, batch: Batch) -> AtomFeatures:
        graph = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff)
        n_atoms = batch.pos.shape[0]
        layout = TripletLayout(graph.center, graph.neighbor, n_atoms) if self.message_embeddings else None
        rbf, sbf = self.bases(graph, layout)
        m = self.embedding(batch.z, rbf, graph.center, graph.neighbor)
        out = [self.outputs[0](m, rbf, graph, n_atoms, self.message_embeddings)]
        for interaction, output in zip(self.interactions, self.outputs[1:]):
            m = interaction(m, rbf, sbf, graph, layout, n_atoms)
            out.append(output(m, rbf, graph, n_atoms, self.message_embeddings))
        return AtomFeatures(scalar=torch.cat(out, dim=-1))


class DimeNetPlusPlus(DimeNet):
    """DimeNet++: F = 128, 4 blocks, triplet (int. embedding) size 64, basis embeddings 8, output blocks 256.

    Args as :class:`DimeNet`, without ``n_bilinear``, plus ``n_triplet_features`` (64),
    ``n_basis_features`` (8) and ``n_output_features`` (256).
    """

    def __init__(self, n_features: int = 128, n_interactions: int = 4, n_rbf: int | None = None,
                 n_spherical: int = 7, n_radial: int | None = None, n_triplet_features: int = 64,
                 n_basis_features: int = 8, n_output_features: int = 256, cutoff: float = 5.0,
                 envelope_exponent: int = 6, activation: str = "silu", radial_basis: str = "bessel",
                 message_embeddings: bool = True, sbf_over_distance: bool = True, n_before_skip: int = 1,
                 n_after_skip: int = 2, n_output_layers: int = 3, max_z: int = 100):
        Representation.__init__(self)
        self._build(n_features, n_interactions, n_rbf, n_spherical, n_radial, cutoff, envelope_exponent,
                    activation, radial_basis, message_embeddings, sbf_over_distance, n_output_layers, max_z,
                    n_output_features=n_output_features)
        self.interactions = nn.ModuleList(
            DimeNetPPInteraction(n_features, n_triplet_features, n_basis_features, self.n_sbf, self.n_rbf,
                                 activation, n_before_skip, n_after_skip) for _ in range(n_interactions))
