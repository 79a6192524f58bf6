"""What the benchmark times: eqbench's models and the peers' implementations behind one interface.

A :class:`Contender` wraps one model (with its energy head) and answers three calls on inputs it
prepared itself (untimed): ``energy``, ``energy_forces`` (create_graph while training) and the
parameter count. eqbench's models build their neighbour list inside the forward pass, as in
training. Peers are handed eqbench's neighbour list (and triplets) precomputed in ``prepare``, so
their times are the model's cost. Peer packages are imported only when a peer is built; a peer
that is not installed, or cannot run here, is skipped with the reason.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.geometry import radius_graph, triplets


class PeerUnavailable(Exception):
    """A peer cannot run here; the message is the reason shown in the table."""


class Contender:
    label: str  # "eqbench", "schnetpack", "pyg", ...
    module: nn.Module

    def prepare(self, batch: Batch):
        return batch

    def energy(self, inputs) -> torch.Tensor:
        raise NotImplementedError

    def energy_forces(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


def _forces(energy: torch.Tensor, pos: torch.Tensor, training: bool) -> torch.Tensor:
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
    return -grad


# --------------------------------------------------------------------------------------------- eqbench
class EqbenchContender(Contender):
    label = "eqbench"

    def __init__(self, name: str, kwargs: dict, device: str, dtype: torch.dtype):
        from eqbench.models import AtomisticModel, create
        from eqbench.task import Target, build_heads

        rep = create(name, **kwargs)
        # The energy head a training run builds (a representation may ask for its own: DimeNet's linear layer).
        (self.head,) = build_heads(rep, [Target("energy"), Target("forces")])
        self.module = AtomisticModel(rep, [self.head]).to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype
        self.forward = self.module

    def compile(self) -> None:
        self.forward = torch.compile(self.module, dynamic=True)

    def prepare(self, batch: Batch) -> Batch:
        return batch.to(self.device, self.dtype)

    def energy(self, batch: Batch) -> torch.Tensor:
        self.head.forces = False
        return self.forward(batch)["energy"]

    def energy_forces(self, batch: Batch):
        self.head.forces = True
        out = self.forward(batch)
        return out["energy"], out["forces"]


# ------------------------------------------------------------------------------------------ schnetpack
def _import_schnetpack():
    try:
        import torch.utils.data.dataloader as dl

        if not hasattr(dl, "T_co"):  # schnetpack 2.1.1 imports a name torch 2.13 renamed
            dl.T_co = dl._T_co
        import schnetpack
    except ImportError as err:
        raise PeerUnavailable(f"schnetpack is not installed ({err})") from None
    return schnetpack


class SchnetpackContender(Contender):
    """schnetpack 2's PaiNN or SchNet with an Atomwise energy head (n_in → n_in/2 → 1) and Forces."""

    label = "schnetpack"

    def __init__(self, model: str, kwargs: dict, device: str, dtype: torch.dtype):
        spk = _import_schnetpack()
        f, cutoff = kwargs.get("n_features", 128), kwargs.get("cutoff", 5.0)
        if model == "painn":
            rep = spk.representation.PaiNN(
                n_atom_basis=f, n_interactions=kwargs.get("n_interactions", 3),
                radial_basis=spk.nn.BesselRBF(n_rbf=kwargs.get("n_rbf", 20), cutoff=cutoff),
                cutoff_fn=spk.nn.CosineCutoff(cutoff))
        elif model == "schnet":
            rep = spk.representation.SchNet(
                n_atom_basis=f, n_interactions=kwargs.get("n_interactions", 6),
                radial_basis=spk.nn.GaussianRBF(n_rbf=kwargs.get("n_rbf", 50), cutoff=cutoff),
                cutoff_fn=spk.nn.CosineCutoff(cutoff))
        else:
            raise PeerUnavailable(f"schnetpack has no {model}")
        head = spk.atomistic.Atomwise(n_in=f, output_key="energy")
        pairwise = spk.atomistic.PairwiseDistances()
        self.nnp_energy = spk.model.NeuralNetworkPotential(
            representation=rep, input_modules=[pairwise], output_modules=[head])
        self.nnp_forces = spk.model.NeuralNetworkPotential(
            representation=rep, input_modules=[pairwise],
            output_modules=[head, spk.atomistic.Forces(energy_key="energy", force_key="forces")])
        self.module = self.nnp_forces.to(device=device, dtype=dtype)
        self.nnp_energy.to(device=device, dtype=dtype)
        self.cutoff, self.device, self.dtype, self.props = cutoff, device, dtype, spk.properties

    def prepare(self, batch: Batch) -> dict:
        batch = batch.to(self.device, self.dtype)
        g = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff, batch.cell, batch.pbc)
        p = self.props
        shift = g.shift if g.shift is not None else batch.pos.new_zeros(len(g.center), 3)
        inputs = {p.Z: batch.z, p.R: batch.pos, p.idx_m: batch.batch, p.n_atoms: batch.n_atoms,
                  p.idx_i: g.center, p.idx_j: g.neighbor, p.offsets: shift}
        if batch.cell is not None:
            inputs[p.cell], inputs[p.pbc] = batch.cell, batch.pbc
        return inputs

    def _fresh(self, inputs: dict) -> dict:
        out = dict(inputs)
        out[self.props.R] = inputs[self.props.R].detach()
        return out

    def energy(self, inputs):
        self.nnp_energy.train(self.module.training)
        return self.nnp_energy(self._fresh(inputs))["energy"]

    def energy_forces(self, inputs):
        out = self.nnp_forces(self._fresh(inputs))
        return out["energy"], out["forces"]


