"""The scaling neighbour list (vesin cell list) and periodic cells: same edges as brute force, periodic
energies and forces equal to an explicit replicated supercell, symmetry in a periodic cell."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from eqbench.batch import Batch
from eqbench.errors import ModelError
from eqbench.geometry import ALL_PAIRS_MAX_ATOMS, edge_pairs, radius_graph
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, create
from tests.model_checks import random_rotation
from tests.test_geometry import as_batch, brute_force_edges, edge_list, mixed_molecules

pytest.importorskip("vesin", reason="vesin (the linear-scaling neighbour list) is not installed")


def large_cluster(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, (n / 0.1) ** (1 / 3), size=(n, 3))  # 0.1 atoms/Å³, like liquid water


@pytest.mark.parametrize("seed", [0, 1])
def test_cell_list_equals_brute_force_in_a_mixed_batch(seed):
    n_large = ALL_PAIRS_MAX_ATOMS + 37
    mols = mixed_molecules(seed)
    mols[3:3] = [large_cluster(n_large, seed)]
    mols.append(large_cluster(2 * n_large, seed + 10))
    pos, batch, n_atoms, sizes = as_batch(mols)
    assert max(sizes) > ALL_PAIRS_MAX_ATOMS  # the cell list runs for two of the molecules
    for cutoff in (1.5, 3.0):
        graph = radius_graph(pos, batch, n_atoms, cutoff)
        edges = edge_list(graph)
        assert len(edges) == len(set(edges))
        assert set(edges) == brute_force_edges(pos.tolist(), sizes, cutoff)
        assert graph.center.tolist() == sorted(graph.center.tolist())
        assert graph.shift is None
        assert torch.allclose(graph.dist, (pos[graph.neighbor] - pos[graph.center]).norm(dim=-1), atol=1e-12)


def test_an_infinite_cutoff_gives_every_pair_of_molecules_of_any_size():
    """All pairs (So3krates' non-local corrections) also for molecules too large for the all-pairs path."""
    n_large = ALL_PAIRS_MAX_ATOMS + 37
    pos, batch, n_atoms, sizes = as_batch([large_cluster(n_large, 0), large_cluster(5, 1)])
    graph = radius_graph(pos, batch, n_atoms, math.inf)
    expected = {(i, j) for i in range(n_large) for j in range(n_large) if i != j}
    expected |= {(n_large + i, n_large + j) for i in range(5) for j in range(5) if i != j}
    assert set(edge_list(graph)) == expected and len(edge_list(graph)) == len(expected)
    cell = torch.eye(3, dtype=pos.dtype).repeat(2, 1, 1) * 30.0
    pbc = torch.tensor([[True, True, True], [False, False, False]])
    with pytest.raises(ModelError, match="infinite cutoff"):
        radius_graph(pos, batch, n_atoms, math.inf, cell, pbc)


def brute_force_periodic(pos: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> set:
    """Every (i, j, S) with |pos[j] + S·cell − pos[i]| < cutoff, except i = j with S = 0 (explicit loops)."""
    reach = [int(np.ceil(cutoff / (abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[(a + 1) % 3],
                                                                                     cell[(a + 2) % 3]))))) + 1
             if pbc[a] else 0 for a in range(3)]
    out = set()
    for s in itertools.product(*[range(-r, r + 1) for r in reach]):
        shift = np.array(s) @ cell
        for i in range(len(pos)):
            for j in range(len(pos)):
                if (i == j and s == (0, 0, 0)) or np.linalg.norm(pos[j] + shift - pos[i]) >= cutoff:
                    continue
                out.add((i, j, s))
    return out


def graph_triples(graph, cell: torch.Tensor, offset: int = 0) -> set:
    s = torch.linalg.solve(cell.T, graph.shift.T).T.round().long() if graph.shift is not None else None
    return {(i - offset, j - offset, tuple(s[e].tolist()) if s is not None else (0, 0, 0))
            for e, (i, j) in enumerate(zip(graph.center.tolist(), graph.neighbor.tolist()))}


def small_cell(seed: int):
    rng = np.random.default_rng(seed)
    cell = np.array([[3.6, 0.0, 0.0], [0.9, 3.9, 0.0], [0.4, -0.7, 4.3]])  # triclinic, shorter than the cutoff
    return rng.uniform(0, 1, size=(5, 3)) @ cell, cell


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True)])
def test_periodic_edges_equal_brute_force_images(pbc):
    pos, cell = small_cell(0)
    other = large_cluster(12, 3)  # a non-periodic molecule in the same batch
    b = Batch(z=torch.ones(17, dtype=torch.long), pos=torch.tensor(np.vstack([other, pos])),
              batch=torch.tensor([0] * 12 + [1] * 5), n_atoms=torch.tensor([12, 5]),
              cell=torch.tensor(np.stack([np.zeros((3, 3)), cell])),
              pbc=torch.tensor([[False] * 3, list(pbc)]))
    cutoff = 5.0
    graph = radius_graph(b.pos, b.batch, b.n_atoms, cutoff, b.cell, b.pbc)
    periodic = graph.center >= 12
    sub = graph._replace(center=graph.center[periodic], neighbor=graph.neighbor[periodic],
                         shift=graph.shift[periodic])
    expected = brute_force_periodic(pos, cell, pbc, cutoff)
    assert any(i == j for i, j, _ in expected)  # the cell is small enough for atoms to see their own images
    assert len(sub.center) == len(expected)
    assert graph_triples(sub, torch.tensor(cell), 12) == expected
    # the molecule's edges stay plain pairs, without shifts
    assert (graph.shift[~periodic] == 0).all()
    assert set(edge_list(graph._replace(center=graph.center[~periodic], neighbor=graph.neighbor[~periodic]))) \
        == brute_force_edges(other.tolist(), [12], cutoff)
    # vec includes the shift
    assert torch.allclose(graph.vec, b.pos[graph.neighbor] - b.pos[graph.center] + graph.shift)
    assert graph.center.tolist() == sorted(graph.center.tolist())


