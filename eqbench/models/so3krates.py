"""So3krates (Frank, Unke & Müller 2022): equivariant self-attention on features and spherical harmonic coordinates.

Each atom carries invariant features f_i ∈ R^F and spherical harmonic coordinates (SPHCs)
χ_i = [χ_i^(l)]_{l ∈ L} ∈ R^{Σ(2l+1)}, kept separate (Fig. 1a). f⁰ is an element embedding (Eq. 9), χ⁰ the
cutoff-weighted mean of the neighbours' spherical harmonics (Eq. 11):

    χ_i^(l) = (1/C_i) Σ_{j∈N(i)} φ_rcut(r_ij) Y^(l)(r̂_ij),   C_i = Σ_{j∈N(i)} φ_rcut(r_ij)        (11)

Each of the n_l layers is a self-attention block followed by an interaction block (Fig. 1b):

    f_i ← f_i + Σ_{j∈N(i)} φ_rcut(r_ij) α_ij f_j                                             (12)
    χ_i^(l) ← χ_i^(l) + Σ_{j∈N(i)} φ_rcut(r_ij) α_ij^(l) Y^(l)(r̂_ij)                           (13)
            [+ Σ_{j∈N_χ(i)} φ_χ̃cut(χ̃_ij) α_ij^(l) Y^(l)(r̂_ij)   with non-local corrections]     (14)
    α_ij = f_i^T (w_ij ⊙ f_j) / √F,   w_ij = φ_r(r_ij) + φ_s([χ_ij^(l)]_{l∈L})                 (15, 16)
    f_i ← f_i + φ_1(f_i, [‖χ_i^(l)‖], [‖χ̃_i^(l)‖])                                           (17)
    χ_i^(l) ← χ_i^(l) + φ_2^(l)(f_i, [‖χ_i^(l)‖], [‖χ̃_i^(l)‖]) χ_i^(l) + φ_3^(l)([‖χ̃_i^(l)‖]) χ̃_i^(l)   (18)

with χ_ij^(l) = ‖χ_j^(l) − χ_i^(l)‖ and the cross-degree coupled SPHCs χ̃ of Eq. 19
(:class:`eqbench.nn.sphc.CrossDegreeCoupling`). The atomic energies come from the features of the last
layer through the two-layer output block of eqbench's energy head, E = Σ_i E_i.

Non-local corrections (Eq. 14, ``nonlocal_corrections``): for every molecule the SPHC distance matrix
X_ij = ‖χ_i − χ_j‖ over all its atom pairs is turned into χ̃_ij = softmax_j(X_ij) per row (the row includes
j = i, X_ii = 0), and pairs with χ̃_ij below χ̃_cut = 1/n (n atoms in the molecule) form the spherical
neighbourhood N_χ(i), weighted by the polynomial cutoff φ_χ̃cut(χ̃_ij) = u(n χ̃_ij) with DimeNet's envelope
u (p = 6, the paper cites DimeNet for it). The second sum of Eq. 14 then runs over all j ≠ i of the molecule
with that weight (Y(r̂_ii) is undefined, so j = i is left out); its attention coefficients use the same
filters on the Euclidean distance, which is no longer cut off. Off, χ is updated by Eq. 13 alone. With the
corrections on, the attention is computed on all pairs of each molecule (the local terms keep their
φ_rcut weight, which is 0 beyond r_cut), so the cost grows with Σ n² instead of the number of neighbours.

Where the paper is silent, eqbench follows the reference implementation (mlff, So3kratesLayer and
init_so3krates, by the paper's first author):

- attention (Eqs. 12–13, 15): multi-head, the feature vector split into equal heads; per head bias-free
  query/key maps q_i = W_q f_i, k_j = W_k f_j, α_ij = q_i^T (w_ij ⊙ k_j)/√F_head, and in Eq. 12 a value map
  v_j = W_v f_j in place of f_j. ``n_heads`` = 4 heads for the features; the SPHC branch has one head per
  degree (F/|L| features each), which gives the per-degree α^(l) of Eq. 13.
- separate filters (Eq. 16) for the feature and the SPHC branch, each φ_r: K → F → F and φ_s: |L| → F/4 → F,
  SiLU between layers and none after the last.
- φ_1 and φ_2 (Eqs. 17–18): one dense layer [f, ‖χ^(l)‖, ‖χ̃^(l)‖] (F + 2|L|) → F + |L|, split into φ_1 and
  the |L| values φ_2^(l); φ_3: one dense layer |L| → |L| (mlff's interaction block is one dense layer).
- radial basis: 32 PhysNet functions exp(−β(e^{−r} − μ_k)²) ("phys"), cutoff 5 Å, degrees {1, 2, 3},
  F = 132, 6 layers (init_so3krates defaults); the cosine cutoff φ_rcut is the paper's (Eq. 11).
- element embedding initialised N(0, 1/F) (flax's default, used by the reference).
- eqbench choices: χ_i = 0 for an atom without neighbours (C_i = 0 in Eq. 11); k_{l1,l2,l} start at 1.
  Eq. 11 normalises by C_i, so χ_i jumps from Y(r̂_ij) to 0 when the last neighbour of an atom leaves
  the cutoff: the model is smooth at r_cut as long as every atom keeps at least one neighbour.

Parameters (``eqbench.models.count_parameters``, with eqbench's F → F/2 → 1 energy head): the defaults give
601,375 (F 132, 6 layers, degrees {1, 2, 3}, 32 basis functions; 592,530 without the head). The paper's
Tab. 1 quotes ~700k for its MD17 models without listing their hyperparameters. At F 132, 3 layers,
degrees {1, 2, 3}, 4 heads and 32 basis functions eqbench has 311,776 parameters and so3krates-torch 0.2.1
321,825 (its 118 one-hot element rows and 132 → 132 → 1 energy head against eqbench's 101 rows and
132 → 66 → 1 head make up most of the difference; its interaction layer has no χ̃ inputs).

so3krates-torch 0.2.1 (the PyTorch port of the later So3krates of Frank et al., Nat. Commun. 2024) cannot
take these weights. Its layer has no cross-degree coupling χ̃ (Eq. 19, and so no φ_3 and no ‖χ̃‖ inputs),
no non-local term (Eq. 14), initialises χ to zero instead of Eq. 11, feeds its spherical filter the
Clebsch-Gordan-weighted squared norms Σ_m C^{l l 0}_{m m 0} (χ_j − χ_i)_m² instead of the L2 distances of
Eq. 15, divides attention by the average neighbour count instead of √F_head, and embeds one-hot elements
through a bias-free linear layer divided by √(number of embeddings). Its attention (per-head query, key and
value maps, one head per degree for χ) and its single dense interaction layer do have the structure above;
the parameter counts for equal hyperparameters are compared above and in ``eqbench bench`` (``reports/bench``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.errors import ModelError
from eqbench.geometry import Graph, radius_graph
from eqbench.models.base import AtomFeatures, Representation
from eqbench.nn import CosineCutoff, PolynomialEnvelope, build_mlp, segment_sum
from eqbench.nn import radial_basis as make_radial_basis
from eqbench.nn.sphc import CrossDegreeCoupling, DegreeNorms, SphericalHarmonics, safe_norm

MAX_DEGREE = 8


class RadialSphericalFilter(nn.Module):
    """w_ij = φ_r(rbf(r_ij)) + φ_s([χ_ij^(l)]_{l∈L})  (Eq. 16); radial part only without the spherical filter."""

    def __init__(self, n_rbf: int, n_degrees: int, n_features: int, activation: str, spherical: bool):
        super().__init__()
        self.radial = build_mlp(n_rbf, n_features, n_features, activation)
        self.spherical = build_mlp(n_degrees, max(n_features // 4, 1), n_features, activation) if spherical else None

    def forward(self, rbf: torch.Tensor, chi_dist: torch.Tensor) -> torch.Tensor:
        w = self.radial(rbf)
        if self.spherical is not None:
            w = w + self.spherical(chi_dist)
        return w


class HeadAttention(nn.Module):
    """α_ij per head h: q_i,h^T (w_ij,h ⊙ k_j,h) / √F_h with q = W_q f, k = W_k f per head (Eq. 15)."""

    def __init__(self, n_features: int, n_heads: int, values: bool):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, n_features // n_heads
        shape = (n_heads, self.head_dim, self.head_dim)
        bound = 1.0 / math.sqrt(self.head_dim)
        self.W_q = nn.Parameter(torch.randn(shape) * bound)
        self.W_k = nn.Parameter(torch.randn(shape) * bound)
        self.W_v = nn.Parameter(torch.randn(shape) * bound) if values else None

    @staticmethod
    def block(weight: torch.Tensor) -> torch.Tensor:
        """[F, F] block-diagonal matrix of the per-head maps: f @ block(W) applies each head's map to its slice."""
        return torch.block_diag(*weight.unbind(0))


