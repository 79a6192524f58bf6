"""SchNet against a literal implementation of its equations (Schütt et al. 2017/2018), as eqbench documents them.

Explicit loops over atoms i and neighbours j (pairs of a molecule closer than r_cut), float64, tiny width;
the weights are read from an eqbench model in one place (:func:`schnet_weights`). Per interaction t:

    x_i ← x_i + v_i,   v_i = Dense_t³(ssp(Dense_t²(Σ_j W_t(r_ij) ⊙ Dense_t¹(x_j))))   (cfconv, no bias in Dense¹)
    W_t(r) = (Dense_t^f2(ssp(Dense_t^f1(e(r))))) · f_cut(r)                         (filter network of layer t)
    e_k(r) = exp(−γ (r − μ_k)²),  μ_k = k · r_cut / (K − 1),  γ = 1 / (2 Δμ²)        (Gaussian RBF, k = 0…K−1)
    f_cut(r) = ½ (cos(π r / r_cut) + 1),  ssp(x) = ln(½ eˣ + ½)

x⁰ is the embedding of Z_i; the energy is Σ_i (scale · MLP(x_i) + shift + atomref[Z_i]).
"""

import math

import pytest
import torch

from eqbench.batch import Batch
from eqbench.data.dataset import MAX_Z
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, create
from tests.model_checks import default_float64, reference_batch

F, T, K, CUTOFF = 6, 3, 9, 3.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def schnet_model(seed: int = 0) -> AtomisticModel:
    torch.manual_seed(seed)
    with default_float64():
        rep = create("schnet", n_features=F, n_interactions=T, n_rbf=K, cutoff=CUTOFF, activation="ssp",
                     radial_basis="gaussian")
    head = Energy(F, forces=True, activation="ssp")
    head.set_standardization(0.8, 0.25, torch.linspace(-1.0, 3.0, MAX_Z + 1, dtype=torch.float64))
    return AtomisticModel(rep, [head]).double().eval()


# ------------------------------------------------------------------------------------------------
# The one place that reads eqbench's module attributes.

def schnet_weights(model: AtomisticModel) -> dict:
    def lin(layer):
        return layer.weight.detach(), (None if layer.bias is None else layer.bias.detach())

    rep, head = model.representation, model.heads[0]
    layers = [{"filter1": lin(it.filter[0]), "filter2": lin(it.filter[2]), "dense1": lin(it.in2f),
               "dense2": lin(it.f2out[0]), "dense3": lin(it.dense)} for it in rep.interactions]
    return {"embedding": rep.embedding.weight.detach(), "layers": layers,
            "head": [lin(head.mlp[0]), lin(head.mlp[2])], "scale": float(head.scale), "shift": float(head.shift),
            "atomref": head.atomref.detach()}


# ------------------------------------------------------------------------------------------------
# Literal reference.

def ssp(x):
    return torch.log(0.5 * torch.exp(x) + 0.5)


def dense(layer, x):
    weight, bias = layer
    return weight @ x if bias is None else weight @ x + bias


def reference_schnet(w: dict, z, pos, mol):
    n = len(z)
    spacing = CUTOFF / (K - 1)
    mu = [k * spacing for k in range(K)]
    gamma = 1.0 / (2.0 * spacing**2)
    x = [w["embedding"][int(z[i])].clone() for i in range(n)]
    for layer in w["layers"]:
        y = [dense(layer["dense1"], x[j]) for j in range(n)]  # atom-wise, before the convolution
        v = []
        for i in range(n):
            conv = torch.zeros(F, dtype=torch.float64)
            for j in range(n):
                if j == i or mol[j] != mol[i]:
                    continue
                r_ij = pos[j] - pos[i]
                d = torch.sqrt(r_ij[0] ** 2 + r_ij[1] ** 2 + r_ij[2] ** 2)
                if float(d.detach()) >= CUTOFF:
                    continue
                e = torch.stack([torch.exp(-gamma * (d - mu[k]) ** 2) for k in range(K)])
                f_cut = 0.5 * (torch.cos(math.pi * d / CUTOFF) + 1.0)
                W = dense(layer["filter2"], ssp(dense(layer["filter1"], e))) * f_cut
                conv = conv + y[j] * W
            v.append(dense(layer["dense3"], ssp(dense(layer["dense2"], conv))))
        x = [x[i] + v[i] for i in range(n)]
    return x


def reference_energy(w: dict, z, pos, mol, n_molecules):
    x = reference_schnet(w, z, pos, mol)
    energy = [torch.zeros((), dtype=torch.float64) for _ in range(n_molecules)]
    for i in range(len(z)):
        e_i = w["scale"] * dense(w["head"][1], ssp(dense(w["head"][0], x[i])))[0] + w["shift"] + w["atomref"][int(z[i])]
        energy[int(mol[i])] = energy[int(mol[i])] + e_i
    return torch.stack(energy), x


# ------------------------------------------------------------------------------------------------

def test_features_match_literal_equations():
    model = schnet_model()
    batch = reference_batch()
    x_ref = torch.stack(reference_schnet(schnet_weights(model), batch.z, batch.pos, batch.batch))
    torch.testing.assert_close(model.representation(batch).scalar, x_ref, rtol=0, atol=1e-10)


def test_energy_and_forces_match_literal_equations():
    model = schnet_model(seed=1)
    batch = reference_batch()
    out = model(batch)
    pos = batch.pos.clone().requires_grad_(True)
    energy, _ = reference_energy(schnet_weights(model), batch.z, pos, batch.batch, batch.n_molecules)
    (grad,) = torch.autograd.grad(energy.sum(), pos)
    assert float(grad.abs().max()) > 1e-3
    torch.testing.assert_close(out["energy"], energy.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out["forces"], -grad, rtol=0, atol=1e-10)


def test_edges_at_the_cutoff():
    """Atom 4 just inside r_cut of atom 2, then just outside (the edge drops out; f_cut makes it smooth)."""
    model = schnet_model(seed=2)
    batch = reference_batch()
    w = schnet_weights(model)
    for factor in (1 - 1e-3, 1 + 1e-3):
        pos = batch.pos.clone()
        pos[4] = pos[2] + torch.tensor([CUTOFF * factor, 0.0, 0.0], dtype=torch.float64)
        x_ref = torch.stack(reference_schnet(w, batch.z, pos, batch.batch))
        features = model.representation(Batch(z=batch.z, pos=pos, batch=batch.batch, n_atoms=batch.n_atoms))
        torch.testing.assert_close(features.scalar, x_ref, rtol=0, atol=1e-10)
