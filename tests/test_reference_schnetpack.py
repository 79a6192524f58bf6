"""Weight transfer from the reference implementation, schnetpack 2.1.1: PaiNN and SchNet.

schnetpack's models (PaiNN with its sin(nπ r/r_c)/r basis, SchNet with Gaussians; cosine cutoff; a
F → F/2 → 1 atomwise SiLU head; forces by autograd) are built with random weights, the weights are
mapped into eqbench's models, and energies, forces and per-atom features must agree in float64.
schnetpack is a test-only peer: the tests skip when it is not installed.

The mapping of module attributes lives in :func:`painn_from_schnetpack` and :func:`schnet_from_schnetpack`.
"""

import pytest
import torch

from eqbench.batch import Batch
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, create
from tests.model_checks import reference_batch


def import_schnetpack():
    try:
        import torch.utils.data.dataloader as dl

        if not hasattr(dl, "T_co") and hasattr(dl, "_T_co"):
            dl.T_co = dl._T_co  # schnetpack 2.1.1 imports a name that newer torch renamed
        import schnetpack
    except ImportError as err:
        pytest.skip(f"schnetpack is not installed ({err}); `make bench-peers` installs it")
    return schnetpack


F, K, CUTOFF = 8, 9, 3.0


@pytest.fixture(autouse=True)
def float64_one_thread():
    before_dtype, before_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(before_dtype)
    torch.set_num_threads(before_threads)


def schnetpack_inputs(spk, batch: Batch) -> dict:
    """schnetpack's input dict with a brute-force neighbour list (all pairs i ≠ j of a molecule within r_cut)."""
    idx_i, idx_j = [], []
    for i in range(len(batch.z)):
        for j in range(len(batch.z)):
            if i != j and batch.batch[i] == batch.batch[j] and float((batch.pos[i] - batch.pos[j]).norm()) < CUTOFF:
                idx_i.append(i)
                idx_j.append(j)
    p = spk.properties
    return {p.Z: batch.z.clone(), p.R: batch.pos.clone(), p.idx_i: torch.tensor(idx_i), p.idx_j: torch.tensor(idx_j),
            p.offsets: torch.zeros(len(idx_i), 3), p.n_atoms: batch.n_atoms.clone(), p.idx_m: batch.batch.clone(),
            p.cell: torch.zeros(batch.n_molecules, 3, 3), p.pbc: torch.zeros(batch.n_molecules, 3, dtype=torch.bool)}


def schnetpack_potential(spk, representation):
    return spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=F, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")],
    )


def copy_linear(dst: torch.nn.Linear, src: torch.nn.Linear) -> None:
    dst.weight.copy_(src.weight)
    if dst.bias is not None:
        dst.bias.copy_(src.bias)


# ------------------------------------------------------------------------------------------------
# The one place that maps schnetpack's module attributes onto eqbench's.

@torch.no_grad()
def copy_head(model: AtomisticModel, potential) -> None:
    outnet = potential.output_modules[0].outnet  # Dense(F, F/2, silu), Dense(F/2, 1)
    copy_linear(model.heads[0].mlp[0], outnet[0])
    copy_linear(model.heads[0].mlp[2], outnet[1])


@torch.no_grad()
def painn_from_schnetpack(model: AtomisticModel, potential) -> None:
    """schnetpack's interaction = eqbench's message (split s, vs, vv in both); schnetpack's mixing = eqbench's
    update: mu_channel_mix = [V; U] (the norm is taken of the first half), and the context net's output
    (Δq, Δμ, Δqμ) = eqbench's (a_ss, a_vv, a_sv), which eqbench orders (a_vv, a_ss, a_sv)."""
    rep, spk_rep = model.representation, potential.representation
    n_emb = spk_rep.embedding.weight.shape[0]
    rep.embedding.weight[:n_emb] = spk_rep.embedding.weight
    copy_linear(rep.filters, spk_rep.filter_net)
    for message, interaction in zip(rep.messages, spk_rep.interactions):
        copy_linear(message.phi[0], interaction.interatomic_context_net[0])
        copy_linear(message.phi[2], interaction.interatomic_context_net[1])
    for update, mixing in zip(rep.updates, spk_rep.mixing):
        mix = mixing.mu_channel_mix.weight
        update.V.weight.copy_(mix[:F])
        update.U.weight.copy_(mix[F:])
        copy_linear(update.a[0], mixing.intraatomic_context_net[0])
        out = mixing.intraatomic_context_net[1]
        for ours, theirs in ((update.a[2].weight, out.weight), (update.a[2].bias, out.bias)):
            a_ss, a_vv, a_sv = theirs.split(F)
            ours.copy_(torch.cat([a_vv, a_ss, a_sv]))
    copy_head(model, potential)


