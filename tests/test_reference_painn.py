"""PaiNN against a literal implementation of the paper's equations (Schütt, Unke & Gastegger 2021).

The reference below is written from the paper, not from eqbench's vectorised code: explicit loops over
atoms i and neighbours j (all pairs of a molecule closer than r_cut), float64, tiny width. It shares the
weights of an eqbench model (read in one place, :func:`painn_weights`) and must agree with it to ~1e-10
in the per-atom scalar and vector features, the energies and the forces. Symmetry tests cannot see a
wrong equation (a wrong equivariant model is still equivariant); this test can.

Equations (paper numbering), with filters W(‖r_ij‖) = (A_t · rbf(‖r_ij‖) + b_t) · f_cut(‖r_ij‖),
rbf_n(d) = sin(nπ d / r_cut) / d, n = 1…K, and f_cut(d) = ½ (cos(π d / r_cut) + 1) (§4.1):

    Δs_i = Σ_j φ_s(s_j) ∘ W_s(‖r_ij‖)                                              (7)
    Δv_i = Σ_j v_j ∘ φ_vv(s_j) ∘ W_vv(‖r_ij‖) + Σ_j φ_vs(s_j) ∘ W_vs(‖r_ij‖) r_ij/‖r_ij‖  (8)
    Δs_i = a_ss(s_i, ‖V v_i‖) + a_sv(s_i, ‖V v_i‖) ⟨U v_i, V v_i⟩                  (9)
    Δv_i = a_vv(s_i, ‖V v_i‖) U v_i                                                (10)

each block added as a residual (Fig. 2a); every interaction t has its own filters, φ, U, V and a.
"""

import math

import pytest
import torch

from eqbench.batch import Batch
from eqbench.data.dataset import MAX_Z
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, create
from tests.model_checks import default_float64, reference_batch

F, T, K, CUTOFF = 6, 3, 7, 3.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def painn_model(seed: int = 0) -> AtomisticModel:
    torch.manual_seed(seed)
    with default_float64():
        rep = create("painn", n_features=F, n_interactions=T, n_rbf=K, cutoff=CUTOFF, activation="silu")
    head = Energy(F, forces=True, activation="silu")
    # Standardisation and atom references switched on so the head's full formula is exercised.
    head.set_standardization(1.7, -0.3, torch.linspace(-2.0, 2.0, MAX_Z + 1, dtype=torch.float64))
    return AtomisticModel(rep, [head]).double().eval()


# ------------------------------------------------------------------------------------------------
# The one place that reads eqbench's module attributes. Split orders are eqbench's documented
# conventions: φ's output and each layer's filters are (s, vs, vv); a's output is (a_vv, a_ss, a_sv).

def painn_weights(model: AtomisticModel) -> dict:
    from eqbench.models import painn as painn_module

    rep, head = model.representation, model.heads[0]
    w = {"embedding": rep.embedding.weight.detach(), "norm_eps": painn_module.NORM_EPS, "layers": []}
    filter_w = rep.filters.weight.detach().split(3 * F, dim=0)
    filter_b = rep.filters.bias.detach().split(3 * F, dim=0)
    for t in range(T):
        phi, upd = rep.messages[t].phi, rep.updates[t]
        w["layers"].append({
            "filter": dict(zip(("s", "vs", "vv"), zip(filter_w[t].split(F, 0), filter_b[t].split(F, 0)))),
            "phi": [(phi[0].weight.detach(), phi[0].bias.detach()), (phi[2].weight.detach(), phi[2].bias.detach())],
            "phi_split": ("s", "vs", "vv"),
            "U": upd.U.weight.detach(), "V": upd.V.weight.detach(),
            "a": [(upd.a[0].weight.detach(), upd.a[0].bias.detach()),
                  (upd.a[2].weight.detach(), upd.a[2].bias.detach())],
            "a_split": ("vv", "ss", "sv"),
        })
    w["head"] = [(head.mlp[0].weight.detach(), head.mlp[0].bias.detach()),
                 (head.mlp[2].weight.detach(), head.mlp[2].bias.detach())]
    w["scale"], w["shift"], w["atomref"] = float(head.scale), float(head.shift), head.atomref.detach()
    return w


# ------------------------------------------------------------------------------------------------
# Literal reference, written from the paper.

def silu(x):
    return x / (1.0 + torch.exp(-x))


def dense(layer, x):
    weight, bias = layer
    return weight @ x + bias


def two_layer(layers, x):
    """Atomwise network of Fig. 2: Dense → SiLU → Dense."""
    return dense(layers[1], silu(dense(layers[0], x)))


def split(x, names):
    return dict(zip(names, x.split(F)))


