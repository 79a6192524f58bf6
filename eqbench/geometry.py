"""Neighbour lists (radius graph per molecule), edge vectors and triplets.

The graph is built from positions inside the forward pass, so that forces taken as
``-dE/dpos`` are exact gradients. There is no neighbour cap: every pair closer than
the cutoff is an edge. Candidate pairs are enumerated per molecule (all ordered pairs
of its atoms), which is exact and vectorised; memory grows with Σ n_atoms², fine for
molecules (QM9: ~18 atoms, MD17: ≤ 21, QM7-X: ≤ 23).

Edge convention: edge e carries a message from ``neighbor[e]`` (j) to ``center[e]`` (i);
``vec[e] = pos[j] - pos[i]``; edges are sorted by center atom.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Graph(NamedTuple):
    center: torch.Tensor  # [E] i, receiving atom
    neighbor: torch.Tensor  # [E] j, sending atom
    vec: torch.Tensor  # [E, 3] pos[j] - pos[i]
    dist: torch.Tensor  # [E] |vec|


class Triplets(NamedTuple):
    """Pairs of edges (k→j, j→i) with k ≠ i, for angle-based models (DimeNet)."""

    edge_kj: torch.Tensor  # [T] index of edge k→j (center j, neighbor k)
    edge_ji: torch.Tensor  # [T] index of edge j→i (center i, neighbor j)
    i: torch.Tensor
    j: torch.Tensor
    k: torch.Tensor


def _segment_arange(counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(c) for each c in counts, without a Python loop."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts)


def radius_graph(pos: torch.Tensor, batch: torch.Tensor, n_atoms: torch.Tensor, cutoff: float) -> Graph:
    """All ordered pairs (i, j), i ≠ j, of the same molecule with |pos[j] - pos[i]| < cutoff."""
    device = pos.device
    n_atoms = n_atoms.to(device)
    ptr = torch.cumsum(n_atoms, 0) - n_atoms
    pair_counts = n_atoms * n_atoms
    mol = torch.repeat_interleave(torch.arange(len(n_atoms), device=device), pair_counts)
    local = _segment_arange(pair_counts)
    n = n_atoms[mol]
    center = ptr[mol] + torch.div(local, n, rounding_mode="floor")
    neighbor = ptr[mol] + local % n
    with torch.no_grad():
        # Selecting edges is not differentiable anyway; the kept vectors are recomputed with grad.
        d2 = (pos[neighbor] - pos[center]).pow(2).sum(-1)
        keep = (center != neighbor) & (d2 < cutoff * cutoff)
    center, neighbor = center[keep], neighbor[keep]
    return edge_geometry(pos, center, neighbor)


def edge_geometry(pos: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor) -> Graph:
    vec = pos[neighbor] - pos[center]
    dist = vec.norm(dim=-1)
    return Graph(center, neighbor, vec, dist)


def triplets(center: torch.Tensor, neighbor: torch.Tensor, n_nodes: int) -> Triplets:
    """Every pair of edges k→j and j→i with k ≠ i (DimeNet's message-passing directions).

    For each edge j→i, the edges whose center is j supply the k's. Edges must be sorted by
    center (as :func:`radius_graph` returns them).
    """
    device = center.device
    degree = torch.bincount(center, minlength=n_nodes)
    first_edge = torch.cumsum(degree, 0) - degree  # index of the first edge centred on each atom
    # For edge ji (index e), candidate kj edges are those centred on j = neighbor[e].
    counts = degree[neighbor]
    edge_ji = torch.repeat_interleave(torch.arange(len(center), device=device), counts)
    edge_kj = first_edge[neighbor][edge_ji] + _segment_arange(counts)
    i, j, k = center[edge_ji], neighbor[edge_ji], neighbor[edge_kj]
    keep = k != i
    return Triplets(edge_kj[keep], edge_ji[keep], i[keep], j[keep], k[keep])