@torch.no_grad()
def schnet_from_schnetpack(model: AtomisticModel, potential) -> None:
    rep, spk_rep = model.representation, potential.representation
    n_emb = spk_rep.embedding.weight.shape[0]
    rep.embedding.weight[:n_emb] = spk_rep.embedding.weight
    for ours, theirs in zip(rep.interactions, spk_rep.interactions):
        copy_linear(ours.filter[0], theirs.filter_network[0])
        copy_linear(ours.filter[2], theirs.filter_network[1])
        copy_linear(ours.in2f, theirs.in2f)
        copy_linear(ours.f2out[0], theirs.f2out[0])
        copy_linear(ours.dense, theirs.f2out[1])
    copy_head(model, potential)


# ------------------------------------------------------------------------------------------------

def compare(model: AtomisticModel, potential, spk, vectors: bool) -> None:
    batch = reference_batch()
    theirs = potential(schnetpack_inputs(spk, batch))
    their_features = potential.representation(potential.input_modules[0](schnetpack_inputs(spk, batch)))
    ours = model(batch)
    features = model.representation(batch)
    assert float(theirs["forces"].detach().abs().max()) > 1e-3
    torch.testing.assert_close(features.scalar, their_features["scalar_representation"].detach(), rtol=0, atol=1e-10)
    if vectors:
        torch.testing.assert_close(features.vector, their_features["vector_representation"].detach(),
                                   rtol=0, atol=1e-10)
    torch.testing.assert_close(ours["energy"], theirs["energy"].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(ours["forces"], theirs["forces"].detach(), rtol=0, atol=1e-10)


def test_painn_matches_schnetpack():
    spk = import_schnetpack()
    torch.manual_seed(0)
    potential = schnetpack_potential(spk, spk.representation.PaiNN(
        n_atom_basis=F, n_interactions=3, radial_basis=spk.nn.BesselRBF(n_rbf=K, cutoff=CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF)))
    # schnetpack initialises some biases at zero; random ones make a wrong mapping visible.
    with torch.no_grad():
        for name, p in potential.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    rep = create("painn", n_features=F, n_interactions=3, n_rbf=K, cutoff=CUTOFF, activation="silu")
    model = AtomisticModel(rep, [Energy(F, forces=True, activation="silu")]).eval()
    painn_from_schnetpack(model, potential)
    compare(model, potential, spk, vectors=True)


def test_schnet_matches_schnetpack():
    spk = import_schnetpack()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)  # schnetpack's GaussianRBF builds its widths as a FloatTensor
    gaussians = spk.nn.GaussianRBF(n_rbf=K, cutoff=CUTOFF).double()  # centres k·0.375 Å: exact in float32
    torch.set_default_dtype(torch.float64)
    potential = schnetpack_potential(spk, spk.representation.SchNet(
        n_atom_basis=F, n_interactions=3, radial_basis=gaussians,
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF)))
    with torch.no_grad():
        for name, p in potential.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    rep = create("schnet", n_features=F, n_interactions=3, n_rbf=K, cutoff=CUTOFF, activation="ssp",
                 radial_basis="gaussian")
    model = AtomisticModel(rep, [Energy(F, forces=True, activation="silu")]).eval()
    schnet_from_schnetpack(model, potential)
    compare(model, potential, spk, vectors=False)