def reference_painn(w: dict, z, pos, mol):
    """Per-atom s_i [F] and v_i [3, F] (lists), by explicit loops over atoms, neighbours and components."""
    n = len(z)
    s = [w["embedding"][int(z[i])].clone() for i in range(n)]  # s⁰ = embedding of Z_i
    v = [torch.zeros(3, F, dtype=torch.float64) for _ in range(n)]  # v⁰ = 0
    for t in range(T):
        layer = w["layers"][t]
        # Message block, Eqs. 7 and 8: all messages are computed from the features before the block.
        ds_all, dv_all = [], []
        for i in range(n):
            ds = torch.zeros(F, dtype=torch.float64)
            dv = torch.zeros(3, F, dtype=torch.float64)
            for j in range(n):
                if j == i or mol[j] != mol[i]:
                    continue
                r_ij = pos[j] - pos[i]
                d = torch.sqrt(r_ij[0] ** 2 + r_ij[1] ** 2 + r_ij[2] ** 2)
                if float(d.detach()) >= CUTOFF:
                    continue
                rbf = torch.stack([torch.sin(k * math.pi * d / CUTOFF) / d for k in range(1, K + 1)])
                f_cut = 0.5 * (torch.cos(math.pi * d / CUTOFF) + 1.0)
                W = {key: (dense(wb, rbf)) * f_cut for key, wb in layer["filter"].items()}
                phi = split(two_layer(layer["phi"], s[j]), layer["phi_split"])
                ds = ds + phi["s"] * W["s"]  # (7)
                for c in range(3):  # (8), component c of the vectors
                    dv[c] = dv[c] + v[j][c] * phi["vv"] * W["vv"] + phi["vs"] * W["vs"] * (r_ij[c] / d)
            ds_all.append(ds)
            dv_all.append(dv)
        s = [s[i] + ds_all[i] for i in range(n)]
        v = [v[i] + dv_all[i] for i in range(n)]
        # Update block, Eqs. 9 and 10, atom by atom.
        for i in range(n):
            Uv = [layer["U"] @ v[i][c] for c in range(3)]
            Vv = [layer["V"] @ v[i][c] for c in range(3)]
            norm_Vv = torch.sqrt(Vv[0] ** 2 + Vv[1] ** 2 + Vv[2] ** 2 + w["norm_eps"])
            a = split(two_layer(layer["a"], torch.cat([s[i], norm_Vv])), layer["a_split"])
            scalar_product = Uv[0] * Vv[0] + Uv[1] * Vv[1] + Uv[2] * Vv[2]
            s_new = s[i] + a["ss"] + a["sv"] * scalar_product  # (9)
            v_new = torch.stack([v[i][c] + a["vv"] * Uv[c] for c in range(3)])  # (10)
            s[i], v[i] = s_new, v_new
    return s, v


def reference_energy(w: dict, z, pos, mol, n_molecules):
    """E_m = Σ_{i ∈ m} (scale · MLP(s_i) + shift + atomref[Z_i]) (output block of Fig. 2a)."""
    s, v = reference_painn(w, z, pos, mol)
    energy = [torch.zeros((), dtype=torch.float64) for _ in range(n_molecules)]
    for i in range(len(z)):
        e_i = w["scale"] * two_layer(w["head"], s[i])[0] + w["shift"] + w["atomref"][int(z[i])]
        energy[int(mol[i])] = energy[int(mol[i])] + e_i
    return torch.stack(energy), s, v


# ------------------------------------------------------------------------------------------------

def test_features_match_literal_equations():
    model = painn_model()
    batch = reference_batch()
    features = model.representation(batch)
    s_ref, v_ref = reference_painn(painn_weights(model), batch.z, batch.pos, batch.batch)
    s_ref, v_ref = torch.stack(s_ref), torch.stack(v_ref)
    assert float(v_ref.abs().max()) > 1e-2, "vector features vanish: the test would not see Eqs. 8–10"
    torch.testing.assert_close(features.scalar, s_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(features.vector, v_ref, rtol=0, atol=1e-10)


def test_energy_and_forces_match_literal_equations():
    model = painn_model(seed=1)
    batch = reference_batch()
    out = model(batch)
    pos = batch.pos.clone().requires_grad_(True)
    energy, _, _ = reference_energy(painn_weights(model), batch.z, pos, batch.batch, batch.n_molecules)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    torch.testing.assert_close(out["energy"], energy.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["forces"], -grad, rtol=0, atol=1e-10)
    assert float(grad.abs().max()) > 1e-3


def test_every_layer_has_its_own_filters():
    """Sharing layer 0's filters must change the result (the reference uses each layer's slice)."""
    model = painn_model(seed=2)
    batch = reference_batch()
    w = painn_weights(model)
    shared = dict(w, layers=[dict(layer, filter=w["layers"][0]["filter"]) for layer in w["layers"]])
    s_own, _ = reference_painn(w, batch.z, batch.pos, batch.batch)
    s_shared, _ = reference_painn(shared, batch.z, batch.pos, batch.batch)
    assert float((torch.stack(s_own) - torch.stack(s_shared)).abs().max()) > 1e-4
    torch.testing.assert_close(model.representation(batch).scalar, torch.stack(s_own), rtol=0, atol=1e-10)


def test_edges_at_the_cutoff():
    """Atom 4 just inside r_cut of atom 2 (filters almost zero), then just outside (the edge drops out)."""
    model = painn_model(seed=3)
    batch = reference_batch()
    w = painn_weights(model)
    for factor in (1 - 1e-3, 1 + 1e-3):
        pos = batch.pos.clone()
        pos[4] = pos[2] + torch.tensor([CUTOFF * factor, 0.0, 0.0], dtype=torch.float64)
        s_ref, v_ref = reference_painn(w, batch.z, pos, batch.batch)
        features = model.representation(Batch(z=batch.z, pos=pos, batch=batch.batch, n_atoms=batch.n_atoms))
        torch.testing.assert_close(features.scalar, torch.stack(s_ref), rtol=0, atol=1e-10)
        torch.testing.assert_close(features.vector, torch.stack(v_ref), rtol=0, atol=1e-10)