# ------------------------------------------------------------------------------------ PyTorch Geometric
def _import_pyg():
    try:
        import torch_geometric.nn.models as models
        from torch_geometric.nn.models import dimenet
    except ImportError as err:
        raise PeerUnavailable(f"torch-geometric is not installed ({err})") from None
    return models, dimenet


def pyg_edge_index(center: torch.Tensor, neighbor: torch.Tensor) -> torch.Tensor:
    """eqbench's edges (neighbour j → centre i) as PyG's ``edge_index``: row = source j, col = target i."""
    return torch.stack([neighbor, center])


def pyg_triplets(center: torch.Tensor, neighbor: torch.Tensor, t) -> tuple:
    """eqbench's :func:`~eqbench.geometry.triplets` in the order PyG's ``dimenet.triplets`` returns."""
    return center, neighbor, t.i, t.j, t.k, t.edge_kj, t.edge_ji


class PygContender(Contender):
    """PyG's SchNet or DimeNetPlusPlus. Their torch_cluster/torch_sparse calls (radius_graph, triplets)
    are replaced by eqbench's neighbour list and triplets, computed in ``prepare``."""

    label = "pyg"

    def __init__(self, model: str, kwargs: dict, device: str, dtype: torch.dtype):
        models, dimenet = _import_pyg()
        cutoff = kwargs.get("cutoff", 5.0)
        self._edges = None
        if model == "schnet":
            f = kwargs.get("n_features", 128)
            self.net = models.SchNet(hidden_channels=f, num_filters=f,
                                     num_interactions=kwargs.get("n_interactions", 6),
                                     num_gaussians=kwargs.get("n_rbf", 50), cutoff=cutoff,
                                     interaction_graph=self._interaction_graph)
        elif model == "dimenet++":
            # DimeNet++ paper hyperparameters (Gasteiger et al. 2020, Tab. 3)
            self.net = models.DimeNetPlusPlus(hidden_channels=kwargs.get("n_features", 128), out_channels=1,
                                              num_blocks=kwargs.get("n_interactions", 4), int_emb_size=64,
                                              basis_emb_size=8, out_emb_channels=256,
                                              num_spherical=kwargs.get("lmax", 6) + 1,
                                              num_radial=kwargs.get("n_rbf", 6), cutoff=cutoff)
            dimenet.radius_graph = self._radius_graph  # module globals, only in the benchmark's process
            dimenet.triplets = self._triplets
        else:
            raise PeerUnavailable(f"PyG has no {model} here")
        self.module = self.net.to(device=device, dtype=dtype)
        self.cutoff, self.device, self.dtype = cutoff, device, dtype

    # eqbench edge e: neighbor j → center i; PyG edge_index = (source j, target i)
    def _interaction_graph(self, pos, batch):
        center, neighbor = self._edges[0], self._edges[1]
        return pyg_edge_index(center, neighbor), (pos[neighbor] - pos[center]).norm(dim=-1)

    def _radius_graph(self, pos, r=None, batch=None, max_num_neighbors=None, **kwargs):
        return pyg_edge_index(self._edges[0], self._edges[1])

    def _triplets(self, edge_index, num_nodes):
        return pyg_triplets(*self._edges)

    def prepare(self, batch: Batch):
        batch = batch.to(self.device, self.dtype)
        g = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff)
        return batch, (g.center, g.neighbor, triplets(g.center, g.neighbor, len(batch.pos)))

    def energy(self, inputs):
        batch, self._edges = inputs
        return self.net(batch.z, batch.pos, batch.batch).squeeze(-1)

    def energy_forces(self, inputs):
        batch, self._edges = inputs
        pos = batch.pos.detach().requires_grad_(True)
        energy = self.net(batch.z, pos, batch.batch).squeeze(-1)
        return energy, _forces(energy, pos, self.module.training)


