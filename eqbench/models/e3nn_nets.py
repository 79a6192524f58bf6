"""e3nn L0Net / L1Net (Miller, Geiger, Smidt & Noé 2020): rotationally invariant vs equivariant convolutions.

Built on the e3nn library (``o3.Irreps``, ``o3.spherical_harmonics``, ``o3.TensorProduct``,
``nn.Gate``, ``nn.FullyConnectedNet``). One model, :class:`E3nnNet`; the paper's networks are presets:

- ``l1net`` (:class:`L1Net`): features and filters up to ℓ = 1 (``lmax=1``), 83 scalars + 29 vectors.
- ``l0net`` (:class:`L0Net`): ``lmax=0``; the 29 ℓ = 1 channels are dropped and the scalar multiplicity
  grows by 3 × 29 = 87 (§2.1, ``l0_width_rule=True``), so every layer carries as many feature
  components (83 + 87 = 170) as the L1Net (83 + 3·29).
- ``l0net_deep`` (:class:`L0NetDeep`): the L0Net with one more Convolution & Gated Block.

Architecture (§2, Fig. 1). Atom-wise embedding of the element (a dense layer on the one-hot element,
written as an embedding table), then ``n_interactions`` Convolution & Gated Blocks on the hidden
features F = u₀ × ℓ=0 ⊕ u₁ × ℓ=1 (⊕ u₁ × ℓ=2 … up to ``lmax``), each after the first added to its input
(residual), then a last Convolution & Gated Block restricted to ``n_out`` scalars. Those scalars are
the atom features (``AtomFeatures.scalar``); the atom-wise output layers and the shift, scale and sum
belong to eqbench's heads (below).

Radial basis, Eq. (2): φ_k(d) = cos²(π/2 · (d − μ_k)/(μ_{k+1} − μ_k)) on ``n_rbf`` = 84 centres evenly
spaced on 0–11.1 Å (:class:`eqbench.nn.CosineSquaredRBF`). Each convolution has its own radial MLP
(e3nn ``FullyConnectedNet``, no biases, so R = 0 where every φ_k = 0) from √n_rbf · φ(d) (unit second
moment; the cos² functions sum to 1) to all R^{ℓout ℓin ℓf}_{uv}.

Convolution, Eq. (3):

    F̃^{ℓout}_{ui,A} = Σ_{B ℓf ℓin v j k} C^{ℓout ℓin ℓf}_{ijk} Y^{ℓf}_k(r̂_AB) R^{ℓout ℓin ℓf}_{uv}(d_AB)
                       · n^{ℓout ℓin} F^{ℓin}_{vj,B}

with C the Clebsch–Gordan coefficients (e3nn's ``o3.wigner_3j``, unit Frobenius norm), Y the
spherical harmonics with integral normalisation (Σ_k Y_k² = (2ℓ+1)/4π), every filter degree
|ℓin − ℓout| ≤ ℓf ≤ min(ℓin + ℓout, lmax), and the normalisation of App. Eq. (13),

    (n^{ℓout ℓin})² = 4π(2ℓout + 1) / ((Σ_v 1)(Σ_ℓf 1)(Σ_ℓin 1)),

Σ_v 1 the multiplicity of ℓin, Σ_ℓf 1 the filter degrees joining ℓin to ℓout and Σ_ℓin 1 the input
degrees reaching ℓout. The paper's networks are SE(3)-equivariant (rotations, no reflections): every
irrep carries e3nn's even parity label, so the tensor product keeps every SO(3) path, including
ℓ=1 ⊗ ℓ=1 → ℓ=1 (the cross product). As in the paper's code (e3nn's dense kernel convolution over all
pairs of a molecule), the sum over B includes B = A at r = 0, where only ℓf = 0 survives
(Y⁰ = 1/√4π, Y^{ℓ>0}(0) = 0) and φ(0) is the first basis function (``self_interaction``), and the
features are divided by √``avg_n_atoms`` (QM9: 18) before each convolution.

Gated Block (§2): scalars → Softplus, each ℓ ≥ 1 channel × Sigmoid(its own extra scalar, the gates);
e3nn's ``Gate`` rescales both activations to unit second moment under a unit normal input.

Output, shift, scale and sum (§2, App. 4.2, Eqs. 14–16) are eqbench's standard heads: the
:class:`eqbench.heads.Energy` / ``Atomwise`` head (sum aggregation) computes
t̂_m = Σ_a ref(Z_a) + Σ_a (t̄ + σ · MLP(s_a)) with the training split's atom references (Eq. 14, QM9's
atomref table, App. Tab. 2), the mean t̄ and standard deviation σ of (t_m − p_m)/A_m (Eq. 15) set by
the task's standardisation: exactly Eq. (16) with ℛ_a = MLP(s_a). The MLP is the head's two-layer
atom-wise network n_out → n_out/2 → 1 with ``activation`` (the paper's output MLP: ReLU, 1–3 layers).

Hyperparameters. The paper names the search ranges (App. Tab. 3) and of the winner only the 29 ℓ=1
channels and the cos² basis (84 centres, 0–11.1 Å); the rest of the ``l1net`` preset takes the
middle of each searched range: 112 featurisation components (= 83 scalars + 29 vectors; range
80–144), embedding 112 (80–144), radial MLP 2 hidden layers of 112 (1–3 layers, 80–144), 96 output
scalars (64–128) in 1 output Convolution & Gated Block (§2: the last one is scalar-only), and 2
featurisation blocks (the text of §4.3 names two). Radial MLP activation: SiLU (swish, the default
of e3nn's radial models; the paper does not say).

Parameter counts (with the standard energy head n_out → n_out/2 → 1; eqbench embeds Z = 0…100):

- ``l1net``: 4,917,697.
- ``l0net`` by the paper's width rule (170 scalars): 7,278,993, 48 % more than the L1Net, because the
  paths 0 ⊗ 0 → 0 carry u₀² radial weights per layer: the rule keeps the feature dimension (170
  components per layer), not the parameter count.
- ``l0net`` matched to the L1Net's parameter count instead (``eqbench.sweep.match_width("e3nn",
  {"lmax": 1}, {"lmax": 0})``, varying ``n_features``): 128 scalars, 4,898,769 parameters (−0.4 %).
- ``l0net_deep`` (rule): 10,537,745.

Precision: e3nn tabulates its Clebsch–Gordan coefficients in the default dtype when the model is built;
for float64 work build it under ``torch.set_default_dtype(torch.float64)`` (``.double()`` afterwards
keeps float32 round-off, ~1e-7, in those tables).

Training cost: one training step of the ``l1net`` preset on 50 QM9-size molecules (18 atoms, all
15,300 pairs within the 11.2 Å neighbour radius) took 21–24 CPU seconds on the development machine
(float32, 2 threads); the radial MLPs' last layers, one weight per edge and path, dominate.
"""