class So3kratesLayer(nn.Module):
    """Self-attention block (Eqs. 12–16) followed by the interaction block (Eqs. 17–18)."""

    def __init__(self, n_features: int, degrees: list[int], n_heads: int, n_rbf: int, activation: str,
                 spherical_filter: bool):
        super().__init__()
        n_deg = len(degrees)
        self.n_features = n_features
        self.norms = DegreeNorms(degrees)
        self.feature_filter = RadialSphericalFilter(n_rbf, n_deg, n_features, activation, spherical_filter)
        self.sphc_filter = RadialSphericalFilter(n_rbf, n_deg, n_features, activation, spherical_filter)
        self.feature_attention = HeadAttention(n_features, n_heads, values=True)
        self.sphc_attention = HeadAttention(n_features, n_deg, values=False)  # one head per degree: α^(l)
        self.coupling = CrossDegreeCoupling(degrees)
        self.phi_12 = nn.Linear(n_features + 2 * n_deg, n_features + n_deg)
        self.phi_3 = nn.Linear(n_deg, n_deg)

    def forward(self, f, chi, rbf, sph, center, neighbor, w_feature, w_sphc):
        """w_feature [P]: φ_rcut(r_ij); w_sphc [P]: φ_rcut(r_ij) (+ φ_χ̃cut(χ̃_ij) with non-local corrections).

        The pairs come as (i, j) with i < j, then their reverses in the same order (:func:`pairs_then_reverses`).
        The filters w_ij are symmetric in i and j (they see r_ij and ‖χ_j^(l) − χ_i^(l)‖ only), so they are
        computed on the first half (``rbf`` is given for it) and serve both directions.
        """
        n_atoms, n_pairs = f.shape[0], center.shape[0]
        half = n_pairs // 2
        # index_select rather than x[index] for every gather: faster on CPU, and its backward is index_add_
        # where x[index]'s is a sorting index_put_
        chi_dist = self.norms(chi.index_select(0, neighbor[:half]) - chi.index_select(0, center[:half]))  # [P/2, |L|]
        F, att_f, att_c = self.n_features, self.feature_attention, self.sphc_attention
        w = torch.cat([self.feature_filter(rbf, chi_dist), self.sphc_filter(rbf, chi_dist)], dim=-1)  # [P/2, 2F]
        # Eq. 15 for both branches at once: [q_f | q_c]_i ⊙ [w_f | w_c]_ij ⊙ [k_f | k_c]_j summed per head
        # all five per-head maps in one product: [q_f | q_c | k_f | k_c | v_f] = f @ [F, 5F]
        maps = torch.cat([att.block(w) for att, w in ((att_f, att_f.W_q), (att_c, att_c.W_q), (att_f, att_f.W_k),
                                                       (att_c, att_c.W_k), (att_f, att_f.W_v))], dim=-1)
        # torch.split, not slicing: the backward of a slice fills a zero tensor of the whole input
        q, k, v = torch.split(f @ maps, [2 * F, 2 * F, F], dim=-1)
        q, k, v = q.index_select(0, center), k.index_select(0, neighbor), v.index_select(0, neighbor)
        # per-head sums over contiguous feature slices, in one pass over the [P, 2F] products: first into c chunks
        # of g = gcd(head sizes) features, which both branches' heads are whole numbers of (a [P, 2F] × [2F, heads]
        # product, or splitting the products by branch first, is far slower on CPU). The operands are viewed as
        # chunks before multiplying, so that the backward of the sum needs no copy to get back to [P, 2F]; the
        # small [P, 2F/g] result is then sliced per branch.
        g = math.gcd(att_f.head_dim, att_c.head_dim)
        c = 2 * F // g
        qkw = (q.view(2, half, c, g) * k.view(2, half, c, g) * w.view(half, c, g)).sum(-1).view(n_pairs, c)
        alpha = qkw[:, :F // g].unflatten(-1, (att_f.n_heads, -1)).sum(-1) / math.sqrt(att_f.head_dim)
        alpha_l = qkw[:, F // g:].unflatten(-1, (att_c.n_heads, -1)).sum(-1) / math.sqrt(att_c.head_dim)  # α^(l)
        # Eq. 12: Σ_j φ_rcut α_ij v_j per head
        v = v.reshape(-1, att_f.n_heads, att_f.head_dim)
        df = segment_sum((w_feature[:, None] * alpha)[:, :, None] * v, center, n_atoms).reshape(n_atoms, -1)
        # Eqs. 13/14
        dchi = segment_sum(self.norms.expand(w_sphc[:, None] * alpha_l) * sph, center, n_atoms)
        f, chi = f + df, chi + dchi
        # Eqs. 17–19
        chi_tilde = self.coupling(chi)
        norms_tilde = self.norms(chi_tilde)
        phi = self.phi_12(torch.cat([f, self.norms(chi), norms_tilde], dim=-1))
        phi_1, phi_2 = torch.split(phi, [self.n_features, phi.shape[-1] - self.n_features], dim=-1)
        chi = chi + self.norms.expand(phi_2) * chi + self.norms.expand(self.phi_3(norms_tilde)) * chi_tilde
        return f + phi_1, chi


def pairs_then_reverses(graph: Graph, n_atoms: int) -> Graph:
    """The same pairs reordered as [(i, j) with i < j …, then (j, i) in the same order …].

    A distance criterion is symmetric, so the list holds (j, i) for every (i, j); in this order the second
    half of any per-pair quantity that is symmetric in i and j is a copy of the first half.
    """
    with torch.no_grad():
        key = graph.center * n_atoms + graph.neighbor
        order = torch.argsort(key)
        lower = (graph.center < graph.neighbor).nonzero().squeeze(-1)
        reverse = order[torch.searchsorted(key[order], graph.neighbor[lower] * n_atoms + graph.center[lower])]
        index = torch.cat([lower, reverse])
    return Graph(graph.center[index], graph.neighbor[index], graph.vec[index], graph.dist[index])


def sphc_softmax_weights(chi: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor, n_in_molecule: torch.Tensor,
                         envelope: PolynomialEnvelope) -> torch.Tensor:
    """φ_χ̃cut(χ̃_ij) for the pairs (center i, neighbor j ≠ i): row softmax of X_ij = ‖χ_i − χ_j‖, X_ii = 0 (Eq. 14)."""
    n_atoms = chi.shape[0]
    x = safe_norm(chi.index_select(0, center) - chi.index_select(0, neighbor))  # [P]
    with torch.no_grad():  # any per-row shift gives the same softmax; X_ii = 0 bounds the maximum below
        row_max = torch.zeros(n_atoms, dtype=x.dtype, device=x.device).scatter_reduce(0, center, x, "amax")
    e = torch.exp(x - row_max.index_select(0, center))
    denom = torch.exp(-row_max) + segment_sum(e, center, n_atoms)  # the diagonal term exp(X_ii − max)
    chi_soft = e / denom.index_select(0, center)
    return envelope(chi_soft * n_in_molecule)  # u(χ̃ / χ̃_cut), χ̃_cut = 1/n


class So3krates(Representation):
    """So3krates representation (§3, Fig. 1b).

    Args:
        n_features: F, width of the features f_i (reference default 132; divisible by n_heads and |L|).
        n_interactions: n_l, number of layers (reference default 6; 4 in the paper's cumulene study).
        n_rbf: number of radial basis functions (reference default 32).
        cutoff: r_cut in Å (reference default 5.0; 2.5 in the cumulene study).
        lmax: SPHC degrees L = {1, …, lmax} (1…4 in the paper's Fig. 4); ignored when ``degrees`` is given.
        degrees: the SPHC degrees L as a set (reference default {1, 2, 3}).
        n_heads: attention heads of the feature branch (reference default 4).
        activation: of the filter networks (reference: SiLU).
        radial_basis: ``expnormal`` (PhysNet, reference default), ``gaussian``, ``bessel`` or ``sinc``.
        nonlocal_corrections: the second sum of Eq. 14 (off: the local update of Eq. 13).
        spherical_filter: φ_s in Eq. 16 (off: radial filter only, the App. A.4 ablation).
        envelope_exponent: p of the polynomial cutoff φ_χ̃cut (DimeNet's p = 6).
        max_z: largest atomic number that gets an embedding.
    """

    has_vectors = False

    def __init__(self, n_features: int = 132, n_interactions: int = 6, n_rbf: int = 32, cutoff: float = 5.0,
                 lmax: int | None = None, degrees: list[int] | tuple[int, ...] | None = None, n_heads: int = 4,
                 activation: str = "silu", radial_basis: str = "expnormal", nonlocal_corrections: bool = True,
                 spherical_filter: bool = True, envelope_exponent: int = 6, max_z: int = 100):
        super().__init__()
        if degrees is None:
            if lmax is None:
                degrees = [1, 2, 3]
            elif not 1 <= int(lmax) <= MAX_DEGREE:
                raise ModelError(f"so3krates: lmax={lmax}; set lmax between 1 and {MAX_DEGREE}")
            else:
                degrees = list(range(1, int(lmax) + 1))
        degrees = sorted({int(l) for l in degrees})
        if not degrees or degrees[0] < 0 or degrees[-1] > MAX_DEGREE:
            raise ModelError(f"so3krates: degrees={degrees}; give a non-empty set of degrees in 0…{MAX_DEGREE}")
        if n_interactions < 1:
            raise ModelError(f"so3krates: n_interactions={n_interactions}; set n_interactions to 1 or more")
        for name, parts in (("n_heads", n_heads), ("the number of degrees", len(degrees))):
            if n_features % parts:
                raise ModelError(f"so3krates: n_features={n_features} is not divisible by {name} ({parts}); "
                                 f"choose n_features as a multiple of {parts}")
        self.n_features, self.cutoff, self.activation = n_features, cutoff, activation
        self.n_interactions, self.degrees, self.lmax = n_interactions, degrees, max(degrees)
        self.nonlocal_corrections, self.spherical_filter = nonlocal_corrections, spherical_filter
        self.embedding = nn.Embedding(max_z + 1, n_features)
        # flax's default embedding init (the reference): N(0, 1/F), so ‖f⁰‖ ≈ 1. With torch's N(0, 1) the
        # attention update, cubic in f (α ∝ f², times v ∝ f), overflows within a few layers.
        nn.init.normal_(self.embedding.weight, std=n_features ** -0.5)
        self.rbf = make_radial_basis(radial_basis, n_rbf, cutoff)
        self.fcut = CosineCutoff(cutoff)
        self.sph = SphericalHarmonics(degrees)
        self.chi_envelope = PolynomialEnvelope(1.0, envelope_exponent)
        self.layers = nn.ModuleList(So3kratesLayer(n_features, degrees, n_heads, n_rbf, activation, spherical_filter)
                                    for _ in range(n_interactions))

    def pairs(self, batch: Batch) -> Graph:
        """The pairs the layers sum over: neighbours within r_cut, or all pairs with non-local corrections."""
        cutoff = math.inf if self.nonlocal_corrections else self.cutoff
        return radius_graph(batch.pos, batch.batch, batch.n_atoms, cutoff)

    def initial_sphc(self, graph: Graph, fcut: torch.Tensor, sph: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """χ⁰ from Eq. 11 (0 for an atom without neighbours)."""
        c = segment_sum(fcut, graph.center, n_atoms)
        total = segment_sum(fcut[:, None] * sph, graph.center, n_atoms)
        return total / torch.where(c > 0, c, torch.ones_like(c))[:, None]

    def run(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final features f and the SPHCs χ after initialisation and after every layer."""
        n_atoms = batch.z.shape[0]
        graph = pairs_then_reverses(self.pairs(batch), n_atoms)
        fcut = self.fcut(graph.dist)
        sph = self.sph(graph.vec)
        rbf = self.rbf(graph.dist[: graph.dist.shape[0] // 2])
        f = self.embedding(batch.z)
        chi = self.initial_sphc(graph, fcut, sph, n_atoms)
        history = [chi]
        n_in_molecule = batch.n_atoms.to(f.device)[batch.batch[graph.center]].to(f.dtype)
        for layer in self.layers:
            w_sphc = fcut
            if self.nonlocal_corrections:
                w_sphc = fcut + sphc_softmax_weights(chi, graph.center, graph.neighbor, n_in_molecule,
                                                     self.chi_envelope)
            f, chi = layer(f, chi, rbf, sph, graph.center, graph.neighbor, fcut, w_sphc)
            history.append(chi)
        return f, history

    def forward(self, batch: Batch) -> AtomFeatures:
        f, _ = self.run(batch)
        return AtomFeatures(scalar=f)
