"""Neighbour lists (radius graph per structure), edge vectors and triplets.

The graph is built from positions inside the forward pass, so that forces taken as
``-dE/dpos`` are exact gradients. There is no neighbour cap: every pair closer than
the cutoff is an edge. Two exact paths give the same edges:

- **all pairs** (small, non-periodic structures): every ordered pair of a molecule's atoms is
  a candidate, vectorised over the whole batch; memory grows with Σ n_atoms², and for
  molecules (QM9: ~18 atoms, MD17: ≤ 21, QM7-X: ≤ 23) this is the fastest path.
- **cell list** (structures above :data:`ALL_PAIRS_MAX_ATOMS` atoms, and every periodic one):
  `vesin <https://github.com/Luthaf/vesin>`_'s linear-scaling neighbour list, one structure at
  a time; periodic images come with their integer cell shift S, and ``vec = pos[j] − pos[i] + S·cell``.

Edge convention: edge e carries a message from ``neighbor[e]`` (j) to ``center[e]`` (i);
``vec[e] = pos[j] - pos[i] (+ shift[e])``; edges are sorted by center atom. In a periodic
cell an atom may neighbour its own images (i = j with a nonzero shift).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# Above this many atoms in one structure, the cell list is faster than all pairs (CPU time, one thread,
# water clusters at 5 Å: all pairs 0.9 ms vs 1.5 ms at 96 atoms, 1.7 vs 1.9 at 129, 4.8 vs 2.6 at 192).
# Both paths give the same edges.
ALL_PAIRS_MAX_ATOMS = 128


class Graph(NamedTuple):
    center: torch.Tensor  # [E] i, receiving atom
    neighbor: torch.Tensor  # [E] j, sending atom
    vec: torch.Tensor  # [E, 3] pos[j] - pos[i] (+ shift)
    dist: torch.Tensor  # [E] |vec|
    shift: torch.Tensor | None = None  # [E, 3] cell shift S·cell in Å (periodic structures), else None


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
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(starts, counts, output_size=total)


def radius_graph(pos: torch.Tensor, batch: torch.Tensor, n_atoms: torch.Tensor, cutoff: float,
                 cell: torch.Tensor | None = None, pbc: torch.Tensor | None = None) -> Graph:
    """All ordered pairs (i, j) of the same structure with |vec| < cutoff (i ≠ j unless periodic images).

    Args:
        pos: [N, 3] positions; batch: [N] structure of each atom; n_atoms: [B] atoms per structure.
        cutoff: radius in Å (strict: a pair exactly at the cutoff is no edge); ``math.inf`` gives all pairs of
            each structure (So3krates' non-local corrections), for structures of any size, never periodic.
        cell: [B, 3, 3] cell vectors as rows (or None: no structure is periodic).
        pbc: [B, 3] bool, periodic along each cell vector (or None: no structure is periodic).
    """
    with torch.no_grad():
        # Selecting edges is not differentiable anyway; the kept vectors are recomputed with grad.
        n_cpu = n_atoms.detach().cpu()
        periodic = None if pbc is None or cell is None else pbc.detach().cpu().any(dim=-1)
        large = n_cpu > ALL_PAIRS_MAX_ATOMS
        if periodic is not None:
            large = large | periodic
        if cutoff == float("inf"):  # every pair: a cell list cannot do that, and needs none
            if periodic is not None and bool(periodic.any()):
                from eqbench.errors import ModelError

                raise ModelError("an infinite cutoff (all pairs of a structure) is not defined for periodic "
                                 "structures; give a finite cutoff or non-periodic structures")
            large = torch.zeros_like(large)
        if bool(large.any()):
            center, neighbor, shift_int, owner = _mixed(pos, n_cpu, large, cutoff, cell, pbc)
        else:
            center, neighbor = _all_pairs(pos, n_atoms.to(pos.device), cutoff)
            shift_int = None
    if shift_int is None:
        return edge_geometry(pos, center, neighbor)
    # shift = S · cell of the structure of each edge, differentiable in the cell (stress, if wanted).
    shift = torch.einsum("ek,ekl->el", shift_int.to(pos.dtype), cell.to(pos.dtype)[owner])
    return edge_geometry(pos, center, neighbor, shift)


def _all_pairs(pos: torch.Tensor, n_atoms: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate pairs (all ordered pairs of each structure) filtered by distance; sorted by center."""
    device = pos.device
    ptr = torch.cumsum(n_atoms, 0) - n_atoms
    pair_counts = n_atoms * n_atoms
    total = int(pair_counts.sum())
    mol = torch.repeat_interleave(torch.arange(len(n_atoms), device=device), pair_counts, output_size=total)
    local = _segment_arange(pair_counts)
    n = n_atoms[mol]
    row = torch.div(local, n, rounding_mode="floor")
    center = ptr[mol] + row
    neighbor = ptr[mol] + local - row * n
    d2 = (pos[neighbor] - pos[center]).pow(2).sum(-1)
    keep = (center != neighbor) & (d2 < cutoff * cutoff)
    return center[keep], neighbor[keep]


def _mixed(pos, n_cpu, large, cutoff, cell, pbc):
    """Small non-periodic structures by all pairs, the others by vesin's cell list, merged and sorted."""
    from vesin import NeighborList

    device = pos.device
    ptr = torch.cumsum(n_cpu, 0) - n_cpu
    centers, neighbors, shifts = [], [], []
    small = ~large
    if bool(small.any()):
        # all-pairs on the small structures only, then back to batch numbering
        atoms_small = torch.repeat_interleave(small, n_cpu).to(device)
        index_small = torch.nonzero(atoms_small).squeeze(-1)
        c, n = _all_pairs(pos[index_small], n_cpu[small].to(device), cutoff)
        c, n = index_small[c], index_small[n]
        centers.append(c)
        neighbors.append(n)
        shifts.append(torch.zeros(len(c), 3, dtype=torch.long, device=device))
    nl = NeighborList(cutoff=cutoff, full_list=True)
    positions = pos.detach().to(torch.float64)
    for b in torch.nonzero(large).squeeze(-1).tolist():
        a0, n_b = int(ptr[b]), int(n_cpu[b])
        p = positions[a0:a0 + n_b]
        if cell is not None and pbc is not None and bool(pbc[b].any()):
            box, periodic = cell[b].detach().to(torch.float64), pbc[b].detach().cpu().numpy().astype(bool)
        else:
            box, periodic = torch.zeros(3, 3, dtype=torch.float64, device=device), np.zeros(3, dtype=bool)
        if device.type == "cpu":  # vesin's numpy path is the fast one on CPU
            p, box = p.numpy(), box.cpu().numpy()
        i, j, s = nl.compute(points=p, box=box, periodic=periodic, quantities="ijS", copy=True)
        i, j, s = (torch.as_tensor(x, device=device).long() for x in (i, j, s))
        centers.append(i + a0)
        neighbors.append(j + a0)
        shifts.append(s.reshape(-1, 3))
    center, neighbor, shift_int = torch.cat(centers), torch.cat(neighbors), torch.cat(shifts)
    batch_of_atom = torch.repeat_interleave(torch.arange(len(n_cpu)), n_cpu).to(device)
    owner = batch_of_atom[center]
    has_shift = cell is not None and pbc is not None
    if has_shift:
        vec = positions[neighbor] - positions[center] + torch.einsum(
            "ek,ekl->el", shift_int.to(torch.float64), cell.detach().to(torch.float64)[owner])
    else:
        vec = positions[neighbor] - positions[center]
    # the same strict cutoff as the all-pairs path, in the positions' own precision
    d2 = vec.to(pos.dtype).pow(2).sum(-1)
    keep = d2 < cutoff * cutoff
    center, neighbor, shift_int, owner = center[keep], neighbor[keep], shift_int[keep], owner[keep]
    order = torch.argsort(center, stable=True)
    center, neighbor, shift_int, owner = center[order], neighbor[order], shift_int[order], owner[order]
    return center, neighbor, (shift_int if has_shift else None), owner


def edge_geometry(pos: torch.Tensor, center: torch.Tensor, neighbor: torch.Tensor,
                  shift: torch.Tensor | None = None) -> Graph:
    vec = pos[neighbor] - pos[center]
    if shift is not None:
        vec = vec + shift
    dist = vec.norm(dim=-1)
    return Graph(center, neighbor, vec, dist, shift)


def triplets(center: torch.Tensor, neighbor: torch.Tensor, n_nodes: int,
             shift: torch.Tensor | None = None) -> Triplets:
    """Every pair of edges k→j and j→i with k ≠ i (DimeNet's message-passing directions).

    For each edge j→i, the edges whose center is j supply the k's. Edges must be sorted by
    center (as :func:`radius_graph` returns them). In a periodic cell pass the edges' ``shift``
    (``Graph.shift``): k = i through another image of i is then a genuine triplet, and only the
    path back to i itself (k = i and shift_kj + shift_ji = 0) is dropped.
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
    if shift is not None:
        keep = keep | (shift[edge_kj] + shift[edge_ji]).abs().sum(-1).gt(0)
    return Triplets(edge_kj[keep], edge_ji[keep], i[keep], j[keep], k[keep])


class EdgePadding:
    """Edges (sorted by center) laid out as [N, K] neighbour slots, K = the largest degree; empty slots are 0.

    Edge e sits in slot ``slot[e]`` of the flattened [N·K] layout: row ``center[e]``, position = its rank
    among the edges of that center.
    """

    def __init__(self, center: torch.Tensor, n_atoms: int):
        degree = torch.bincount(center, minlength=n_atoms)
        self.n_atoms = n_atoms
        self.k = max(int(degree.max()), 1) if len(center) else 1
        first = torch.cumsum(degree, 0) - degree
        self.slot = center * self.k + torch.arange(len(center), device=center.device) - first[center]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[E, ...] → [N, K, ...]"""
        out = x.new_zeros(self.n_atoms * self.k, *x.shape[1:]).index_copy(0, self.slot, x)
        return out.view(self.n_atoms, self.k, *x.shape[1:])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, K, ...] → [E, ...] (the inverse of :meth:`pad` on the occupied slots)"""
        return x.reshape(self.n_atoms * self.k, *x.shape[2:])[self.slot]


def reverse_edges(center: torch.Tensor, neighbor: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """[E]: the index of edge (neighbor[e], center[e]) for every edge e of a symmetric, non-periodic graph."""
    key = center * n_nodes + neighbor
    sorted_key, order = torch.sort(key)
    return order[torch.searchsorted(sorted_key, neighbor * n_nodes + center)]


class EdgePairs(NamedTuple):
    """Each undirected pair once: ``edge[p]`` is the representative edge of pair p (center < neighbor),
    ``pair[e]`` the pair of edge e. Invariant edge functions (radial filters) depend on ‖r_ij‖ = ‖r_ji‖
    only, so they can be computed per pair and gathered per edge."""

    edge: torch.Tensor  # [P]
    pair: torch.Tensor  # [E]


def edge_pairs(graph: Graph, n_nodes: int) -> EdgePairs | None:
    """The pairs of a symmetric, non-periodic graph (as :func:`radius_graph` returns); None for a periodic one."""
    if graph.shift is not None:
        return None
    center, neighbor = graph.center, graph.neighbor
    key = torch.minimum(center, neighbor) * n_nodes + torch.maximum(center, neighbor)
    rep = torch.nonzero(center < neighbor).squeeze(-1)
    rep_key, order = torch.sort(key[rep])
    return EdgePairs(rep[order], torch.searchsorted(rep_key, key))