from __future__ import annotations

import math

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn
from torch.nn import functional as F

from eqbench.batch import Batch
from eqbench.errors import ModelError
from eqbench.geometry import radius_graph
from eqbench.models.base import AtomFeatures, Representation
from eqbench.nn import CosineSquaredRBF, segment_sum


def _l1_to_xyz() -> list[int]:
    """Indices that take e3nn's ℓ = 1 components to Cartesian (x, y, z).

    e3nn before 0.6 ordered them (y, z, x); e3nn 0.6 orders them (x, y, z). Read off the installed
    version's spherical harmonics: component c(a) is the one that peaks on the Cartesian axis a.
    """
    y = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=True)
    return [int(y[a].abs().argmax()) for a in range(3)]


L1_TO_XYZ = _l1_to_xyz()


def hidden_irreps(n_scalars: int, n_vectors: int, lmax: int) -> o3.Irreps:
    """u₀ × ℓ=0 ⊕ u₁ × ℓ=1 ⊕ … ⊕ u₁ × ℓ=lmax, all with the even parity label (SO(3) irreps)."""
    parts = [(n_scalars, (0, 1))] + [(n_vectors, (ell, 1)) for ell in range(1, lmax + 1)]
    return o3.Irreps([(mul, ir) for mul, ir in parts if mul > 0])