def energy_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    kwargs = dict(n_features=16, n_interactions=2, cutoff=5.0)
    rep = create(name, **kwargs, n_rbf=8)
    model = AtomisticModel(rep, [Energy(rep.n_features, forces=True)]).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def periodic_batch(pos, z, cell, pbc=(True, True, True)) -> Batch:
    n = len(pos)
    return Batch(z=torch.as_tensor(z), pos=torch.as_tensor(pos, dtype=torch.float64), batch=torch.zeros(n).long(),
                 n_atoms=torch.tensor([n]), cell=torch.as_tensor(cell, dtype=torch.float64)[None],
                 pbc=torch.tensor([pbc]))


@pytest.mark.parametrize("name", ["painn", "schnet"])
def test_periodic_energy_and_forces_equal_replicated_supercell(name):
    pos, cell = small_cell(1)
    z = np.array([1, 6, 8, 6, 1])
    model = energy_model(name)
    out = model(periodic_batch(pos, z, cell))
    reps = (2, 1, 3)
    images = [np.array(s) @ cell for s in itertools.product(*[range(r) for r in reps])]
    big = periodic_batch(np.vstack([pos + t for t in images]), np.tile(z, len(images)),
                         cell * np.array(reps)[:, None])
    out_big = model(big)
    assert float(out_big["energy"].detach()) == pytest.approx(len(images) * float(out["energy"].detach()), rel=1e-10)
    forces_big = out_big["forces"].reshape(len(images), len(z), 3)
    for k in range(len(images)):
        assert torch.allclose(forces_big[k], out["forces"], atol=1e-10)
    assert out["forces"].abs().max() > 1e-3  # not trivially zero
    # a finite periodic cell is not the isolated molecule
    isolated = model(Batch(z=torch.as_tensor(z), pos=torch.as_tensor(pos), batch=torch.zeros(5).long(),
                           n_atoms=torch.tensor([5])))
    assert abs(float(isolated["energy"].detach()) - float(out["energy"].detach())) > 1e-6


@pytest.mark.parametrize("name", ["painn", "schnet"])
def test_periodic_translation_rotation_and_wrapping(name):
    pos, cell = small_cell(2)
    z = np.array([8, 1, 1, 6, 7])
    model = energy_model(name, 1)
    ref = model(periodic_batch(pos, z, cell))
    # translation of every atom, and one atom moved by a lattice vector: the same crystal
    moved = pos + np.array([0.3, -1.1, 2.0])
    moved[2] += cell[0] - 2 * cell[2]
    out = model(periodic_batch(moved, z, cell))
    assert float(out["energy"].detach()) == pytest.approx(float(ref["energy"]), rel=1e-10)
    assert torch.allclose(out["forces"], ref["forces"], atol=1e-10)
    # rotating positions and cell together rotates the forces
    rot = random_rotation(3).numpy()
    out = model(periodic_batch(pos @ rot.T, z, cell @ rot.T))
    assert float(out["energy"].detach()) == pytest.approx(float(ref["energy"]), rel=1e-10)
    assert torch.allclose(out["forces"], ref["forces"] @ torch.as_tensor(rot).T, atol=1e-10)


def test_forces_in_a_periodic_cell_are_finite_differences():
    pos, cell = small_cell(4)
    z = np.array([8, 1, 1, 6, 7])
    model = energy_model("painn", 2)
    forces = model(periodic_batch(pos, z, cell))["forces"]
    h = 1e-5
    for atom, axis in [(0, 0), (3, 2), (4, 1)]:
        e = []
        for sign in (1, -1):
            p = pos.copy()
            p[atom, axis] += sign * h
            e.append(float(model(periodic_batch(p, z, cell))["energy"].detach()))
        assert float(forces[atom, axis]) == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-6)


def test_edge_pairs_map_every_edge_to_itself_or_its_reverse():
    pos, batch, n_atoms, _ = as_batch(mixed_molecules(1) + [large_cluster(90, 2)])
    graph = radius_graph(pos, batch, n_atoms, 2.5)
    pairs = edge_pairs(graph, len(pos))
    assert 2 * len(pairs.edge) == len(graph.center)
    rep_c, rep_n = graph.center[pairs.edge][pairs.pair], graph.neighbor[pairs.edge][pairs.pair]
    same = (rep_c == graph.center) & (rep_n == graph.neighbor)
    reverse = (rep_c == graph.neighbor) & (rep_n == graph.center)
    assert bool((same ^ reverse).all())
    assert edge_pairs(graph._replace(shift=torch.zeros(len(graph.center), 3)), len(pos)) is None


def test_batch_from_periodic_atoms_keeps_cell_and_pbc():
    ase = pytest.importorskip("ase")
    pos, cell = small_cell(5)
    crystal = ase.Atoms("HCOCH", positions=pos, cell=cell, pbc=True)
    molecule = ase.Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    b = Batch.from_atoms([molecule, crystal])
    assert b.pbc.tolist() == [[False] * 3, [True] * 3]
    assert torch.allclose(b.cell[1].double(), torch.tensor(cell))
    merged = Batch.collate([Batch.from_atoms([molecule]), Batch.from_atoms([crystal])])
    assert merged.pbc.tolist() == b.pbc.tolist() and torch.equal(merged.cell, b.cell)
    assert Batch.from_atoms([molecule]).cell is None
    with pytest.raises(Exception, match="no volume"):
        Batch.from_atoms([ase.Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], pbc=True)])