# ------------------------------------------------------------------------------------ so3krates-torch
class So3kratesContender(Contender):
    """so3krates-torch's So3krates (paper settings: F = 132, degrees 1–3, 3 layers, 4 heads, 32 RBF)."""

    label = "so3krates-torch"

    def __init__(self, model: str, kwargs: dict, device: str, dtype: torch.dtype):
        if model != "so3krates":
            raise PeerUnavailable(f"so3krates-torch has no {model}")
        try:
            from so3krates_torch.modules.models import So3krates
        except ImportError as err:
            raise PeerUnavailable(f"so3krates-torch is not installed ({err})") from None
        old_dtype = torch.get_default_dtype()
        try:  # its constructor sets the global default dtype
            self.net = So3krates(r_max=kwargs.get("cutoff", 5.0), num_radial_basis_fn=32, degrees=[1, 2, 3],
                                 num_features=kwargs.get("n_features", 132), num_heads=4,
                                 num_layers=kwargs.get("n_interactions", 3), num_elements=118,
                                 avg_num_neighbors=1.0, dtype=dtype, device=device)
        finally:
            torch.set_default_dtype(old_dtype)
        self.module = self.net.to(device=device, dtype=dtype)
        self.cutoff, self.device, self.dtype = kwargs.get("cutoff", 5.0), device, dtype

    def prepare(self, batch: Batch) -> dict:
        batch = batch.to(self.device, self.dtype)
        g = radius_graph(batch.pos, batch.batch, batch.n_atoms, self.cutoff, batch.cell, batch.pbc)
        n_graphs = batch.n_molecules
        shift = g.shift if g.shift is not None else batch.pos.new_zeros(len(g.center), 3)
        cell = batch.cell if batch.cell is not None else batch.pos.new_zeros(n_graphs, 3, 3)
        return {"positions": batch.pos, "node_attrs": nn.functional.one_hot(batch.z - 1, 118).to(self.dtype),
                "edge_index": torch.stack([g.neighbor, g.center]), "shifts": shift,
                "unit_shifts": torch.zeros_like(shift), "cell": cell.reshape(-1, 3), "batch": batch.batch,
                "ptr": batch.ptr, "head": torch.zeros(n_graphs, dtype=torch.long, device=batch.pos.device),
                "total_charge": batch.pos.new_zeros(n_graphs), "total_spin": batch.pos.new_zeros(n_graphs)}

    def _fresh(self, inputs):
        out = dict(inputs)
        out["positions"] = inputs["positions"].detach().clone()
        return out

    def energy(self, inputs):
        with torch.enable_grad():  # its graph preparation sets requires_grad on the positions
            return self.net(self._fresh(inputs), training=False, compute_force=False)["energy"].detach()

    def energy_forces(self, inputs):
        out = self.net(self._fresh(inputs), training=self.module.training, compute_force=True)
        return out["energy"], out["forces"]


PEER_CLASSES = {"schnetpack": SchnetpackContender, "pyg": PygContender, "so3krates-torch": So3kratesContender}
PEER_PACKAGES = {"schnetpack": "schnetpack", "pyg": "torch-geometric", "so3krates-torch": "so3krates-torch"}


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Skipped:
    label: str
    reason: str


def build_peer(peer: str, model: str, kwargs: dict, device: str, dtype: torch.dtype) -> Contender | Skipped:
    """The peer's implementation of ``model``, or :class:`Skipped` with the reason it cannot run here."""
    if package_version(PEER_PACKAGES[peer]) is None:
        return Skipped(peer, f"{PEER_PACKAGES[peer]} is not installed")
    try:
        return PEER_CLASSES[peer](model, kwargs, device, dtype)
    except PeerUnavailable as err:
        return Skipped(peer, str(err))