def convolution_instructions(irreps_in: o3.Irreps, irreps_out: o3.Irreps, lmax_filter: int
                             ) -> list[tuple[int, int, int, str, bool, float]]:
    """Paths (ℓin, ℓf) → ℓout of Eq. (3) with the squared normalisation n² of App. Eq. (13) as path weight."""
    instructions = []
    for i_out, (_, ir_out) in enumerate(irreps_out):
        l_out = ir_out.l
        paths = [(i_in, l_f) for i_in, (_, ir_in) in enumerate(irreps_in)
                 for l_f in range(lmax_filter + 1) if abs(ir_in.l - l_out) <= l_f <= ir_in.l + l_out]
        n_lin = len({irreps_in[i_in].ir.l for i_in, _ in paths})
        for i_in, l_f in paths:
            mul_in, ir_in = irreps_in[i_in]
            n_lf = sum(1 for j, _ in paths if j == i_in)
            norm2 = 4 * math.pi * (2 * l_out + 1) / (mul_in * n_lf * n_lin)
            instructions.append((i_in, l_f, i_out, "uvw", True, norm2))
    return instructions


class Convolution(nn.Module):
    """Eq. (3): Σ_B Σ_paths C Y(r̂_AB) R(d_AB) n F_B, R from this layer's radial MLP on the cos² basis."""

    def __init__(self, irreps_in, irreps_out, lmax_filter: int, n_rbf: int, radial_neurons: int,
                 radial_layers: int, radial_activation):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps([(1, (ell, 1)) for ell in range(lmax_filter + 1)])
        instructions = convolution_instructions(self.irreps_in, self.irreps_out, lmax_filter)
        missing = {i for i in range(len(self.irreps_out))} - {ins[2] for ins in instructions}
        if missing:
            raise ModelError(f"e3nn convolution {self.irreps_in} → {self.irreps_out}: no path reaches "
                             f"{[str(self.irreps_out[i]) for i in sorted(missing)]}; raise lmax")
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_out, instructions,
                                   irrep_normalization="none", path_normalization="none",
                                   internal_weights=False, shared_weights=False)
        self.radial = e3nn_nn.FullyConnectedNet([n_rbf] + [radial_neurons] * radial_layers + [self.tp.weight_numel],
                                                radial_activation)

    def forward(self, x, sh, rbf, center, neighbor, self_sh=None, self_rbf=None):
        out = segment_sum(self.tp(x[neighbor], sh, self.radial(rbf)), center, x.shape[0])
        if self_sh is not None:  # B = A: r = 0, only ℓf = 0
            w = self.radial(self_rbf).expand(x.shape[0], -1)
            out = out + self.tp(x, self_sh.expand(x.shape[0], -1), w)
        return out


def gated_block(irreps_out: o3.Irreps) -> tuple[nn.Module, o3.Irreps]:
    """Gated Block (§2) for output ``irreps_out``; returns it and the irreps the convolution must produce.

    Scalars: Softplus; each ℓ ≥ 1 channel: × Sigmoid(one extra scalar). e3nn's Gate expects the
    convolution output ordered scalars, gates, gated.
    """
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    if gated.num_irreps == 0:
        return e3nn_nn.Activation(scalars, [F.softplus]), scalars
    gates = o3.Irreps([(gated.num_irreps, (0, 1))])
    gate = e3nn_nn.Gate(scalars, [F.softplus], gates, [torch.sigmoid], gated)
    return gate, gate.irreps_in


