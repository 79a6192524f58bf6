"""Neighbour lists and triplets against brute-force references (plain loops over atom pairs/triples)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eqbench.geometry import radius_graph, triplets
from tests.conftest import random_positions


# ---------------------------------------------------------------------- brute-force references
def brute_force_edges(pos: list[list[float]], sizes: list[int], cutoff: float) -> set[tuple[int, int]]:
    """Every ordered pair (i, j), i ≠ j, of the same molecule closer than the cutoff."""
    edges, start = set(), 0
    for n in sizes:
        for i in range(start, start + n):
            for j in range(start, start + n):
                if i != j and math.dist(pos[i], pos[j]) < cutoff:
                    edges.add((i, j))
        start += n
    return edges


def brute_force_triplets(edge_list: list[tuple[int, int]]) -> set[tuple[int, int, int, int, int]]:
    """(edge_kj, edge_ji, i, j, k) for every edge j→i and every edge k→j with k ≠ i."""
    out = set()
    for e_ji, (i, j) in enumerate(edge_list):
        for e_kj, (center, k) in enumerate(edge_list):
            if center == j and k != i:
                out.add((e_kj, e_ji, i, j, k))
    return out


def as_batch(positions: list[np.ndarray], dtype=torch.float64):
    sizes = [len(p) for p in positions]
    n_atoms = torch.tensor(sizes, dtype=torch.long)
    pos = torch.tensor(np.concatenate(positions), dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), n_atoms)
    return pos, batch, n_atoms, sizes


def mixed_molecules(seed: int = 0) -> list[np.ndarray]:
    """Random molecules of mixed sizes, with the awkward cases in between ordinary ones."""
    rng = np.random.default_rng(seed)
    mols = [random_positions(rng, n, spread=1.8, min_dist=0.7) for n in (6, 1, 11, 4)]
    isolated = random_positions(rng, 5, spread=1.2, min_dist=0.7)
    isolated = np.vstack([isolated, [[40.0, 0.0, 0.0]]])  # last atom far from the others
    no_neighbours = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    mols[2:2] = [isolated]
    mols.append(no_neighbours)
    mols += [random_positions(rng, n, spread=1.8, min_dist=0.7) for n in (2, 9)]
    return mols


def edge_list(graph) -> list[tuple[int, int]]:
    return list(zip(graph.center.tolist(), graph.neighbor.tolist()))


# ---------------------------------------------------------------------- radius graph
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cutoff", [1.5, 2.5, 4.0])
def test_radius_graph_equals_brute_force(seed, cutoff):
    mols = mixed_molecules(seed)
    pos, batch, n_atoms, sizes = as_batch(mols)
    graph = radius_graph(pos, batch, n_atoms, cutoff)
    edges = edge_list(graph)
    expected = brute_force_edges(pos.tolist(), sizes, cutoff)
    assert len(edges) == len(set(edges)), "duplicate edges"
    assert set(edges) == expected
    # Edges are sorted by center atom (triplets rely on it).
    centers = graph.center.tolist()
    assert centers == sorted(centers)


def test_radius_graph_isolated_atom_and_molecule_without_neighbours():
    mols = mixed_molecules(0)
    pos, batch, n_atoms, sizes = as_batch(mols)
    graph = radius_graph(pos, batch, n_atoms, 3.0)
    starts = np.cumsum([0] + sizes)
    isolated_atom = starts[3] - 1  # last atom of the molecule at list index 2
    single_atom = starts[1]  # the one-atom molecule
    lonely_mol = range(starts[5], starts[6])  # molecule list: [6, 1, isolated (6), 11, 4, lonely (4), 2, 9]
    assert sizes[5] == 4 and len(mols[5]) == 4 and mols[5][1, 0] == 10.0
    used = set(graph.center.tolist()) | set(graph.neighbor.tolist())
    assert isolated_atom not in used
    assert single_atom not in used
    assert not used & set(lonely_mol)
    # The other atoms of the molecule with the isolated atom do have neighbours.
    assert set(range(starts[2], isolated_atom)) <= used


def test_radius_graph_cutoff_is_strict():
    # |pos[j] - pos[i]| < cutoff: a pair exactly at the cutoff is not an edge, one just inside is.
    at = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    inside = np.array([[0.0, 0.0, 0.0], [0.0, 1.999999, 0.0]])
    for dtype in (torch.float64, torch.float32):
        pos, batch, n_atoms, _ = as_batch([at, inside], dtype)
        graph = radius_graph(pos, batch, n_atoms, 2.0)
        assert edge_list(graph) == [(2, 3), (3, 2)]


def test_radius_graph_molecules_with_no_edges_at_all():
    pos, batch, n_atoms, _ = as_batch([np.array([[0.0, 0, 0], [5.0, 0, 0]]), np.zeros((1, 3))])
    graph = radius_graph(pos, batch, n_atoms, 2.0)
    assert graph.center.numel() == graph.neighbor.numel() == graph.dist.numel() == 0
    assert graph.vec.shape == (0, 3)
    trip = triplets(graph.center, graph.neighbor, len(pos))
    assert trip.i.numel() == 0


@pytest.mark.parametrize("n", [40, 64])
def test_dense_molecules_keep_every_neighbour(n):
    rng = np.random.default_rng(n)
    # Many atoms in a small box: with a large cutoff, every atom neighbours every other atom.
    dense = [rng.uniform(0, 2.0, size=(n, 3)), rng.uniform(0, 2.0, size=(n // 2, 3))]
    pos, batch, n_atoms, sizes = as_batch(dense)
    graph = radius_graph(pos, batch, n_atoms, 10.0)
    assert len(graph.center) == n * (n - 1) + (n // 2) * (n // 2 - 1)
    degree = torch.bincount(graph.center, minlength=len(pos)).tolist()
    assert degree == [n - 1] * n + [n // 2 - 1] * (n // 2)
    # and with a cutoff that cuts through the cloud, still exactly the brute-force pairs
    graph = radius_graph(pos, batch, n_atoms, 1.0)
    assert set(edge_list(graph)) == brute_force_edges(pos.tolist(), sizes, 1.0)
    assert len(graph.center) == len(brute_force_edges(pos.tolist(), sizes, 1.0))


def test_edge_vectors_and_distances():
    mols = mixed_molecules(3)
    pos, batch, n_atoms, _ = as_batch(mols)
    graph = radius_graph(pos, batch, n_atoms, 3.0)
    p = pos.tolist()
    for e, (i, j) in enumerate(edge_list(graph)):
        expected_vec = [p[j][k] - p[i][k] for k in range(3)]
        assert graph.vec[e].tolist() == pytest.approx(expected_vec, abs=1e-12)
        assert float(graph.dist[e]) == pytest.approx(math.dist(p[i], p[j]), abs=1e-12)


def test_radius_graph_float32_matches_float64():
    mols = mixed_molecules(4)
    pos, batch, n_atoms, sizes = as_batch(mols)
    cutoff = 2.5
    d = torch.cdist(pos, pos)
    assert ((d - cutoff).abs() > 1e-4).all(), "test data has a pair at the cutoff; change the seed"
    g32 = radius_graph(pos.float(), batch, n_atoms, cutoff)
    assert set(edge_list(g32)) == brute_force_edges(pos.tolist(), sizes, cutoff)
    assert g32.vec.dtype == g32.dist.dtype == torch.float32


def test_gradients_flow_from_distances_to_positions():
    mols = mixed_molecules(5)
    pos, batch, n_atoms, _ = as_batch(mols)
    pos.requires_grad_(True)
    graph = radius_graph(pos, batch, n_atoms, 3.0)
    assert graph.dist.requires_grad
    graph.dist.sum().backward()
    # d/dpos of Σ_e |pos[j] - pos[i]|, accumulated edge by edge.
    p = pos.detach().tolist()
    expected = [[0.0, 0.0, 0.0] for _ in p]
    for i, j in edge_list(graph):
        d = math.dist(p[i], p[j])
        for k in range(3):
            u = (p[j][k] - p[i][k]) / d
            expected[j][k] += u
            expected[i][k] -= u
    assert pos.grad.tolist() == [pytest.approx(row, abs=1e-10) for row in expected]

    def dists(x):
        return radius_graph(x, batch, n_atoms, 3.0).dist

    assert torch.autograd.gradcheck(dists, (pos.detach().clone().requires_grad_(True),))


# ---------------------------------------------------------------------- triplets
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("cutoff", [2.0, 3.5])
def test_triplets_equal_brute_force(seed, cutoff):
    mols = mixed_molecules(seed)
    pos, batch, n_atoms, _ = as_batch(mols)
    graph = radius_graph(pos, batch, n_atoms, cutoff)
    edges = edge_list(graph)
    trip = triplets(graph.center, graph.neighbor, len(pos))
    got = list(zip(trip.edge_kj.tolist(), trip.edge_ji.tolist(), trip.i.tolist(), trip.j.tolist(),
                   trip.k.tolist()))
    assert len(got) == len(set(got)), "duplicate triplets"
    expected = brute_force_triplets(edges)
    assert set(got) == expected
    assert len(expected) > 0


def test_triplets_dense_molecule():
    rng = np.random.default_rng(11)
    n = 24
    pos, batch, n_atoms, _ = as_batch([rng.uniform(0, 2.0, size=(n, 3)), rng.uniform(0, 2.0, size=(5, 3))])
    graph = radius_graph(pos, batch, n_atoms, 10.0)
    trip = triplets(graph.center, graph.neighbor, len(pos))
    assert len(trip.i) == n * (n - 1) * (n - 2) + 5 * 4 * 3
    got = set(zip(trip.edge_kj.tolist(), trip.edge_ji.tolist(), trip.i.tolist(), trip.j.tolist(),
                  trip.k.tolist()))
    assert got == brute_force_triplets(edge_list(graph))