class E3nnNet(Representation):
    """Miller et al.'s e3nn network: embedding, Convolution & Gated Blocks with residuals, scalar output block.

    Args:
        n_features: u₀, scalar multiplicity of the hidden features (l1net: 83).
        n_vectors: u₁, multiplicity of each degree 1 ≤ ℓ ≤ lmax (the paper's L1Net: 29).
        lmax: highest degree of features and filters: 0 = L0Net (invariant), 1 = L1Net, 2 and 3 extend it.
        n_interactions: Convolution & Gated Blocks before the scalar output block (paper: 2; L0Net Deep: 3).
            The network has n_interactions + 1 convolutions.
        n_embedding: width of the element embedding (paper's range 80–144; 112).
        n_out: scalars of the last, scalar-only Convolution & Gated Block = the atom feature width
            handed to the heads (``n_features`` attribute of the instance; paper's range 64–128; 96).
        n_rbf, cutoff: the cos² basis of Eq. (2): n_rbf centres on [0, cutoff] Å (paper: 84, 11.1).
            Neighbours are taken up to cutoff + spacing, where the last basis function vanishes.
        radial_neurons, radial_layers: hidden width and number of hidden layers of each radial MLP.
        activation: of the heads' atom-wise output layers (paper: ReLU).
        radial_activation: of the radial MLPs (``silu`` or ``relu``).
        l0_width_rule: with lmax = 0, add 3 · n_vectors scalars (the paper's L0Net: 83 + 87).
        self_interaction: include B = A (r = 0) in the sum of Eq. (3), as the paper's code does.
        avg_n_atoms: features are divided by √avg_n_atoms before each convolution (QM9: 18).
        max_z: largest atomic number that gets an embedding.
    """

    has_vectors = True  # per instance: lmax ≥ 1

    def __init__(self, n_features: int = 83, n_vectors: int = 29, lmax: int = 1, n_interactions: int = 2,
                 n_embedding: int = 112, n_out: int = 96, n_rbf: int = 84, cutoff: float = 11.1,
                 radial_neurons: int = 112, radial_layers: int = 2, activation: str = "relu",
                 radial_activation: str = "silu", l0_width_rule: bool = False, self_interaction: bool = True,
                 avg_n_atoms: float = 18.0, max_z: int = 100):
        super().__init__()
        if not 0 <= lmax <= 3:
            raise ModelError(f"e3nn: lmax={lmax}; choose 0 (L0Net), 1 (L1Net), 2 or 3")
        if n_interactions < 1:
            raise ModelError(f"e3nn: n_interactions={n_interactions}; set n_interactions to 1 or more")
        if l0_width_rule and lmax != 0:
            raise ModelError(f"e3nn: l0_width_rule widens an L0Net (lmax=0) by 3·n_vectors scalars; got lmax={lmax}. "
                             "Set lmax: 0 or l0_width_rule: false")
        if lmax >= 1 and n_vectors < 1:
            raise ModelError(f"e3nn: lmax={lmax} needs n_vectors ≥ 1; got {n_vectors}")
        if lmax >= 1 and n_vectors > n_out:
            raise ModelError(f"e3nn: n_vectors={n_vectors} > n_out={n_out}; the heads see the vectors as "
                             f"[N, 3, n_out] features, so set n_out ≥ n_vectors")
        acts = {"silu": F.silu, "swish": F.silu, "relu": F.relu}
        if radial_activation not in acts:
            raise ModelError(f"e3nn: radial_activation={radial_activation!r}; choose one of {sorted(acts)}")
        n_scalars = n_features + (3 * n_vectors if l0_width_rule else 0)
        self.n_scalars, self.n_vectors, self.lmax = n_scalars, (n_vectors if lmax else 0), lmax
        # n_features of a representation is the width of its atom features: here the output block's n_out.
        self.n_features, self.activation = n_out, activation
        self.has_vectors = lmax >= 1
        self.n_interactions = n_interactions
        self.self_interaction = self_interaction
        self.norm = 1.0 / math.sqrt(avg_n_atoms)

        self.rbf = CosineSquaredRBF(n_rbf, cutoff)
        self.cutoff = self.rbf.support  # the neighbour-list radius
        self.radial_cutoff = cutoff
        self.embedding = nn.Embedding(max_z + 1, n_embedding)

        self.irreps_hidden = hidden_irreps(n_scalars, self.n_vectors, lmax)
        irreps = o3.Irreps([(n_embedding, (0, 1))])
        radial = (n_rbf, radial_neurons, radial_layers, acts[radial_activation])
        self.convolutions, self.gates = nn.ModuleList(), nn.ModuleList()
        for _ in range(n_interactions):
            gate, conv_out = gated_block(self.irreps_hidden)
            self.convolutions.append(Convolution(irreps, conv_out, lmax, *radial))
            self.gates.append(gate)
            irreps = self.irreps_hidden
        self.irreps_out = o3.Irreps([(n_out, (0, 1))])
        gate, conv_out = gated_block(self.irreps_out)
        self.convolutions.append(Convolution(irreps, conv_out, lmax, *radial))
        self.gates.append(gate)

    def spherical_harmonics(self, unit: torch.Tensor) -> torch.Tensor:
        """Y^ℓ_k(r̂) for ℓ = 0…lmax, integral normalisation, e3nn's component order (see ``L1_TO_XYZ``)."""
        return o3.spherical_harmonics(list(range(self.lmax + 1)), unit, normalize=False, normalization="integral")

    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The ℓ = 1 channels of hidden features x as Cartesian vectors [N, 3, n_out] (zero-padded channels)."""
        start = self.n_scalars
        v = x[:, start:start + 3 * self.n_vectors].reshape(x.shape[0], self.n_vectors, 3)[:, :, L1_TO_XYZ]
        return F.pad(v.transpose(1, 2), (0, self.n_features - self.n_vectors))

    def forward(self, batch: Batch) -> AtomFeatures:
        graph = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff)
        scale = math.sqrt(self.rbf.n_rbf)  # unit second moment of the radial MLP's input
        rbf = self.rbf(graph.dist) * scale
        sh = self.spherical_harmonics(graph.vec / graph.dist[:, None])
        self_sh = self_rbf = None
        if self.self_interaction:
            # Spherical harmonics at r = 0 (the B = A term): Y⁰ = 1/√4π, higher degrees vanish.
            self_sh = rbf.new_zeros(1, (self.lmax + 1) ** 2)
            self_sh[0, 0] = 1.0 / math.sqrt(4 * math.pi)
            self_rbf = self.rbf(graph.dist.new_zeros(1)) * scale
        edges = (sh, rbf, graph.center, graph.neighbor, self_sh, self_rbf)
        x = self.embedding(batch.z)
        vectors = None
        for k, (conv, gate) in enumerate(zip(self.convolutions, self.gates)):
            last = k == len(self.convolutions) - 1
            if last and self.has_vectors:
                vectors = self.vectors(x)
            y = gate(conv(x * self.norm, *edges))
            x = x + y if 0 < k and not last else y  # residual where input and output irreps agree
        return AtomFeatures(scalar=x, vector=vectors)


class L1Net(E3nnNet):
    """Miller et al.'s L1Net: ``E3nnNet`` with lmax = 1 (83 scalars + 29 vectors)."""

    def __init__(self, n_features: int = 83, n_vectors: int = 29, lmax: int = 1, n_interactions: int = 2,
                 **kwargs):
        super().__init__(n_features=n_features, n_vectors=n_vectors, lmax=lmax, n_interactions=n_interactions,
                         **kwargs)


class L0Net(E3nnNet):
    """Miller et al.'s L0Net: lmax = 0 with the 29 vectors' 87 components as extra scalars (170 scalars)."""

    def __init__(self, n_features: int = 83, n_vectors: int = 29, lmax: int = 0, n_interactions: int = 2,
                 l0_width_rule: bool = True, **kwargs):
        super().__init__(n_features=n_features, n_vectors=n_vectors, lmax=lmax, n_interactions=n_interactions,
                         l0_width_rule=l0_width_rule, **kwargs)


class L0NetDeep(L0Net):
    """Miller et al.'s L0Net Deep: the L0Net with one more Convolution & Gated Block (3 + output)."""

    def __init__(self, n_features: int = 83, n_vectors: int = 29, lmax: int = 0, n_interactions: int = 3,
                 l0_width_rule: bool = True, **kwargs):
        super().__init__(n_features=n_features, n_vectors=n_vectors, lmax=lmax, n_interactions=n_interactions,
                         l0_width_rule=l0_width_rule, **kwargs)
